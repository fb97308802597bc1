"""The pipeline core, shared by the backfill and the streaming job: a ``Job`` (everything a run
needs, resolved and validated before Beam starts) and ``AlignCore``, the one composite
PTransform for the middle of every pipeline:

    chunks -> validate -> (DTW-sync) -> clock -> buckets -> align -> register -> encode
                 \\__________________________________________\\________\\______-> dead letters

Sources (files or Kafka) come before it and sinks (Parquet, feature store, dead letters)
after it; they are the only parts the two jobs do not share. What differs between batch and
streaming inside the core is a flag: batch measures timestamp plausibility around each
stream's median over the whole run and takes stream extents from the data (side inputs),
streaming takes both from what producers declare; DTW-sync needs a whole recording and runs
in batch only; approximate-time sets are one batch step, or state and watermark timers when
streaming; the streaming job holds buckets back until complete (``hold``) before the
post-align stages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from mmalign.pipelines.dofn_signatures import memoise_signatures
from mmalign.pipelines.runners import with_stage_hints
from mmalign.pipelines.sdk_harness import shorten_sampling
from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.errors import missing_extra
from mmalign.schemas.fs import UriPath, as_path
from mmalign.schemas.manifest import Manifest, ManifestError, load_manifest
from mmalign.schemas.names import check_name
from mmalign.transforms.align.buckets import AssignBuckets
from mmalign.transforms.align.join import (
    AlignBuckets,
    ApproxSetsStream,
    ApproxSetTicks,
    SessionPlan,
    StreamExtents,
    plan_from_manifest,
    sets_window_margins,
)
from mmalign.transforms.clock.apply import ApplyClockFn
from mmalign.transforms.clock.sync import EstimateClocks
from mmalign.transforms.decode.audio import audio_rate
from mmalign.transforms.decode.stage import DecodeRequest, manifest_requests
from mmalign.transforms.decode.wallclock import session_start_ns
from mmalign.transforms.register.stage import registration_stages
from mmalign.transforms.tags import DEAD, MAIN
from mmalign.transforms.validate.stage import Validate
from mmalign.transforms.validate.timestamps import TimestampRule

# bundles run in this process end without waiting out Beam's 200 ms sampler sleep
shorten_sampling()
# Beam reads each DoFn method's parameters once per function, not at every step that asks
memoise_signatures()


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@dataclass
class Job:
    """Everything a run needs, resolved and validated before any Beam code runs."""
    manifests: list[Manifest]
    plans: dict[str, SessionPlan]
    declared: dict[tuple[str, str], ClockModel]
    out: Path | UriPath          # local folder or object-store URI (schemas/fs.py)
    run_id: str
    sources: list[DecodeRequest] = field(default_factory=list)
    manifest_paths: list[str] = field(default_factory=list)
    run_metadata: dict | None = None  # a subset's: the whole run's (every file says the same)

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

    @property
    def shifts(self) -> dict[str, int]:
        """Streaming: session -> where its reference time 0 sits on the job's shared clock
        (its wall-clock start rounded up to whole buckets; 0 when unknown), so sessions
        recorded at different times share one watermark (see transforms/io/kafka.py)."""
        b = self.bucket_ns
        return {s: -(-p.start_ns // b) * b if p.start_ns else 0 for s, p in self.plans.items()}

    @property
    def synced(self) -> bool:
        """Whether a stream's clock is estimated by DTW-sync."""
        return any(s.sync for m in self.manifests for s in m.streams)

    @property
    def set_plans(self) -> dict[str, SessionPlan]:
        """Sessions whose ticks are approximate-time sets."""
        return {s: p for s, p in self.plans.items() if p.sets}

    @property
    def feature_store(self) -> bool:
        """Whether a manifest enables the feature store (its sink, one writer)."""
        return any(m.encoders is not None and m.encoders.feature_store.enabled
                   for m in self.manifests)

    def subset(self, sessions: list[str]) -> Job:
        """The same run (id, output, bucket width) over some of its sessions."""
        keep = set(sessions)
        manifests = [m for m in self.manifests if m.session in keep]
        paths = [p for m, p in zip(self.manifests, self.manifest_paths) if m.session in keep]
        return Job(manifests, {s: p for s, p in self.plans.items() if s in keep},
                   {k: v for k, v in self.declared.items() if k[0] in keep}, self.out,
                   self.run_id, [r for r in self.sources if r.session_id in keep], paths,
                   self.metadata())

    def metadata(self) -> dict:
        if self.run_metadata is not None:
            return self.run_metadata
        return {"run_id": self.run_id,
                "sessions": {s: p.params for s, p in self.plans.items()},
                "clocks": {f"{k[0]}/{k[1]}": m.to_dict() for k, m in self.declared.items()}}


