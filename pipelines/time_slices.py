"""The time-sliced backfill: long recordings in flat memory, one recording over every core.

The local runner keeps whatever crosses a stage boundary in memory (the decoded chunks until
every stream's median is known, the bucket pieces until the group by bucket), so a
whole-session backfill grows with the recording, and one session runs in one process. Here the
same steps run as small Beam pipelines in worker processes forked after start-up
(``pipelines/task_pool.py``), which pull their items (streams, sessions, slices) from a shared
queue, with the chunks spilled to files under the run's staging folder in between; only
references to those files cross a stage boundary:

1. **streams** (item: a stream's files): decode -> spill each raw chunk with its median ->
   the stream's median -> validate the spilled chunks around it (as the whole-session run
   does) -> clock (declared models) -> spill, with the buckets each chunk's pieces go to.
   With DTW-sync the valid chunks are spilled unclocked and their feature partials kept; then
   **sync** (one pipeline) fits the clocks from the partials and writes sync.json, and
   **clocks** (item: a stream's valid chunks) puts them on the fitted clocks and spills them.
2. **sets** (item: a session with approximate-time sets, its member streams' chunks): the
   session's sets, spilled as ticks.
3. **slices** (item: ``slice_s`` seconds of a session's buckets, with the chunks that have
   pieces in them): bucket pieces, kept for the slice's own buckets -> align (the streams'
   extents from the spill references) -> registration/encoding -> Parquet, one file per
   bucket as ever.

Letters go to parts per worker, merged per session into the one sorted file a whole-session
run writes, so the output is the same file for file (tests/integration/test_backfill_slices.py,
tests/bad_inputs/test_slices_bad_data.py). Every count is made once: decode and validation
per chunk in phase 1, clock per chunk where it is applied, align per bucket (each bucket is
in one slice). Slices need the local runner and one writer per process: not with other
runners, the metrics options or the feature store.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam

from mmalign.deadletter.file_sink import WriteDeadLetters, write_session_letters
from mmalign.deadletter.record import DeadLetter
from mmalign.pipelines.core import Job, bucketing, post_align
from mmalign.pipelines.runners import RunnerConfigError, preload_local_runner
from mmalign.pipelines.session_workers import check_workers, source_bytes, summed
from mmalign.pipelines.task_pool import TaskContext, TaskPool, pulled
from mmalign.schemas.chunk import Chunk, TickTable
from mmalign.schemas.fs import rmtree
from mmalign.schemas.layout import ALIGNED, DEADLETTER
from mmalign.transforms.align import policies as align_policies
from mmalign.transforms.align.buckets import NOT_SHUFFLED, AssignBucketsFn
from mmalign.transforms.align.join import AlignBucketFn, ApproxSetTicks, chunk_extent
from mmalign.transforms.clock.apply import ApplyClockFn
from mmalign.transforms.clock.sync import (
    ChunkPartialsFn,
    EstimateFromPartials,
    WriteSyncResults,
    sync_plans,
)
from mmalign.transforms.decode.segments import segment_span
from mmalign.transforms.decode.stage import DecodeFile, DecodeRequest
from mmalign.transforms.io.parquet import WriteAlignedFn
from mmalign.transforms.tags import DEAD, MAIN
from mmalign.transforms.validate import stage as validate_stage
from mmalign.transforms.validate.stage import ValidateFn
from mmalign.transforms.validate.timestamps import TimestampRule, chunk_centre, weighted_median

SPILL = ".slices"            # under the run's staging folder; removed before the commit
DEFAULT_SLICE_S = 60.0       # auto: slices of this length for sessions over twice as long


# ---------------------------------------------------------------- when sessions are sliced


def probed_seconds(job: Job) -> float:
    """How long the job's longest video or audio stream is, from its local files' headers (a
    stream of several files spans them with their segment offsets; 0 when none can be
    probed): known before decoding."""
    spans: dict[tuple[str, str], tuple[int, int]] = {}
    for r in job.sources:
        if r.stream.modality in ("video", "audio") and "://" not in r.path:
            span = segment_span(r.stream, r.path)
            if span is not None:
                a, b = span[0] + r.time_offset_ns, span[1] + r.time_offset_ns
                k = (r.session_id, r.stream.id)
                spans[k] = (min(a, spans[k][0]), max(b, spans[k][1])) if k in spans else (a, b)
    return max((b - a for a, b in spans.values()), default=0) / 1e9


def resolve_slices(slice_s: float | None, job: Job, runner: str, observe) -> float | None:
    """The slice length in seconds for this run, or None for whole sessions. ``slice_s``:
    None (auto: ``DEFAULT_SLICE_S`` where slicing applies and a recording is over twice as
    long), 0 (never), or seconds (checked: exit 2 where it cannot apply)."""
    if slice_s is None:
        try:
            check_workers(1, runner, observe, job, option="slices")
        except RunnerConfigError:
            return None
        return DEFAULT_SLICE_S if probed_seconds(job) > 2 * DEFAULT_SLICE_S else None
    if slice_s == 0:
        return None
    if not math.isfinite(slice_s) or slice_s < 0:
        raise RunnerConfigError(f"--slice-s must be 0 (whole sessions) or more (got {slice_s})")
    check_workers(1, runner, observe, job, option=f"--slice-s {slice_s:g}", fix="--slice-s 0")
    return float(slice_s)


# ---------------------------------------------------------------- spilled chunks


@dataclass(frozen=True)
class Spilled:
    """A chunk in a spill file: its stream, and either its (median, count) of plausible times
    (raw, before validation), or (clocked) its extent on the reference clock and the buckets
    its rows reach (the buckets the bucket stage gives pieces of it to)."""
    key: tuple[str, str]
    path: str
    centre: tuple[int, int] | None = None
    extent: tuple[int, int] | None = None     # chunk_extent: the stream's extent measure
    buckets: tuple[int, ...] = ()


def spill(chunk: Chunk, folder: str) -> str:
    path = os.path.join(folder, f"{uuid.uuid4().hex}.pkl")
    with open(path, "wb") as f:
        pickle.dump(chunk, f, protocol=5)
    return path


def load(ref: Spilled) -> Chunk:
    with open(ref.path, "rb") as f:
        return pickle.load(f)


class _SpillFn(beam.DoFn):
    """A step that spills what it gets to files in ``folder``."""

    def __init__(self, folder: str):
        self.folder = folder

    def setup(self):
        os.makedirs(self.folder, exist_ok=True)


class SpillRawFn(_SpillFn):
    """Decoded chunk -> Spilled with its (median, count) of plausible times."""

    def __init__(self, folder: str, rules: dict[str, TimestampRule]):
        super().__init__(folder)
        self.rules = rules

    def process(self, chunk: Chunk):
        rule = self.rules.get(chunk.session_id) or TimestampRule()
        yield Spilled(chunk.key, spill(chunk, self.folder),
                      centre=chunk_centre(chunk.t_ns(), rule))


class SpillValidFn(_SpillFn):
    """Valid chunk, not yet on the reference clock (DTW-sync fits it later) -> Spilled, its
    payload columns dropped (no later step reads them)."""

    def process(self, chunk: Chunk):
        yield Spilled(chunk.key, spill(_without_payload(chunk), self.folder))


def _without_payload(chunk: Chunk) -> Chunk:
    drop = [c for c in NOT_SHUFFLED if c in chunk.data.schema.names]
    return chunk.with_data(chunk.data.drop_columns(drop)) if drop else chunk


class SpillClockedFn(_SpillFn):
    """Clocked chunk (its payload columns dropped: buckets never carry them) or a session's
    approximate-time sets -> Spilled with its extent and the buckets its pieces go to
    (``AssignBucketsFn``, as the bucket stage)."""

    def __init__(self, folder: str, job: Job):
        super().__init__(folder)
        self.assign = assign_fn(job)

    def process(self, chunk: Chunk | TickTable):
        ticks = isinstance(chunk, TickTable)      # sets: ticks only, no extent of a stream
        chunk = chunk if ticks else _without_payload(chunk)
        buckets = sorted({stamped.value[0][1] for stamped in self.assign.process(chunk)})
        yield Spilled(chunk.key, spill(chunk, self.folder),
                      extent=None if ticks else chunk_extent(chunk)[1], buckets=tuple(buckets))


def assign_fn(job: Job) -> AssignBucketsFn:
    """The bucket stage's DoFn for ``job`` (its margins, anchors and tick margins)."""
    return bucketing(job).fn()


