"""The align stage: each bucket's ticks joined to every stream by that stream's policy.

Input: ``((session_id, bucket), [Piece, ...])`` from transforms/buckets.py. Output:
``((session_id, bucket), pyarrow.Table)`` with one row per tick of the bucket:

    session_id, bucket, tick_ns, tick_time (timestamp[ns, UTC]), tick_pos
    <stream>__status        "ok" or why the value is missing (never a silent gap)
    <stream>__dt_ns         signed time from the tick to the sample used (|dt| = quality)
    <stream>__pos, __src    the source reference (row/frame/first sample/cue + file)
    ... policy columns: __t_ns, __file (images), __<channel> (sensors), __sample_start /
        __sample_end / __coverage (audio), __text / __cues (text)

The kernels are plain functions in transforms/align/policies.py; this module only gathers a
bucket's pieces, calls them and lays out columns. Counters ``align.<modality>.samples`` count
each valid sample once (in the bucket that owns it), so ``records in = aligned + dead``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from mmalign.schemas import audio as audio_schema
from mmalign.schemas import metrics
from mmalign.schemas.aligned import (
    BUCKET,
    COVERAGE,
    CUES,
    DT_NS,
    FILE,
    OK,
    POS,
    POS_RIGHT,
    SAMPLE_END,
    SAMPLE_RATE,
    SAMPLE_START,
    SESSION_ID,
    SRC,
    STATUS,
    T_NS,
    TEXT,
    TICK_NS,
    TICK_POS,
    TICK_TIME,
    column,
)
from mmalign.schemas.chunk import TickTable
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.schemas.metrics import ALIGN
from mmalign.transforms.align import policies as ap
from mmalign.transforms.align.approx_sets import ApproxTimeSync, approx_time_sets
from mmalign.transforms.align.buckets import Piece
from mmalign.transforms.decode.wallclock import EPOCH_2000_NS

SETS_STREAM = "__sets__"   # the synthetic anchor stream whose rows are approximate-time sets


@dataclass(frozen=True)
class StreamPlan:
    stream_id: str
    modality: str
    policy: str
    tolerance_ns: int
    max_gap_ns: int
    window_ns: int
    channels: tuple[str, ...] = ()     # sensors: fixed column set when known up front
    sample_rate: int | None = None     # audio: its files' (lowest) rate, from their headers
    block_samples: int = DecodeOptions().block_samples   # audio: options.block_samples

    @property
    def block_ns(self) -> int | None:
        """audio: the longest block in ns (rounded up), when the files stated their rate."""
        return -(-self.block_samples * 10**9 // self.sample_rate) if self.sample_rate else None

    def margin_ns(self) -> int:
        return ap.required_margin_ns(self.policy, tolerance_ns=self.tolerance_ns,
                                     max_gap_ns=self.max_gap_ns, window_ns=self.window_ns,
                                     block_ns=self.block_ns)


@dataclass(frozen=True)
class SessionPlan:
    session_id: str
    streams: tuple[StreamPlan, ...]
    bucket_ns: int
    anchor: str | None = None          # tick source: an anchor stream ...
    rate_hz: float | None = None       # ... or a fixed rate ...
    sets: tuple[str, ...] = ()         # ... or approximate-time sets of these streams
    sets_max_span_ns: int = 0
    sets_queue_size: int = 64
    sets_age_penalty: float = 0.1
    sets_flush: bool = False
    start_ns: int | None = None        # UTC ns of reference time 0 (transforms/decode/wallclock)
    params: dict = field(default_factory=dict, hash=False, compare=False)

    def tick_time(self, ticks: np.ndarray) -> pa.Array:
        """UTC timestamps of ticks: start + tick when the start is known, else the tick itself
        when it is an epoch time already (>= 2000-01-01), else null."""
        ticks = np.asarray(ticks, np.int64)
        if self.start_ns is not None:
            utc, known = ticks + np.int64(self.start_ns), np.ones(len(ticks), bool)
        else:
            utc, known = ticks, ticks >= EPOCH_2000_NS
        return pa.array(utc, pa.int64(), mask=~known).cast(pa.timestamp("ns", tz="UTC"))

    def margins(self) -> dict[str, int]:
        return {s.stream_id: s.margin_ns() for s in self.streams}

    def tick_margin_ns(self) -> int:
        """How far past its edges a bucket needs ticks: one_to_one streams need their margin."""
        return max((s.margin_ns() for s in self.streams if s.policy == "one_to_one"), default=0)


def _concat(pieces: list[Piece]) -> pa.Table:
    """One stream's rows in a bucket, time-sorted, each (src, pos) once."""
    t = pa.Table.from_batches([p.data for p in pieces]).combine_chunks()
    t = t.sort_by([("t_ns", "ascending"), ("pos", "ascending")])
    if t.num_rows > 1:
        pos = t.column("pos").to_numpy()
        src = (t.column("src").cast(pa.string()).to_numpy(zero_copy_only=False)
               if "src" in t.column_names else np.zeros(t.num_rows, object))
        tt = t.column("t_ns").to_numpy()
        dup = np.zeros(t.num_rows, bool)
        dup[1:] = (pos[1:] == pos[:-1]) & (src[1:] == src[:-1]) & (tt[1:] == tt[:-1])
        if dup.any():
            t = t.filter(pa.array(~dup))
    return t