def prepare(manifest_paths: list[str | Path], out: str | Path, run_id: str | None = None) -> Job:
    """Load and check everything a run needs; raises ManifestError (exit 2) with one
    sentence for anything that cannot be used."""
    if run_id is not None:            # it names a staging folder: a plain name, never a path
        check_name(run_id, "run_id")
    manifests = [load_manifest(p) for p in manifest_paths]
    seen: dict[str, str] = {}
    for path, m in zip(manifest_paths, manifests):
        if m.session in seen:
            raise ManifestError(f"{path}: field 'session': {m.session!r} is also the session of "
                                f"{seen[m.session]}; give each recording its own session id")
        seen[m.session] = str(path)
    declared = {}
    for m in manifests:
        cal = load_calibration(m.resolve(m.calibration, "calibration") if m.calibration else None)
        for st in m.streams:
            declared[(m.session, st.id)] = cal.clock(st.clock_domain)
    starts = {m.session: session_start_ns(m, declared) for m in manifests}
    sources = [r for m in manifests for r in manifest_requests(m)]
    rates = audio_rates(manifests, sources)
    plans = {m.session: plan_from_manifest(m, starts[m.session][0], rates.get(m.session))
             for m in manifests}
    widths = {p.bucket_ns for p in plans.values()}
    if len(widths) > 1:
        raise ManifestError(f"field 'alignment.bucket_s' differs between manifests "
                            f"({sorted(w / 1e9 for w in widths)}); use one bucket width per run")
    job = Job(manifests, plans, declared, as_path(out), run_id or new_run_id(), sources,
              [str(as_path(p).resolve()) for p in manifest_paths])
    try:
        bucketing(job)
    except ValueError as e:        # a margin as wide as the bucket: the width must grow
        raise ManifestError(f"{manifest_paths[0]}: field 'alignment.bucket_s': {e}") from None
    return job


def audio_rates(manifests: list[Manifest], sources: list[DecodeRequest]
                ) -> dict[str, dict[str, int]]:
    """session -> {audio stream: the lowest sample rate its local files' headers state}; the
    alignment margin (and so how long after its end a streaming bucket closes) follows from
    it. Streams with a remote or unreadable file are left out (the margin assumes the worst)."""
    rates: dict[tuple[str, str], list[int | None]] = {}
    for r in sources:
        if r.stream.modality == "audio":
            remote = "://" in r.path
            rates.setdefault((r.session_id, r.stream.id), []).append(
                None if remote else audio_rate(r.path))
    out: dict[str, dict[str, int]] = {}
    for (session, stream), found in rates.items():
        if found and None not in found:
            out.setdefault(session, {})[stream] = min(found)
    return out


def bucketing(job: Job, streaming: bool = False) -> AssignBuckets:
    """The job's bucket transform (its margins decide which buckets a record reaches);
    streaming stamps each session's buckets on the shared clock (``Job.shifts``)."""
    margins = {(sid, st.stream_id): st.margin_ns()
               for sid, plan in job.plans.items() for st in plan.streams}
    margins |= sets_window_margins(job.plans)      # a streaming set is final by max_span
    anchors = {sid: plan.anchor for sid, plan in job.plans.items()}
    tick_margins = {sid: plan.tick_margin_ns() for sid, plan in job.plans.items()}
    return AssignBuckets(job.bucket_ns, margins, anchors, tick_margins,
                         job.shifts if streaming else None)