class DecodeValidateStreamFn(beam.DoFn):
    """A stream's files (one pulled item) -> its valid chunks (main) and letters ("dead"):
    each file decoded, each chunk spilled as it comes with its (median, count) of plausible
    times; then the stream's weighted median of them (as ``MedianPerStream``), and each
    spilled chunk loaded and validated around it (as ``ValidateFn`` with the medians' side
    input). The median needs only the stream's own chunks, so the stream is validated in the
    step that decoded it: no stage boundary waits for every stream of the worker, and the
    pull's load balance covers validation too (a worker that ends its long video validates
    it while the other validates what it decoded)."""

    def __init__(self, job: Job, folder: str):
        self.decode = DecodeFile(job.run_id)
        self.spill = SpillRawFn(folder, job.rules)
        self.validate = ValidateFn(job.stream_options, job.run_id, job.rules, job.declared)

    def setup(self):
        for fn in (self.decode, self.spill, self.validate):     # as each would be set up alone
            fn.setup()

    def process(self, requests: list[DecodeRequest]):
        refs: list[Spilled] = []
        for request in requests:
            for out in self.decode.process(request):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield out
                else:
                    refs.extend(self.spill.process(out))
        centres = {}
        for group in _by_key(refs, lambda r: r.key):       # one stream, the item's
            median = weighted_median(r.centre for r in group)
            if median is not None:
                centres[group[0].key] = median
        for ref in refs:
            yield from self.validate.process(load(ref), centres)