def fixed_rate_ticks(start: int, end: int, rate_hz: float, t_lo: int, t_hi: int):
    """Ticks at whole multiples of the period inside [start, end) and inside [t_lo, t_hi]."""
    period = round(1e9 / rate_hz)
    lo = max(start, t_lo)
    hi = min(end - 1, t_hi)
    if hi < lo:
        return np.zeros(0, np.int64)
    first = -(-lo // period)
    return np.arange(first, hi // period + 1, dtype=np.int64) * period


def _status(status: np.ndarray) -> pa.Array:
    names = np.asarray(ap.STATUS_NAMES, dtype=object)[status]
    return pa.array(names, pa.string()).dictionary_encode()


def _take(col: pa.ChunkedArray | pa.Array, idx: np.ndarray, valid: np.ndarray) -> pa.Array:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.take(pa.array(np.where(valid, idx, 0), pa.int64(), mask=~valid))


def join_stream(plan: StreamPlan, ticks: np.ndarray, table: pa.Table | None,
                meta: dict | None = None, *, bounds=None, context=None) -> dict:
    """The columns of one stream for the given ticks (all-missing when ``table`` is None).
    ``bounds``: the stream's whole extent (for out_of_range); ``context``: the [lo, hi) the
    ticks and samples cover, for one_to_one (see policies.one_to_one)."""
    m = len(ticks)
    c = partial(column, plan.stream_id)
    if table is None or table.num_rows == 0:
        table = None
    t = table.column("t_ns").to_numpy() if table is not None else np.zeros(0, np.int64)
    cols: dict[str, pa.Array] = {}

    if plan.policy in ("nearest", "one_to_one"):
        if plan.policy == "nearest":
            idx, dt, status = ap.nearest(ticks, t, plan.tolerance_ns, bounds=bounds)
        else:
            idx, dt, status = ap.one_to_one(ticks, t, plan.tolerance_ns, context=context,
                                            bounds=bounds)
        ok = idx >= 0
        cols[c(STATUS)] = _status(status)
        cols[c(DT_NS)] = pa.array(dt, pa.int64(), mask=~ok)
        names = [T_NS, POS, SRC] + ([FILE] if plan.modality == "video" else []) + \
            (list(plan.channels) if plan.modality == "sensor" else [])
        for name in names:
            if table is not None and name in table.column_names:
                cols[c(name)] = _take(table.column(name), idx, ok)
            elif name in ("t_ns", "pos"):
                cols[c(name)] = pa.nulls(m, pa.int64())
            elif name in plan.channels:
                cols[c(name)] = pa.nulls(m, pa.float64())
            else:
                cols[c(name)] = pa.nulls(m, pa.string())
        if plan.modality == "sensor" and table is not None and not plan.channels:
            for name in _channels(table):
                cols[c(name)] = _take(table.column(name), idx, ok)

    elif plan.policy == "interpolate":
        channels = list(plan.channels) or (_channels(table) if table is not None else [])
        values = (np.column_stack([table.column(c).to_numpy() for c in channels])
                  if table is not None and channels else np.zeros((len(t), len(channels))))
        out, left, right, status = ap.interpolate(ticks, t, values, plan.max_gap_ns,
                                                  bounds=bounds)
        ok = left >= 0
        cols[c(STATUS)] = _status(status)
        # signed: sample time - tick time of the nearer bracketing sample (earlier on a tie)
        if t.size:
            d_left = t[np.maximum(left, 0)] - ticks
            d_right = t[np.maximum(right, 0)] - ticks
            near = np.where(np.abs(d_left) <= np.abs(d_right), d_left, d_right)
        else:
            near = np.zeros(m, np.int64)
        cols[c(DT_NS)] = pa.array(np.where(ok, near, 0), pa.int64(), mask=~ok)
        for j, ch in enumerate(channels):
            cols[c(ch)] = pa.array(out[:, j], pa.float64(), from_pandas=True)
        if table is not None:
            cols[c(POS)] = _take(table.column("pos"), left, ok)
            cols[c(POS_RIGHT)] = _take(table.column("pos"), right, ok)
            cols[c(SRC)] = _take(table.column("src"), left, ok)
        else:
            cols[c(POS)] = pa.nulls(m, pa.int64())
            cols[c(POS_RIGHT)] = pa.nulls(m, pa.int64())
            cols[c(SRC)] = pa.nulls(m, pa.string())

    elif plan.policy == "audio_window":
        sr = int((meta or {}).get("sample_rate") or plan.sample_rate or 0)
        n = table.column("n_samples").to_numpy().astype(np.int64) if table is not None \
            else np.zeros(0, np.int64)
        pos = table.column("pos").to_numpy() if table is not None else np.zeros(0, np.int64)
        s0, s1, cov, status = ap.audio_window(ticks, t, pos, n, sr or 1, plan.window_ns,
                                              bounds=bounds)
        ok = s1 > s0
        cols[c(STATUS)] = _status(status)
        cols[c(SAMPLE_START)] = pa.array(s0, pa.int64(), mask=~ok)
        cols[c(SAMPLE_END)] = pa.array(s1, pa.int64(), mask=~ok)
        cols[c(COVERAGE)] = pa.array(cov, pa.float64())
        cols[c(SAMPLE_RATE)] = pa.array(np.full(m, sr or 0), pa.int32(), mask=np.full(m, not sr))
        if table is not None:
            first = np.clip(np.searchsorted(t, ticks, side="right") - 1, 0, len(t) - 1)
            cols[c(SRC)] = _take(table.column("src"), first, ok)
        else:
            cols[c(SRC)] = pa.nulls(m, pa.string())

    elif plan.policy == "text_overlap":
        end = table.column("t_end_ns").to_numpy() if table is not None else np.zeros(0, np.int64)
        offsets, seg, status = ap.text_overlap(ticks, t, end)
        cols[c(STATUS)] = _status(status)
        if table is not None and seg.size:
            texts = table.column("text").to_numpy(zero_copy_only=False)[seg]
            cues = table.column("pos").to_numpy()[seg]
        else:
            texts, cues = np.zeros(0, object), np.zeros(0, np.int64)
        joined = ["\n".join(texts[offsets[i]:offsets[i + 1]]) if offsets[i + 1] > offsets[i]
                  else None for i in range(m)]
        cols[c(TEXT)] = pa.array(joined, pa.string())
        cols[c(CUES)] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                                    pa.array(cues, pa.int64()))
        cols[c(SRC)] = (_take(table.column("src"), seg[offsets[:-1].clip(max=max(len(seg)-1, 0))]
                                 if seg.size else np.zeros(m, np.int64),
                                 np.diff(offsets) > 0) if table is not None
                           else pa.nulls(m, pa.string()))
    else:
        raise ValueError(f"unknown policy {plan.policy!r}")
    return cols


def _channels(table: pa.Table) -> list[str]:
    skip = {"t_ns", "pos", "src", "t_dev_ns"}
    return [c for c in table.column_names if c not in skip]


def align_bucket(plan: SessionPlan, bucket: int, pieces: list[Piece],
                 extents: dict | None = None) -> pa.Table:
    """Join one bucket. ``extents``: (session, stream) -> (first, last) time of the whole
    stream, so a tick beyond a stream's data says ``out_of_range`` as in a whole-session join."""
    by_stream: dict[str, list[Piece]] = defaultdict(list)
    tick_pieces: list[Piece] = []
    meta: dict[str, dict] = {}
    for piece in pieces:
        (tick_pieces if piece.role == "ticks" else by_stream[piece.stream_id]).append(piece)
        meta.setdefault(piece.stream_id, piece.meta)
    tables = {s: _concat(ps) for s, ps in by_stream.items()}
    lo_b, hi_b = bucket * plan.bucket_ns, (bucket + 1) * plan.bucket_ns
    tick_margin = plan.tick_margin_ns()

    tt = None
    if plan.anchor is not None:
        tt = _concat(tick_pieces) if tick_pieces else None
        ctx = tt.column("t_ns").to_numpy() if tt is not None else np.zeros(0, np.int64)
        ctx_pos = tt.column("pos").to_numpy() if tt is not None else np.zeros(0, np.int64)
    else:
        # fixed-rate ticks span the session's data: from the streams' whole extents when
        # known (a bucket then cuts exactly the whole-session ticks), else from what the
        # bucket sees
        spans = [(extents or {}).get((plan.session_id, sp.stream_id)) for sp in plan.streams]
        spans = [x for x in spans if x is not None]
        if spans:
            lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        else:
            lo = min((int(t.column("t_ns")[0].as_py()) for t in tables.values() if t.num_rows),
                     default=0)
            hi = max((int(t.column("t_ns")[-1].as_py()) for t in tables.values()
                      if t.num_rows), default=-1)
        ctx = fixed_rate_ticks(lo_b - tick_margin, hi_b + tick_margin, plan.rate_hz, lo, hi)
        ctx_pos = np.rint(ctx * plan.rate_hz / 1e9).astype(np.int64)
    own = (ctx >= lo_b) & (ctx < hi_b)
    ticks = ctx[own]

    m = len(ticks)
    cols = {
        SESSION_ID: pa.array([plan.session_id] * m, pa.string()),
        BUCKET: pa.array(np.full(m, bucket), pa.int64()),
        TICK_NS: pa.array(ticks, pa.int64()),
        TICK_TIME: plan.tick_time(ticks),
        TICK_POS: pa.array(ctx_pos[own], pa.int64()),
    }
    for sp in plan.streams:
        if sp.stream_id in plan.sets:
            cols.update(set_member_columns(sp.stream_id, tt, own, ticks))
            continue
        table = tables.get(sp.stream_id)
        bounds = (extents or {}).get((plan.session_id, sp.stream_id))
        if sp.policy == "one_to_one":
            margin = sp.margin_ns()
            sel = (ctx >= lo_b - margin) & (ctx < hi_b + margin)
            out = join_stream(sp, ctx[sel], table, meta.get(sp.stream_id), bounds=bounds,
                              context=(lo_b - margin, hi_b + margin))
            keep = pa.array(own[sel])
            cols.update({k: v.filter(keep) for k, v in out.items()})
        else:
            cols.update(join_stream(sp, ticks, table, meta.get(sp.stream_id), bounds=bounds))
    return pa.table({k: _plain(v) for k, v in cols.items()})


def set_member_columns(stream_id: str, tick_table: pa.Table | None, own: np.ndarray,
                       ticks: np.ndarray) -> dict:
    """A set member stream's columns, read off the set ticks (every member is matched)."""
    c = partial(column, stream_id)
    m = len(ticks)
    if tick_table is None or m == 0:
        return {c(STATUS): pa.array([], pa.string()), c(DT_NS): pa.array([], pa.int64()),
                c(T_NS): pa.array([], pa.int64()), c(POS): pa.array([], pa.int64()),
                c(SRC): pa.array([], pa.string())}
    keep = pa.array(own)
    t = tick_table.column(c(T_NS)).combine_chunks().filter(keep)
    return {c(STATUS): pa.array([OK] * m, pa.string()),
            c(DT_NS): pa.array(t.to_numpy() - ticks, pa.int64()),
            c(T_NS): t,
            c(POS): tick_table.column(c(POS)).combine_chunks().filter(keep),
            c(SRC): tick_table.column(c(SRC)).combine_chunks().filter(keep)}


def approx_set_ticks(plan: SessionPlan, members: list[tuple[str, pa.Table]]):
    """The session's approximate-time sets as one ``TickTable``: tick = the set's latest
    member time, plus each member's t_ns/pos/src. Sequential by definition (the ROS policy
    decides set by set), so it runs per session, before bucketing."""

    by = defaultdict(list)
    for stream_id, table in members:
        by[stream_id].append(table)
    tables = {s: pa.concat_tables(ts).sort_by([("t_ns", "ascending"), ("pos", "ascending")])
              for s, ts in by.items()}
    if any(s not in tables for s in plan.sets):
        return None
    times = [tables[s].column("t_ns").to_numpy() for s in plan.sets]
    idx = approx_time_sets(times, plan.sets_max_span_ns, plan.sets_queue_size,
                           age_penalty=plan.sets_age_penalty, flush=plan.sets_flush)
    if len(idx) == 0:
        return None
    member_t = np.column_stack([times[j][idx[:, j]] for j in range(len(plan.sets))])
    cols = {"t_ns": pa.array(member_t.max(axis=1), pa.int64()),
            "pos": pa.array(np.arange(len(idx)), pa.int64())}
    for j, s in enumerate(plan.sets):
        take = pa.array(idx[:, j])
        cols[column(s, T_NS)] = pa.array(member_t[:, j], pa.int64())
        cols[column(s, POS)] = tables[s].column("pos").take(take)
        cols[column(s, SRC)] = tables[s].column("src").take(take).cast(pa.string())
    batch = pa.table(cols).combine_chunks().to_batches()[0]
    return TickTable(plan.session_id, SETS_STREAM, batch)


class ApproxSetTicks(beam.PTransform):
    """Clocked chunks -> one ``TickTable`` per session holding its sets (for sessions whose
    ticks are approximate-time sets)."""

    def __init__(self, plans: dict[str, SessionPlan]):
        super().__init__()
        self.plans = plans

    def expand(self, chunks):
        plans = self.plans

        def members(chunk):
            plan = plans.get(chunk.session_id)    # sessions without sets are not in plans
            if plan is not None and chunk.stream_id in plan.sets:
                data = chunk.data.select(["t_ns", "pos"]).append_column(
                    "src", pa.array([chunk.source_uri] * chunk.num_records, pa.string()))
                yield chunk.session_id, (chunk.stream_id, pa.Table.from_batches([data]))

        def make(session_id, items):
            chunk = approx_set_ticks(plans[session_id], list(items))
            if chunk is not None:
                ALIGN.count("sets", chunk.num_records)
                yield chunk

        return (chunks
                | "SetMembers" >> beam.FlatMap(members)
                | "GroupSession" >> beam.GroupByKey()
                | "MakeSets" >> beam.FlatMapTuple(make))


# ---------------------------------------------------------------- approximate-time sets, streaming

SETS_HOLD_SLACK_NS = 2_000_000     # whole ms beyond max_span that a set's bucket stays open


def sets_window_margins(plans: dict[str, SessionPlan]) -> dict[tuple[str, str], int]:
    """Extra window margins for sessions whose ticks are approximate-time sets, keyed like
    ``AssignBuckets``' margins ((session, SETS_STREAM): only the window margin grows): a
    streaming set is final at the latest ``max_span`` after its tick (``ApproxSetsFn``), so
    every bucket its tick reaches (ticks go ``tick_margin`` beyond a bucket's edges) stays
    open ``max_span`` + 2 ms past the tick."""
    return {(sid, SETS_STREAM): sets_hold_ns(plan) for sid, plan in plans.items() if plan.sets}


def sets_hold_ns(plan: SessionPlan) -> int:
    """A set session's window margin: its tick margin + max_span + 2 ms."""
    return plan.tick_margin_ns() + plan.sets_max_span_ns + SETS_HOLD_SLACK_NS


def sets_safe_until_ns(plan: SessionPlan, tick_ns: int) -> int:
    """A time before which every bucket window a tick at or after ``tick_ns`` reaches is
    still open (with ``sets_hold_ns`` in the window margin), and at or after ``tick_ns`` +
    max_span + 1 ms: the earliest such bucket starts ``tick_margin`` before the tick."""
    b = plan.bucket_ns
    first_end = ((tick_ns - plan.tick_margin_ns()) // b + 1) * b
    return first_end + sets_hold_ns(plan) - SETS_HOLD_SLACK_NS // 2


def set_ticks_table(plan: SessionPlan, sets: list, first_pos: int) -> TickTable:
    """Published sets (refs = (pos, src) per member) -> a ``TickTable`` like the batch one."""
    n = len(plan.sets)
    times = np.array([t for _, t in sets], np.int64).reshape(len(sets), n)
    cols = {"t_ns": pa.array(times.max(axis=1), pa.int64()),
            "pos": pa.array(np.arange(first_pos, first_pos + len(sets)), pa.int64())}
    for j, s in enumerate(plan.sets):
        cols[column(s, T_NS)] = pa.array(times[:, j], pa.int64())
        cols[column(s, POS)] = pa.array([refs[j][0] for refs, _ in sets], pa.int64())
        cols[column(s, SRC)] = pa.array([refs[j][1] for refs, _ in sets], pa.string())
    return TickTable(plan.session_id, SETS_STREAM, pa.table(cols).to_batches()[0])


def _ceil_us(t_ns: int) -> int:
    return -(-t_ns // 1000)


class ApproxSetsFn(beam.DoFn):
    """Streaming approximate-time sets of one session (keyed by session): (session, samples)
    -> ``TickTable``s, the same sets ``approx_time_sets(..., flush=True)`` gives for the
    samples in time order (their arrival order in batch), when no queue overflows.

    Samples wait in state until the watermark has passed them, then enter the synchronizer
    in (time, stream, pos) order: a sample earlier than the watermark cannot come any more
    (the reader dead-letters it), so that order is final whatever order Kafka and the runner
    deliver chunks in. The timer (``_arm``) fires at the latest time the buckets of the next
    possible tick are surely open, and by then ``ApproxTimeSync.bound`` (no sample earlier
    than the watermark is still to come) proves a pending candidate: its deadline,
    ``cand_end + (pivot - cand_start) + 1 ns``, is at most max_span after its tick, and
    ``sets_window_margins`` keeps buckets open that long; so a set never waits for a silent
    stream beyond its bucket's window. The timer also holds this stage's output watermark.
    Proving at the deadline publishes the set ROS publishes later,
    unless a queue overflows in between. At the end of input (watermark at infinity) the
    deadlines publish what is pending: as ``flush=True``. Streaming watermarks run on the
    job's shared clock: a session's times there are its reference times + ``shifts``."""

    SYNC = ReadModifyWriteStateSpec("sync", PickleCoder())
    TIMER = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, plans: dict[str, SessionPlan], age_penalty: float | None = None,
                 shifts: dict[str, int] | None = None):
        self.plans = plans
        self.age_penalty = age_penalty
        self.shifts = dict(shifts or {})    # session -> its place on the job's shared clock

    def _new(self, plan: SessionPlan) -> dict:
        penalty = plan.sets_age_penalty if self.age_penalty is None else self.age_penalty
        sync = ApproxTimeSync(len(plan.sets), plan.sets_queue_size, plan.sets_max_span_ns,
                              age_penalty=penalty)
        return {"sync": sync, "waiting": [], "released": None, "timer_us": None, "sets": 0}

    def process(self, element, sync_state=beam.DoFn.StateParam(SYNC),
                timer=beam.DoFn.TimerParam(TIMER)):
        session, (stream_i, t, pos, src) = element
        st = sync_state.read() or self._new(self.plans[session])
        st["waiting"].extend(zip(t.tolist(), [stream_i] * len(t), pos.tolist(), [src] * len(t)))
        self._arm(st, timer, self.plans[session], self.shifts.get(session, 0))
        sync_state.write(st)

    @on_timer(TIMER)
    def release(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
                sync_state=beam.DoFn.StateParam(SYNC), timer=beam.DoFn.TimerParam(TIMER)):
        st = sync_state.read()
        if st is None:
            return
        plan = self.plans[key]
        shift = self.shifts.get(key, 0)
        floor = int(fire.micros) * 1000 - shift  # every sample < floor has arrived
        sync: ApproxTimeSync = st["sync"]
        st["waiting"].sort(key=lambda w: (w[0], w[1], w[2]))
        cut = 0
        sets = []
        for t, i, pos, src in st["waiting"]:
            if t >= floor:
                break
            sets += sync.push(i, t, (pos, src))
            st["released"] = t
            cut += 1
        del st["waiting"][:cut]
        sets += sync.bound(floor)
        st["timer_us"] = None
        if sets:
            ALIGN.count("sets", len(sets))
            yield set_ticks_table(plan, sets, st["sets"])
            st["sets"] += len(sets)
        self._arm(st, timer, plan, shift)
        sync_state.write(st)

    @staticmethod
    def _arm(st: dict, timer, plan: SessionPlan, shift: int) -> None:
        """The timer (it also holds this stage's output watermark): a firing releases every
        waiting sample before it, so it may fire no later than ``sets_safe_until_ns`` of the
        next waiting sample (sets it completes have ticks at or after that sample) and of the
        pending candidate's tick (``bound`` proves it there: at or after its deadline)."""
        want = []
        if st["waiting"]:
            u = min(w[0] for w in st["waiting"])
            want.append(sets_safe_until_ns(plan, u) // 1000)
        sync: ApproxTimeSync = st["sync"]
        if sync.deadline_ns() is not None:
            safe = sets_safe_until_ns(plan, sync.candidate_end_ns())
            want.append(max(safe, sync.deadline_ns()) // 1000)
        if not want:
            return
        at = min(want) + _ceil_us(shift)
        if st["timer_us"] is None or at < st["timer_us"]:
            timer.set(Timestamp(micros=at))
            st["timer_us"] = at


class ApproxSetsStream(beam.PTransform):
    """Clocked chunks (streaming) -> ``TickTable``s of each set session's sets, emitted as the
    watermark makes them final (``ApproxSetsFn``)."""

    def __init__(self, plans: dict[str, SessionPlan], age_penalty: float | None = None,
                 shifts: dict[str, int] | None = None):
        super().__init__()
        self.plans = plans
        self.age_penalty = age_penalty
        self.shifts = shifts

    def expand(self, chunks):
        plans = self.plans

        def members(chunk):
            plan = plans.get(chunk.session_id)
            if plan is None or chunk.stream_id not in plan.sets or not chunk.num_records:
                return
            t = chunk.data.column("t_ns").to_numpy(zero_copy_only=False).astype(np.int64)
            pos = chunk.data.column("pos").to_numpy(zero_copy_only=False).astype(np.int64)
            yield chunk.session_id, (plan.sets.index(chunk.stream_id), t, pos,
                                     chunk.source_uri)

        return (chunks
                | "SetMembers" >> beam.FlatMap(members)
                | "GlobalForSets" >> beam.WindowInto(beam.window.GlobalWindows())
                | "OnlineSets" >> beam.ParDo(ApproxSetsFn(plans, self.age_penalty,
                                                          self.shifts)))


def _plain(col: pa.Array) -> pa.Array:
    """Dictionary arrays decoded, so every bucket file has the same schema (Parquet
    dictionary-encodes repeated strings on disk anyway)."""
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def meta_extents(session_id: str, pieces: list[Piece]) -> dict | None:
    """Extents declared in the pieces' meta (``stream_extents``: {stream: (first, last)}, set
    by a streaming producer that knows them; schemas/message.py), keyed like the side input."""
    for piece in pieces:
        declared = piece.meta.get("stream_extents")
        if declared:
            return {(session_id, s): (int(a), int(b)) for s, (a, b) in declared.items()}
    return None


class AlignBucketFn(beam.DoFn):
    """((session, bucket), pieces) -> ((session, bucket), aligned table); a bucket with no
    ticks yields nothing, or an empty table with ``emit_empty`` (the streaming ledger
    records such buckets as done, so their records are not replayed forever)."""

    def __init__(self, plans: dict[str, SessionPlan], extents_from_meta: bool = False,
                 emit_empty: bool = False):
        self.plans = plans
        self.extents_from_meta = extents_from_meta
        self.emit_empty = emit_empty

    def setup(self):
        ap.warm()            # the kernels, before the first bucket (a no-op once loaded)

    def process(self, element, extents=None):
        (session_id, bucket), pieces = element
        pieces = list(pieces)
        if extents is None and self.extents_from_meta:
            extents = meta_extents(session_id, pieces)
        for piece in pieces:
            if piece.role == "samples" and piece.owned:
                ALIGN.count(metrics.SAMPLES, piece.owned, modality=piece.modality)
        with ALIGN.timed(session=session_id, bucket=bucket):   # time + sampled span
            table = align_bucket(self.plans[session_id], bucket, pieces, extents)
        ALIGN.count(metrics.TICKS, table.num_rows)
        if table.num_rows or self.emit_empty:
            yield (session_id, bucket), table


class AlignBuckets(beam.PTransform):
    """((session, bucket), Piece) -> ((session, bucket), aligned table)."""

    def __init__(self, plans: dict[str, SessionPlan], extents=None,
                 extents_from_meta: bool = False, emit_empty: bool = False):
        super().__init__()
        self.plans = plans
        self.extents = extents   # optional side input PCollection of ((session, stream), span)
        self.extents_from_meta = extents_from_meta   # streaming: extents declared in meta
        self.emit_empty = emit_empty                 # streaming: empty buckets reach the ledger

    def expand(self, keyed_pieces):
        side = {} if self.extents is None else {"extents": beam.pvalue.AsDict(self.extents)}
        return (keyed_pieces
                | "GroupBucket" >> beam.GroupByKey()
                | "JoinBucket" >> beam.ParDo(AlignBucketFn(self.plans, self.extents_from_meta,
                                                           self.emit_empty), **side))


def chunk_extent(chunk) -> tuple[tuple[str, str], tuple[int, int]]:
    """((session, stream), (first, last)) time a clocked chunk covers: segment ends for text,
    the last block's end for audio."""
    t = chunk.data.column("t_ns").to_numpy(zero_copy_only=False)
    if chunk.modality == "text":
        last = int(chunk.data.column("t_end_ns").to_numpy(zero_copy_only=False).max())
    elif chunk.modality == "audio":
        n = chunk.data.column("n_samples").to_numpy(zero_copy_only=False).astype(np.int64)
        pos = chunk.data.column("pos").to_numpy(zero_copy_only=False)
        last = int(ap.audio_blocks_end(t, pos, n, int(chunk.meta["sample_rate"]))[-1])
    else:
        last = int(t.max())
    return chunk.key, (int(t.min()), last)


class StreamExtents(beam.PTransform):
    """Clocked chunks -> ((session, stream), (first, last)) over the whole stream (batch)."""

    def expand(self, chunks):
        def merge(spans):
            spans = list(spans)
            return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None

        return (chunks
                | "Extent" >> beam.Map(chunk_extent)
                | "Span" >> beam.CombinePerKey(merge))


def plan_from_manifest(manifest, start_ns: int | None = None,
                       sample_rates: dict[str, int] | None = None) -> SessionPlan:
    """The session's join plan from its validated manifest (schemas/manifest.py);
    ``start_ns``: the session's wall-clock start (``wallclock.session_start_ns``);
    ``sample_rates``: audio stream -> the lowest rate its files' headers state
    (``decode.audio.audio_rate``): its blocks' length sets its margin (without it the slowest
    rate allowed is assumed: a margin of over 2 s), and rows without samples in their bucket
    still give the stream's rate. Rates validation refuses are ignored here."""
    rates = {k: v for k, v in (sample_rates or {}).items()
             if audio_schema.MIN_RATE <= v <= audio_schema.MAX_RATE}
    streams = []
    for s in manifest.streams:
        pol = manifest.policy_for(s)
        streams.append(StreamPlan(
            stream_id=s.id, modality=s.modality, policy=pol.policy,
            tolerance_ns=round(pol.tolerance_ms * 1e6), max_gap_ns=round(pol.max_gap_ms * 1e6),
            window_ns=round(pol.window_ms * 1e6),
            channels=tuple(s.options.get("channels") or ()),
            sample_rate=rates.get(s.id) if s.modality == "audio" else None,
            block_samples=DecodeOptions.of(s.options).block_samples if s.modality == "audio"
            else DecodeOptions().block_samples))
    t = manifest.alignment.ticks
    return SessionPlan(
        session_id=manifest.session, streams=tuple(streams),
        bucket_ns=round(manifest.alignment.bucket_s * 1e9) // 1000 * 1000,
        anchor=SETS_STREAM if t.sets else t.anchor, rate_hz=t.rate_hz,
        sets=tuple(t.sets.streams) if t.sets else (),
        sets_max_span_ns=round(t.sets.max_span_ms * 1e6) if t.sets else 0,
        sets_queue_size=t.sets.queue_size if t.sets else 64,
        sets_age_penalty=t.sets.age_penalty if t.sets else 0.1,
        sets_flush=t.sets.flush if t.sets else False,
        start_ns=start_ns,
        params={"start_ns": start_ns, "ticks": t.model_dump(exclude_none=True),
                "bucket_s": manifest.alignment.bucket_s,
                "policies": {s.id: manifest.policy_for(s).model_dump() for s in manifest.streams}})
