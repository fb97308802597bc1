"""The backfill: recordings on disk -> aligned Parquet + dead letters, on any Beam runner.

    manifests -> decode -> validate -> clock -> buckets -> align -> Parquet
                    \\________\\___________________________________-> dead letters

Outputs go to a staging folder and are committed in one step when the run succeeds
(transforms/io/commit.py), so a rerun replaces its sessions' outputs whole and never duplicates
them, and a failed or killed run leaves the previous output.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from mmalign.deadletter.file_sink import WriteDeadLetters
from mmalign.pipelines.runners import with_stage_hints
from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.manifest import Manifest, ManifestError, load_manifest
from mmalign.schemas.names import check_name
from mmalign.transforms.align.buckets import AssignBuckets
from mmalign.transforms.align.join import (
    AlignBuckets,
    ApproxSetTicks,
    SessionPlan,
    StreamExtents,
    plan_from_manifest,
)
from mmalign.transforms.clock.apply import ApplyClockFn
from mmalign.transforms.clock.sync import EstimateClocks
from mmalign.transforms.decode.stage import DecodeRequest, DecodeStreams, manifest_requests
from mmalign.transforms.io.commit import SUMMARY, commit, recover, staging_dir
from mmalign.transforms.io.parquet import WriteAlignedFn
from mmalign.transforms.validate.stage import Validate
from mmalign.transforms.validate.timestamps import TimestampRule


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@dataclass
class Job:
    """Everything a run needs, resolved and validated before any Beam code runs."""
    manifests: list[Manifest]
    plans: dict[str, SessionPlan]
    declared: dict[tuple[str, str], ClockModel]
    out: Path
    run_id: str
    sources: list[DecodeRequest] = field(default_factory=list)
    manifest_paths: list[str] = field(default_factory=list)

    @property
    def rules(self) -> dict[str, TimestampRule]:
        """session -> its timestamp plausibility rule (manifest ``validation:``)."""
        return {m.session: TimestampRule(*m.validation.bounds_ns()) for m in self.manifests}

    @property
    def stream_options(self) -> dict[tuple[str, str], dict]:
        return {(m.session, s.id): s.options for m in self.manifests for s in m.streams}

    @property
    def bucket_ns(self) -> int:
        return next(iter(self.plans.values())).bucket_ns

    def metadata(self) -> dict:
        return {"run_id": self.run_id,
                "sessions": {s: p.params for s, p in self.plans.items()},
                "clocks": {f"{k[0]}/{k[1]}": m.as_dict() for k, m in self.declared.items()}}


def prepare(manifest_paths: list[str | Path], out: str | Path, run_id: str | None = None) -> Job:
    if run_id is not None:            # it names a staging folder: a plain name, never a path
        check_name(run_id, "run_id")
    manifests = [load_manifest(p) for p in manifest_paths]
    seen: dict[str, str] = {}
    for path, m in zip(manifest_paths, manifests):
        if m.session in seen:
            raise ManifestError(f"{path}: field 'session': {m.session!r} is also the session of "
                                f"{seen[m.session]}; give each recording its own session id")
        seen[m.session] = str(path)
    plans = {m.session: plan_from_manifest(m) for m in manifests}
    widths = {p.bucket_ns for p in plans.values()}
    if len(widths) > 1:
        raise ManifestError(f"field 'alignment.bucket_s' differs between manifests "
                            f"({sorted(w / 1e9 for w in widths)}); use one bucket width per run")
    declared = {}
    sources = []
    for m in manifests:
        cal = load_calibration(m.resolve(m.calibration, "calibration") if m.calibration else None)
        for s in m.streams:
            declared[(m.session, s.id)] = cal.clock(s.clock_domain)
        sources += manifest_requests(m)
    job = Job(manifests, plans, declared, Path(out), run_id or new_run_id(), sources,
              [str(Path(p).resolve()) for p in manifest_paths])
    try:
        bucketing(job)
    except ValueError as e:        # a margin as wide as the bucket: the width must grow
        raise ManifestError(f"{manifest_paths[0]}: field 'alignment.bucket_s': {e}") from None
    return job


def bucketing(job: Job) -> AssignBuckets:
    """The job's bucket transform (its margins decide which buckets a record reaches)."""
    margins = {(sid, st.stream_id): st.margin_ns()
               for sid, plan in job.plans.items() for st in plan.streams}
    anchors = {sid: plan.anchor for sid, plan in job.plans.items()}
    tick_margins = {sid: plan.tick_margin_ns() for sid, plan in job.plans.items()}
    return AssignBuckets(job.bucket_ns, margins, anchors, tick_margins)


class WriteSyncResults(beam.PTransform):
    """(session, stream, SyncResult) -> OUT/sync/session_id=<s>/sync.json (one per session)."""

    def __init__(self, root: str):
        super().__init__()
        self.root = root

    def expand(self, results):
        root = self.root

        def write(session_id, items):
            from mmalign.transforms.io.parquet import session_dir
            d = session_dir(root, session_id)
            d.mkdir(parents=True, exist_ok=True)
            body = {stream: r.as_dict() for stream, r in sorted(items)}
            (d / "sync.json").write_text(json.dumps(body, indent=2, sort_keys=True))
            return str(d / "sync.json")

        return (results
                | "BySession" >> beam.MapTuple(lambda s, st, r: (s, (st, r)))
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(write))