def letter_part(part: str):
    """A ``WriteDeadLetters`` writer that pickles a session's letters as one part file."""
    def write(root: str, session_id: str, letters: list[DeadLetter]) -> str:
        folder = os.path.join(root, session_id)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{part}.pkl")
        with open(path, "wb") as f:
            pickle.dump(letters, f, protocol=5)
        return path
    return write


def merge_letters(parts_root: Path, out_root: Path) -> None:
    """Every session's letter parts -> its one sorted dead-letter file (as a whole run's)."""
    if not parts_root.is_dir():
        return
    for folder in sorted(p for p in parts_root.iterdir() if p.is_dir()):
        letters = []
        for f in sorted(folder.glob("*.pkl")):
            letters += pickle.loads(f.read_bytes())
        if letters:
            write_session_letters(out_root, folder.name, letters)


class Collect(beam.PTransform):
    """Small elements (spill references, sync partials, models) -> one pickle file of them all
    (a step's result for the parent)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, items):
        path = self.path

        def write(_, items):
            with open(path, "wb") as f:
                pickle.dump(list(items), f, protocol=5)
            return path

        return (items | "One" >> beam.Map(lambda r: (None, r))
                | "All" >> beam.GroupByKey() | "Write" >> beam.MapTuple(write))


# ---------------------------------------------------------------- the two phases


def build_streams(p: beam.Pipeline, job: Job, spill_root: Path, part: str) -> None:
    """Phase 1 over the streams this worker pulls (a stream's files, one item): decode,
    validate around each stream's median, then clock (declared models) and spill with the
    buckets each chunk reaches; with DTW-sync, spill the valid chunks unclocked and keep their
    sync feature partials instead (``build_clocks`` clocks them once the fits are known)."""
    valid = pulled(p) | "DecodeValidate" >> beam.ParDo(
        DecodeValidateStreamFn(job, str(spill_root / "raw"))).with_outputs(DEAD, main=MAIN)
    if job.synced:
        (valid[MAIN] | "Partials" >> beam.ParDo(ChunkPartialsFn(sync_plans(job.manifests,
                                                                         job.declared)))
         | "CollectPartials" >> Collect(str(spill_root / f"partials-{part}.pkl")))
        (valid[MAIN] | "SpillValid" >> beam.ParDo(SpillValidFn(str(spill_root / "valid")))
         | "Collect" >> Collect(str(spill_root / f"valid-{part}.pkl")))
    else:
        (valid[MAIN]
         | "Clock" >> beam.ParDo(ApplyClockFn(job.declared))
         | "SpillClocked" >> beam.ParDo(SpillClockedFn(str(spill_root / "clocked"), job))
         | "Collect" >> Collect(str(spill_root / f"refs-{part}.pkl")))
    (valid[DEAD]
     | "WriteDead" >> WriteDeadLetters(str(spill_root / "letters"), job.run_id,
                                       write=letter_part(part)))


def build_sync(p: beam.Pipeline, job: Job, staging: Path, spill_root: Path,
               partials: list) -> None:
    """DTW-sync from every stream's feature partials: the fits (SyncResults) to
    OUT/sync/<session>/sync.json, as the whole-session run writes them, and to a file of
    ((session, stream), model) for ``build_clocks``."""
    results = (p | "Partials" >> beam.Create(partials, reshuffle=False)
               | "Sync" >> EstimateFromPartials(sync_plans(job.manifests, job.declared)))
    results | "WriteSync" >> WriteSyncResults(str(staging / "sync"))
    (results | "Models" >> beam.MapTuple(lambda s, st, r: ((s, st), r.model))
     | "Collect" >> Collect(str(spill_root / "models-sync.pkl")))


def build_clocks(p: beam.Pipeline, job: Job, spill_root: Path, part: str,
                 models: dict) -> None:
    """After DTW-sync: the valid chunks this worker pulls (a stream's, one item) onto the
    reference clock (the fitted models, else the declared ones), spilled with their buckets."""
    (pulled(p) | "Chunks" >> beam.FlatMap(lambda refs: refs)
     | "Load" >> beam.Map(load)
     | "Clock" >> beam.ParDo(ApplyClockFn({**job.declared, **models}))
     | "SpillClocked" >> beam.ParDo(SpillClockedFn(str(spill_root / "clocked"), job))
     | "Collect" >> Collect(str(spill_root / f"refs-{part}.pkl")))


def build_sets(p: beam.Pipeline, job: Job, spill_root: Path, part: str) -> None:
    """Approximate-time sets of the sessions this worker pulls (a session's clocked member
    chunks, one item): the session's ``TickTable``, spilled with the buckets it reaches."""
    (pulled(p) | "Chunks" >> beam.FlatMap(lambda refs: refs)
     | "Load" >> beam.Map(load)
     | "Sets" >> ApproxSetTicks(job.set_plans)
     | "SpillTicks" >> beam.ParDo(SpillClockedFn(str(spill_root / "clocked"), job))
     | "Collect" >> Collect(str(spill_root / f"refs-{part}.pkl")))


class AlignSliceFn(beam.DoFn):
    """A slice (session, its buckets, the spilled chunks they reach) -> ((session, bucket),
    aligned table) for each of its buckets, in order: the chunks cut into bucket pieces
    (``AssignBucketsFn``, as the bucket stage) and each bucket joined (``AlignBucketFn``, as
    the align stage, with the streams' ``extents`` from phase 1), one slice in memory at a
    time."""

    def __init__(self, job: Job, extents: dict[tuple[str, str], tuple[int, int]]):
        self.assign = assign_fn(job)
        self.align = AlignBucketFn(job.plans)
        self.extents = extents

    def setup(self):
        self.align.setup()

    def process(self, element):
        session, buckets, refs = element
        extents = self.extents
        pieces: dict[int, list] = defaultdict(list)
        for ref in refs:
            for stamped in self.assign.process(load(ref)):
                (_, b), piece = stamped.value
                if b in buckets:
                    pieces[b].append(piece)
        for b in sorted(pieces):
            yield from self.align.process(((session, b), pieces.pop(b)), extents)


def build_slices(p: beam.Pipeline, job: Job, staging: Path, spill_root: Path, part: str,
                 extents: dict[tuple[str, str], tuple[int, int]]) -> None:
    """Phase 2 over the slices this worker pulls: each slice's buckets aligned
    (``AlignSliceFn``) -> post-align stages -> Parquet; post-align letters to a letter part."""
    # the extents are a constructor argument, not a side input: a side input would put a
    # stage boundary after the pull, and this worker would pull every slice before aligning one
    aligned = pulled(p) | "Align" >> beam.ParDo(AlignSliceFn(job, extents))
    aligned, dead = post_align(aligned, job)
    aligned | "WriteAligned" >> beam.ParDo(WriteAlignedFn(str(staging / ALIGNED),
                                                          job.metadata()))
    if dead:
        (tuple(dead) | "Dead" >> beam.Flatten()
         | "WriteDead" >> WriteDeadLetters(str(spill_root / "letters"), job.run_id,
                                           write=letter_part(part)))


# ---------------------------------------------------------------- planning


def stream_order(job: Job) -> list[list[DecodeRequest]]:
    """The job's streams (each the list of its files' requests), the likely slowest to decode
    first: video, audio, sensor, text, and by source bytes within a modality."""
    by_stream: dict[tuple[str, str], list[DecodeRequest]] = defaultdict(list)
    for r in job.sources:
        by_stream[(r.session_id, r.stream.id)].append(r)
    rank = {"video": 0, "audio": 1, "sensor": 2, "text": 3}

    def cost(k):
        rs = by_stream[k]
        return (rank.get(rs[0].stream.modality, 4), -sum(source_bytes(r.path) for r in rs), k)

    return [by_stream[k] for k in sorted(by_stream, key=cost)]


def slice_plan(job: Job, refs: list[Spilled], slice_s: float
               ) -> list[tuple[str, range, list[Spilled]]]:
    """(session, its buckets in this slice, the clocked chunks with pieces in them) for every
    slice of ``slice_s`` seconds (whole buckets, slice k holding buckets [k*n, (k+1)*n)) that
    any chunk reaches: the cost follows the chunks, never the time span (a stray far-off time
    adds one slice, not every slice in between)."""
    per = max(1, round(slice_s * 1e9 / job.bucket_ns))
    slices: dict[tuple[str, int], list[Spilled]] = defaultdict(list)
    for r in refs:
        for k in sorted({b // per for b in r.buckets}):
            slices[(r.key[0], k)].append(r)
    return [(s, range(k * per, (k + 1) * per), slices[(s, k)]) for s, k in sorted(slices)]


def stream_extents(refs: list[Spilled]) -> dict[tuple[str, str], tuple[int, int]]:
    """(session, stream) -> (first, last) over its clocked chunks (as StreamExtents)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for r in refs:
        if r.extent is None:                  # a session's sets: not a stream
            continue
        a, b = r.extent
        if r.key in out:
            a, b = min(a, out[r.key][0]), max(b, out[r.key][1])
        out[r.key] = (a, b)
    return out


# ---------------------------------------------------------------- tasks (in the workers)


def _streams(part: str) -> dict[str, int]:
    ctx = TaskPool.context()
    return ctx.run(build_streams, ctx.job, ctx.spill_root, part)


def _sync(partials: list) -> dict[str, int]:
    ctx = TaskPool.context()
    return ctx.run(build_sync, ctx.job, ctx.staging, ctx.spill_root, partials)


def _clocks(part: str, models: dict) -> dict[str, int]:
    ctx = TaskPool.context()
    return ctx.run(build_clocks, ctx.job, ctx.spill_root, part, models)


def _sets(part: str) -> dict[str, int]:
    ctx = TaskPool.context()
    return ctx.run(build_sets, ctx.job, ctx.spill_root, part)


def _slices(part: str, extents: dict) -> dict[str, int]:
    ctx = TaskPool.context()
    return ctx.run(build_slices, ctx.job, ctx.staging, ctx.spill_root, part, extents)


def _gathered(spill_root: Path, prefix: str) -> list:
    """Everything the workers' ``Collect`` files named ``<prefix>-*.pkl`` hold (a worker that
    had nothing to collect wrote none)."""
    out: list = []
    for f in sorted(spill_root.glob(f"{prefix}-*.pkl")):
        out += pickle.loads(f.read_bytes())
    return out


def _by_key(refs: list[Spilled], key) -> list[list[Spilled]]:
    groups: dict = defaultdict(list)
    for r in refs:
        groups[key(r)].append(r)
    return [groups[k] for k in sorted(groups)]


SPILL_PREFIX = "mmalign-slices-"     # + the pid of the command that made it + "-" + random


def remove_orphan_spills(folder: str | Path | None = None) -> list[Path]:
    """Remove the spill folders in ``folder`` (the system's temporary folder) left by a
    command that is gone (killed before its ``finally``: a SIGKILL, the OOM killer); returns
    them. A folder whose command's pid runs (it, or a process that reuses the pid) stays."""
    removed = []
    for d in Path(folder or tempfile.gettempdir()).glob(f"{SPILL_PREFIX}*-*"):
        pid = d.name[len(SPILL_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not d.is_dir() or d.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            rmtree(d)
            removed.append(d)
        except PermissionError:          # alive, someone else's
            pass
    return removed


def pool(job: Job, staging: Path, runner: str, pipeline_args: list[str] | None, workers: int,
         progress_every_s: float | None = None) -> TaskPool:
    """The worker pool for ``run`` (enter it before starting any thread). The validation
    contracts are loaded first, so the workers fork with them (``run`` loads the align
    kernels while the first step runs, and forks the later steps' workers after it)."""
    validate_stage.warm()
    # spill files are local: under the staging folder, or a temporary folder when OUT is on
    # an object store (the workers share this machine's disk)
    if isinstance(staging, Path):
        spill = staging / SPILL
    else:
        remove_orphan_spills()
        spill = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-"))
    return TaskPool(workers, TaskContext(job, staging, spill, runner,
                                         list(pipeline_args or [])), progress_every_s)


def run(job: Job, staging: Path, tasks: TaskPool, slice_s: float) -> tuple[dict[str, int], dict]:
    """Every step (streams; sync and clocks with DTW-sync; sets; slices) on the entered pool
    ``tasks``; returns (the summed stage counters, the slices that ran)."""
    spill_root = tasks.ctx.spill_root
    try:
        streams = stream_order(job)
        # the align kernels load here (numba's start, ~0.35 s) while the workers decode and
        # validate, which do not use them, and the runner's modules are imported; the later
        # steps' workers fork with both
        warming = align_policies.warm_in_background(preload_local_runner)
        counts = tasks.pull(_streams, streams)
        warming.join()
        tasks.refork()
        rmtree(spill_root / "raw")
        if job.synced:                    # fit the clocks, then put the chunks on them
            counts += tasks.map(_sync, [(_gathered(spill_root, "partials"),)])
            models = dict(_gathered(spill_root, "models"))
            counts += tasks.pull(_clocks, _by_key(_gathered(spill_root, "valid"),
                                                  lambda r: r.key), models)
            rmtree(spill_root / "valid")
        refs: list[Spilled] = _gathered(spill_root, "refs")
        if job.set_plans:                 # a session's sets need all its members' times
            plans = job.set_plans
            members = [r for r in refs if r.key[0] in plans and r.key[1] in plans[r.key[0]].sets]
            counts += tasks.pull(_sets, _by_key(members, lambda r: r.key[0]))
            refs += _gathered(spill_root, "refs-sets")
        extents = stream_extents(refs)
        plan = slice_plan(job, refs, slice_s)
        counts += tasks.pull(_slices, sorted(plan, key=lambda sl: -len(sl[2])), extents)
        merge_letters(spill_root / "letters", staging / DEADLETTER)
    finally:
        rmtree(spill_root)
    return summed(counts), {
        "slice_s": slice_s,
        "slices": [{"session": s, "buckets": [b.start, b.stop], "chunks": len(rs)}
                   for s, b, rs in plan]}