def post_align_stages(job: Job) -> list[tuple[str, beam.PTransform]]:
    """The stages that run on aligned tables before they are written, in order: spatial
    registration, then encoders, when the manifests configure them. Each maps
    ((session, bucket), table) to the same keys with new columns (main) and DeadLetters."""
    stages = registration_stages(job.manifests, job.run_id)
    if any(m.encoders is not None for m in job.manifests):
        try:   # lazy: the encoders extra (torch) only when a manifest asks for encoders
            from mmalign.encoders.stage import encode_stage
        except ImportError as e:
            raise missing_extra(e, "the manifest's encoders: section") from None
        encode = encode_stage(job.manifests, job.run_id)
        if encode is not None:
            stages.append(("Encode", encode))
    return stages


def online_store_sink(job: Job):
    """The feature-store sink the manifests ask for (a ParDo over written Parquet paths with
    MAIN/DEAD outputs), or None."""
    if not job.feature_store:
        return None
    try:   # lazy: the encoders and feast extras only when a manifest enables the store
        from mmalign.encoders.feature_store import feature_store_sink
    except ImportError as e:
        raise missing_extra(e, "the feature store (encoders.feature_store)") from None
    return feature_store_sink(job.manifests, job.out, job.run_id)


class AlignCore(beam.PTransform):
    """Chunks -> {"aligned": ((session, bucket), table), "dead": DeadLetters, "sync":
    (session, stream, SyncResult) or None}: the middle every pipeline shares (module
    docstring). ``streaming``: plausibility and extents from producers' declarations, no
    DTW-sync, approximate-time sets online, empty buckets emitted (the streaming ledger
    records them); ``hold``: applied to the aligned buckets before the post-align stages."""

    def __init__(self, job: Job, *, streaming: bool = False,
                 hold: Callable[[beam.PCollection], beam.PCollection] | None = None):
        super().__init__()
        self.job = job
        self.streaming = streaming
        self.hold = hold

    def expand(self, chunks):
        job, streaming = self.job, self.streaming
        valid = chunks | "Validate" >> Validate(
            job.stream_options, job.run_id, job.rules, centres=not streaming,
            clocks=job.declared)
        estimated, results = {}, None
        if job.synced and not streaming:
            results = valid[MAIN] | "Sync" >> EstimateClocks(job.manifests, job.declared)
            estimated = {"estimated": beam.pvalue.AsDict(
                results | "Models" >> beam.MapTuple(lambda s, st, r: ((s, st), r.model)))}
        clocked = valid[MAIN] | "Clock" >> beam.ParDo(ApplyClockFn(job.declared), **estimated)
        extents = None if streaming else clocked | "Extents" >> StreamExtents()
        if job.set_plans:      # streaming: state + watermark timers (join.ApproxSetsFn)
            sets = clocked | "ApproxSets" >> (
                ApproxSetsStream(job.set_plans, shifts=job.shifts) if streaming
                else ApproxSetTicks(job.set_plans))
            clocked = (clocked, sets) | "WithSets" >> beam.Flatten()
        aligned = (clocked
                   | "Buckets" >> bucketing(job, streaming)
                   | "Align" >> AlignBuckets(job.plans, extents, extents_from_meta=streaming,
                                             emit_empty=streaming))
        if self.hold is not None:
            aligned = self.hold(aligned)
        aligned, post_dead = post_align(aligned, job)
        return {"aligned": aligned, "sync": results,
                "dead": (valid[DEAD], *post_dead) | "CoreDead" >> beam.Flatten()}


def post_align(aligned: beam.PCollection, job: Job) -> tuple[beam.PCollection, list]:
    """``post_align_stages`` applied to aligned buckets: (the tables with their new columns,
    the stages' dead-letter PCollections in the global window)."""
    dead = []
    options = aligned.pipeline.options
    for name, stage in post_align_stages(job):
        out = aligned | name >> with_stage_hints(options, name, stage)  # GPU: encoder only
        aligned = out[MAIN]
        # letters leave a stage in its bucket windows; the dead-letter sinks are global
        dead.append(out[DEAD] | f"{name}DeadGlobal" >> beam.WindowInto(GlobalWindows()))
    return aligned, dead