def read_sync_results(out: str | Path) -> dict[str, dict]:
    """{"<session>/<stream>": SyncResult dict} from a run's OUT/sync folder."""
    found = {}
    for f in sorted(Path(out, "sync").glob("session_id=*/sync.json")):
        session = f.parent.name.split("=", 1)[1]
        for stream, r in json.loads(f.read_text()).items():
            found[f"{session}/{stream}"] = r
    return found


def post_align_stages(job: Job) -> list[tuple[str, beam.PTransform]]:
    """The stages that run on aligned tables before they are written, in order.

    Each is a PTransform from ((session, bucket), table) to a tagged output: main = the same
    keys with the table enriched (new columns), ``dead`` = DeadLetter records. The backfill
    and the streaming job both run exactly this list (spatial registration, then encoders,
    when the manifest configures them).
    """
    from mmalign.transforms.register.stage import registration_stages
    stages = registration_stages(job.manifests, job.run_id)   # first: spatial registration
    from mmalign.encoders.stage import encode_stage
    encode = encode_stage(job.manifests, job.run_id)          # then: encoders
    if encode is not None:
        stages.append(("Encode", encode))
    return stages


def build(p: beam.Pipeline, job: Job, staging: Path) -> dict:
    """Wire the backfill into pipeline ``p``; returns the named PCollections."""
    decoded = (p | "Sources" >> beam.Create(job.sources, reshuffle=True)
               | "Decode" >> DecodeStreams())
    valid = decoded.chunks | "Validate" >> Validate(job.stream_options, job.run_id,
                                                      job.rules, centres=True)
    estimated = {}
    if any(s.sync for m in job.manifests for s in m.streams):
        results = valid.chunks | "Sync" >> EstimateClocks(job.manifests, job.declared)
        results | "WriteSync" >> WriteSyncResults(str(staging / "sync"))
        estimated = {"estimated": beam.pvalue.AsDict(
            results | "Models" >> beam.MapTuple(lambda s, st, r: ((s, st), r.model)))}
    clocked = valid.chunks | "Clock" >> beam.ParDo(ApplyClockFn(job.declared), **estimated)
    extents = clocked | "Extents" >> StreamExtents()
    if any(plan.sets for plan in job.plans.values()):
        sets = clocked | "ApproxSets" >> ApproxSetTicks(
            {s: p for s, p in job.plans.items() if p.sets})
        clocked = (clocked, sets) | "WithSets" >> beam.Flatten()
    aligned = (clocked
               | "Buckets" >> bucketing(job)
               | "Align" >> AlignBuckets(job.plans, extents))
    stage_dead = []
    for name, stage in post_align_stages(job):
        out = aligned | name >> with_stage_hints(p.options, name, stage)   # GPU: encoder only
        aligned = out.main
        # dead letters leave the stage in its windows; the dead-letter sink is global
        stage_dead.append(out.dead | f"{name}DeadGlobal" >> beam.WindowInto(GlobalWindows()))
    written = aligned | "WriteAligned" >> beam.ParDo(
        WriteAlignedFn(str(staging / "aligned"), job.metadata()))
    from mmalign.encoders.feature_store import feature_store_sink
    sink = feature_store_sink(job.manifests, job.out, job.run_id)
    if sink is not None:                    # Feast online store, after the Parquet write
        stage_dead.append((written | "WriteOnline" >> sink).dead)
    dead = ((decoded.dead, valid.dead, *stage_dead) | "AllDead" >> beam.Flatten()
            | "WriteDead" >> WriteDeadLetters(str(staging / "deadletter"), job.run_id))
    return {"aligned": aligned, "written": written, "dead": dead}


def run(manifest_paths: list[str | Path], out: str | Path, *, runner: str = "DirectRunner",
        pipeline_args: list[str] | None = None, run_id: str | None = None) -> dict:
    """Run the backfill to completion; returns the run summary (also OUT/summary.json).

    Everything is written under OUT/.staging/<run> and committed at the end in one step
    (transforms/io/commit.py): a run that fails or is killed leaves the previous output."""
    from mmalign.pipelines.summary import summarize

    job = prepare(manifest_paths, out, run_id)
    recover(job.out)                         # finish or clear what an interrupted run left
    staging = staging_dir(job.out, job.run_id)
    opts = PipelineOptions([f"--runner={runner}", *(pipeline_args or [])])
    t0 = time.perf_counter()
    try:
        with beam.Pipeline(options=opts) as p:
            build(p, job, staging)
        result = p.result
        summary = summarize(job, result, time.perf_counter() - t0, staging)
        staging.mkdir(parents=True, exist_ok=True)
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit(job.out, job.run_id, list(job.plans))
    return summary
