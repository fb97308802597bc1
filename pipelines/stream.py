"""The always-on streaming job: Kafka topics -> aligned Parquet + the dead-letter topic.

    topics -> ReadKafka (SDF over all partitions, event time, watermark) -> ingest (envelope ->
    Chunk) -> Validate -> ApplyClockFn -> AssignBuckets -> AlignBuckets -> post-align stages
    -> Parquet (OUT/aligned, one file per bucket, deterministic names)
    bad/late records at every stage -> dead-letter topic (Kafka Connect headers)

The transforms after ingest are the backfill's own (pipelines/backfill.py). Differences:
clocks are the declared ones (DTW-sync needs a whole recording), stream extents come from
the producer's declaration in the envelope, and allowed lateness is realised by holding the
watermark back (``max event time - max_out_of_orderness - allowed_lateness``, event times on
the job's shared clock: each stream's declared model, then its session's wall-clock shift)
so every accepted record is on time for its bucket window and records later than that are
dead letters (``ingest/too_late``), never silent drops.

Restarts are exact (pipelines/stream_ledger.py): a bucket is written once, when complete
(closed by the real watermark, or its session complete at a stop); the others are held back
and the consumer group's committed offset of each partition is the smallest offset still
needed by an unwritten bucket. A restart -- after a stop or a kill -- replays from there,
skips buckets already written and dead letters already on the topic.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from mmalign.deadletter.kafka_topic import WriteDeadLettersToKafkaFn, letter_ids
from mmalign.infra import InfraError
from mmalign.infra.prism import session as prism_session
from mmalign.pipelines.core import (
    AlignCore,
    Job,
    bucketing,
    new_run_id,
    online_store_sink,
    prepare,
)
from mmalign.pipelines.group_offsets import commit_offsets, partition_specs
from mmalign.pipelines.kafka_config import kafka_failure, settings_from_args
from mmalign.pipelines.observe import ObserveOptions, attach, options_from_args
from mmalign.pipelines.observe import session as observe_session
from mmalign.pipelines.progress import Progress, StreamRates
from mmalign.pipelines.runners import runner_session
from mmalign.pipelines.stream_ledger import (
    Geometry,
    HoldBackFn,
    MarkDoneFn,
    Resume,
    compact,
    resume,
    state_dir,
)
from mmalign.schemas import metrics
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.envelope import MessageError, decode_chunk, split
from mmalign.schemas.kafka import KafkaConfigError, KafkaSettings
from mmalign.schemas.layout import ALIGNED
from mmalign.schemas.manifest import ManifestError
from mmalign.schemas.metrics import INGEST, set_gauge
from mmalign.transforms.align.policies import warm_in_background
from mmalign.transforms.io.kafka import KafkaRecord, ReadKafka, ReadKafkaFn
from mmalign.transforms.io.parquet import (
    WriteAlignedFn,
    part_files,
    part_key,
    rewrite_conforming,
    union_schema,
)
from mmalign.transforms.tags import DEAD, MAIN
from mmalign.transforms.validate import stage as validate_stage
from mmalign.transforms.validate.stage import ORIGIN_META_KEY


@dataclass(frozen=True)
class StreamOptions:
    group_id: str = "mmalign-stream"
    max_out_of_orderness_s: float = 2.0
    allowed_lateness_s: float = 2.0
    stop_after_idle_s: float | None = None
    payload_roots: tuple[str, ...] = ()
    poll_ms: int = 300
    fetch_bytes_per_partition: int = 8 << 20   # a message is ~0.2 MB (1 s of audio or video)
    progress: bool = False             # progress lines on stderr (the CLI turns them on)
    progress_every_s: float = 10.0     # and offsets committed this often


class IngestFn(beam.DoFn):
    """KafkaRecord -> Chunk (with its Kafka origin in meta) or a DeadLetter (stage ingest)."""

    def __init__(self, streams: dict[tuple[str, str], str], payload_roots: tuple[str, ...],
                 run_id: str):
        self.streams = streams            # (session, stream) -> modality
        self.payload_roots = payload_roots
        self.run_id = run_id

    def process(self, rec: KafkaRecord):
        try:
            chunk = decode_chunk(rec.value, self.payload_roots)
        except MessageError as e:
            try:
                header, _ = split(rec.value)
            except MessageError:
                header = None
            INGEST.count(metrics.DEAD)
            yield beam.pvalue.TaggedOutput(DEAD, rec.dead(
                "ingest", e.reason, "PoisonMessage", str(e), header).with_run(self.run_id))
            return
        modality = self.streams.get(chunk.key)
        if modality != chunk.modality:
            why = ("is not in the job's manifests" if modality is None
                   else f"is {modality} in the manifest, not {chunk.modality}")
            yield beam.pvalue.TaggedOutput(DEAD, rec.dead(
                "ingest", "unknown_stream", "UnknownStream",
                f"stream {chunk.session_id}/{chunk.stream_id} {why}",
                {"session": chunk.session_id, "stream": chunk.stream_id,
                 "modality": chunk.modality}).with_run(self.run_id))
            return
        INGEST.count(metrics.RECORDS, modality=chunk.modality, n=
            chunk.num_records)
        yield Chunk(**{**chunk.__dict__, "meta": {**chunk.meta, ORIGIN_META_KEY: rec.attrs()}})


def geometry(job: Job) -> Geometry:
    return Geometry(dict(job.declared), job.bucket_ns, bucketing(job).window_margin_ns,
                    job.shifts)


def build(p: beam.Pipeline, job: Job, settings: KafkaSettings, plan: Resume,
          opts: StreamOptions, state: Path, skip_ids: frozenset[str] = frozenset(),
          observe: ObserveOptions | None = None) -> dict:
    """Wire the streaming job into ``p``; returns the named PCollections."""
    streams = {(m.session, s.id): s.modality for m in job.manifests for s in m.streams}
    bound = round(opts.max_out_of_orderness_s * 1e9)
    lateness = round(opts.allowed_lateness_s * 1e9)
    reader = ReadKafkaFn(
        settings, max_out_of_orderness_ns=bound,
        allowed_lateness_ns=lateness, event_clock=geometry(job).event_clock(),
        state_dir=str(state), run_id=job.run_id,
        stop_after_idle_s=opts.stop_after_idle_s, poll_ms=opts.poll_ms,
        fetch_bytes_per_partition=opts.fetch_bytes_per_partition,
        closed_sessions=plan.closed_sessions, late_floors_us=plan.late_floors_us,
        sessions=frozenset(m.session for m in job.manifests),
        close_after_ns=job.bucket_ns + bucketing(job).window_margin_ns)
    read = p | "ReadKafka" >> ReadKafka(list(plan.specs), reader)
    ingested = read[MAIN] | "Ingest" >> beam.ParDo(
        IngestFn(streams, opts.payload_roots, job.run_id)).with_outputs(DEAD, main=MAIN)
    window_margin_ns = bucketing(job).window_margin_ns

    def hold(aligned):
        """Buckets wait in the ledger until complete; empty ones are recorded as done."""
        held = aligned | "HoldBack" >> beam.ParDo(HoldBackFn(
            str(state), job.run_id, plan.written, job.bucket_ns, window_margin_ns, job.shifts)
        ).with_outputs(HoldBackFn.EMPTY, main=MAIN)
        held[HoldBackFn.EMPTY] | "MarkEmpty" >> beam.ParDo(
            MarkDoneFn(str(state), job.run_id, empty=True))
        return held[MAIN]

    core = ingested[MAIN] | "Core" >> AlignCore(job, streaming=True, hold=hold)
    written = core["aligned"] | "WriteAligned" >> beam.ParDo(
        WriteAlignedFn(str(job.out / "aligned"), job.metadata()))
    done = written
    dead = [read[DEAD], ingested[DEAD], core["dead"]]
    sink = online_store_sink(job)
    if sink is not None:                    # Feast online store, after each bucket's Parquet
        online = written | "WriteOnline" >> sink
        dead.append(online[DEAD])
        done = ((online[MAIN], online[DEAD] | "FailedOnline" >> beam.Map(lambda d: d.source_uri))
                | "OnlineDone" >> beam.Flatten())
    (done | "DoneBuckets" >> beam.Map(part_key)                      # the ledger, last
     | "MarkWritten" >> beam.ParDo(MarkDoneFn(str(state), job.run_id)))
    all_dead = tuple(dead) | "AllDead" >> beam.Flatten()
    letters = all_dead | "DeadLetterTopic" >> beam.ParDo(
        WriteDeadLettersToKafkaFn(settings, job.run_id, skip_ids))
    attach(observe, job, core["aligned"], all_dead, streaming=True)   # SLIs (observe.py)
    return {"aligned": core["aligned"], "written": written, "dead": letters}


def run(manifest_paths: list[str | Path], out: str | Path, settings: KafkaSettings,
        opts: StreamOptions, *, pipeline_args: list[str] | None = None,
        run_id: str | None = None, observe: ObserveOptions | None = None) -> dict:
    """Run the streaming job until it stops (``stop_after_idle_s``) or is cancelled;
    ``observe``: metrics endpoint, traces, drift (pipelines/observe.py)."""
    # the align kernels and pandera's back end load while the job starts
    warm_in_background(validate_stage.warm)
    job = prepare(manifest_paths, out, run_id or new_run_id())
    if any(s.sync for m in job.manifests for s in m.streams):
        raise ManifestError("streams with 'sync' (DTW clock estimation) need a whole "
                            "recording; run them with `mmalign backfill`, or declare their "
                            "clocks in the calibration for streaming")
    modalities = sorted({s.modality for m in job.manifests for s in m.streams})
    topics = [settings.topic_for(mod) for mod in modalities]
    state = state_dir(job.out, opts.group_id)
    geo = geometry(job)

    def commit_done() -> None:
        """Commit the offsets no unwritten bucket needs, as buckets complete (so consumer-lag
        tools see the job keep up), not only at the stop."""
        offsets = resume(state, fresh, geo).offsets()
        commit_offsets(settings, opts.group_id, offsets)
        set_gauge("stream.committed_offsets", sum(offsets.values()))
        obs.kafka_lag(settings, offsets)

    with contextlib.ExitStack() as stack:
        # the group's offsets are read while the runner's server starts (a broker's first
        # group ever takes ~0.15 s more: its offsets topic is created)
        reading = stack.enter_context(ThreadPoolExecutor(1, "mmalign-offsets")).submit(
            partition_specs, settings, topics, opts.group_id)
        t0 = time.perf_counter()
        args = pipeline_args
        if args is None:              # a prism server for the run (infra/prism.py)
            args = stack.enter_context(prism_session(streaming=True))
        fresh = reading.result()
        state.mkdir(parents=True, exist_ok=True)
        plan = resume(state, fresh, geo)
        compact(state, plan)                # a restart reads what it needs, not the history
        skip_ids = letter_ids(settings) if plan.replaying else frozenset()
        obs = stack.enter_context(observe_session(observe, job.run_id, "stream"))
        stack.enter_context(Progress(StreamRates().line, opts.progress_every_s,
                                     enabled=opts.progress, every=commit_done))
        with beam.Pipeline(options=PipelineOptions(args)) as p:
            build(p, job, settings, plan, opts, state, skip_ids, observe)
        counters = _counters(p.result)        # while the runner that holds them still runs
    after = resume(state, fresh, geo)
    # bucket files are written as they complete; at the stop every file of OUT/aligned is
    # given the dataset's one schema (readers read the folder whole)
    files = part_files(job.out / ALIGNED)
    if files:
        rewrite_conforming(files, union_schema(pq.read_schema(f) for f in files))
    lines_before, lines_after = compact(state, after)
    committed = after.offsets()
    commit_offsets(settings, opts.group_id, committed)
    summary = {"run_id": job.run_id, "elapsed_s": round(time.perf_counter() - t0, 3),
               "started_at": plan.offsets(),
               "replayed_below": {f"{s.topic}/{s.partition}": s.replay_below
                                  for s in plan.specs if s.start < s.replay_below},
               "committed": committed, "kafka": settings.redacted(),
               "state_dir": str(state),
               "ledger_read_lines": {"before_compaction": lines_before,
                                     "after_compaction": lines_after},
               "counters": counters, **({"drift": obs.drift} if obs.drift else {})}
    (job.out / "_stream" / f"{job.run_id}.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _counters(result) -> dict[str, int]:
    try:
        found = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 -- some runners report no metrics; the run still counts
        return {}
    out: dict[str, int] = {}
    for c in found:
        name = f"{c.key.metric.namespace}.{c.key.metric.name}"
        out[name] = out.get(name, 0) + int(c.committed or c.attempted or 0)
    return dict(sorted(out.items()))



def cmd_stream(ns) -> int:
    """`mmalign stream`: exit 0 stopped cleanly, 1 Kafka/runner failure, 2 bad input."""

    from kafka.errors import KafkaError  # lazy: kafka-python only with a broker

    try:
        settings = settings_from_args(ns)
        opts = StreamOptions(group_id=ns.group_id, max_out_of_orderness_s=ns.out_of_orderness,
                             allowed_lateness_s=ns.allowed_lateness,
                             stop_after_idle_s=ns.stop_after_idle,
                             payload_roots=tuple(ns.payload_root or ()),
                             progress=not getattr(ns, "no_progress", False))
        # --runner and Beam's options (pipelines/runners.py): Prism unless told otherwise
        with runner_session(ns.runner, ns.pipeline_args, streaming=True) as (runner, args):
            summary = run(ns.manifest, ns.out, settings, opts,
                          pipeline_args=[f"--runner={runner}", *args], run_id=ns.run_id,
                          observe=options_from_args(ns))
    except KafkaConfigError as e:
        print(f"mmalign stream: {e}", file=sys.stderr)
        return 2
    except InfraError as e:           # the runner's server (Prism, a Flink job server)
        print(f"mmalign stream: {e}", file=sys.stderr)
        return 1
    except KafkaError as e:
        print("mmalign stream: " + kafka_failure(
            settings, f"{type(e).__name__}: {e}; is the broker up (make kafka-up)?"),
            file=sys.stderr)
        return 1
    if ns.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        c = summary["counters"]
        print(f"stream run {summary['run_id']} stopped after {summary['elapsed_s']:.1f} s: "
              f"{c.get('sink.aligned.rows', 0)} aligned rows -> {Path(ns.out) / 'aligned'}, "
              f"{sum(v for k, v in c.items() if k.startswith('deadletter.kafka.'))} dead "
              f"letters -> {settings.deadletter_topic}; committed offsets "
              f"{summary['committed']} for group {opts.group_id}")
    return 0
