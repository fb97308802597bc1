"""Time buckets: how a session's time axis is cut so the join parallelises and stays exact.

Bucket ``b`` owns the ticks with ``b*B <= t < (b+1)*B``. It also sees every sample in
``[b*B - M, (b+1)*B + M)``, where the margin M of a stream is what its join policy needs to
decide a tick near the edge exactly as a whole-session join would (``required_margin_ns`` in
transforms/align/policies.py). Text segments are intervals: a segment goes to every bucket its
``[t_ns, t_end_ns]`` (widened by M) touches.

In Beam every bucket element is keyed ``(session_id, b)`` and stamped at the bucket's close,
``(b+1)*B + M_max - 1us``, then windowed into ``FixedWindows(B, offset=M_max)``: window k is
``[k*B + M, (k+1)*B + M)``, so a bucket's window closes only when the watermark has passed its
last margin sample. The same transform serves batch (watermark at infinity) and streaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from mmalign.schemas.chunk import Chunk, TickTable

NS_PER_US = 1000
NS_PER_MS = 1_000_000


NOT_SHUFFLED = ("pcm", "image")   # payload columns bucket pieces never carry (_with_src)


@dataclass(frozen=True)
class Piece:
    """A slice of one stream's samples (or ticks) that one bucket needs."""
    stream_id: str
    modality: str
    role: str                 # "samples" | "ticks"
    data: pa.RecordBatch      # chunk rows, plus a ``src`` column (source uri per row)
    meta: dict
    owned: int                # rows whose time falls in the bucket itself (not the margin)


def bucket_range(t_min: int, t_max: int, bucket_ns: int, margin_ns: int) -> range:
    """Buckets whose widened span [b*B - M, (b+1)*B + M) can hold a time in [t_min, t_max]."""
    return range((t_min - margin_ns) // bucket_ns, (t_max + margin_ns) // bucket_ns + 1)


def touched_buckets(t: np.ndarray, bucket_ns: int, margin_ns: int) -> np.ndarray:
    """The sorted buckets whose widened span holds at least one of the times ``t``: O(n log n)
    in the number of times, whatever the time span (a stray far-off time costs one bucket,
    never a loop over every bucket in between). Needs ``margin_ns < bucket_ns``."""
    t = np.asarray(t, np.int64)
    if t.size == 0:
        return np.zeros(0, np.int64)
    b = np.concatenate([(t - margin_ns) // bucket_ns, t // bucket_ns,
                        (t + margin_ns) // bucket_ns])
    return np.unique(b)


def point_slices(t: np.ndarray, bucket_ns: int, margin_ns: int):
    """(b, lo, hi, owned) row ranges of sorted times ``t`` per bucket, margins included."""
    if t.size == 0:
        return
    buckets = touched_buckets(t, bucket_ns, margin_ns)
    start = buckets * bucket_ns
    lo = np.searchsorted(t, start - margin_ns, side="left")
    hi = np.searchsorted(t, start + bucket_ns + margin_ns, side="left")
    o_lo = np.searchsorted(t, start, side="left")
    o_hi = np.searchsorted(t, start + bucket_ns, side="left")
    for b, a, z, oa, oz in zip(buckets.tolist(), lo.tolist(), hi.tolist(), o_lo.tolist(),
                               o_hi.tolist()):
        if z > a:
            yield b, a, z, oz - oa


def interval_buckets(start: np.ndarray, end: np.ndarray, bucket_ns: int, margin_ns: int):
    """(b, row indices, owned) for intervals: every bucket an interval (widened by M) touches.
    A row is owned by the bucket holding its start. Cost: the number of (bucket, row) pairs
    produced, never the time span between the earliest and the latest interval."""
    if start.size == 0:
        return
    start = np.asarray(start, np.int64)
    first = (start - margin_ns) // bucket_ns
    last = (np.maximum(end, start) + margin_ns) // bucket_ns
    counts = last - first + 1
    rows = np.repeat(np.arange(start.size), counts)
    step = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    b = first[rows] + step
    order = np.argsort(b, kind="stable")
    b, rows = b[order], rows[order]
    cuts = np.flatnonzero(np.diff(b)) + 1
    owner = start // bucket_ns
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, b.size].tolist()):
        r = rows[lo:hi]
        yield int(b[lo]), r, int(np.count_nonzero(owner[r] == b[lo]))


def _with_src(chunk: Chunk) -> pa.RecordBatch:
    src = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(chunk.data.num_rows, np.int32)), pa.array([chunk.source_uri]))
    data = chunk.data
    drop = [c for c in NOT_SHUFFLED if c in data.schema.names]
    if drop:
        data = data.drop_columns(drop)
    return data.append_column("src", src)


def chunk_pieces(chunk: Chunk | TickTable, *, bucket_ns: int, margin_ns: int,
                 is_anchor: bool, tick_margin_ns: int = 0):
    """Yield (bucket, Piece) for one clocked chunk (times sorted: validation guarantees it).
    An anchor stream's rows are also ticks: each bucket gets its own ticks plus those within
    ``tick_margin_ns`` of its edges (one-to-one association needs its neighbours' ticks). A
    ``TickTable`` (approximate-time sets) is ticks only."""
    ticks_only = isinstance(chunk, TickTable)
    data = chunk.data if ticks_only else _with_src(chunk)
    modality = "ticks" if ticks_only else chunk.modality
    t = data.column("t_ns").to_numpy(zero_copy_only=False)
    if ticks_only:
        pass
    elif chunk.modality == "text":
        end = data.column("t_end_ns").to_numpy(zero_copy_only=False)
        for b, rows, owned in interval_buckets(t, end, bucket_ns, margin_ns):
            yield b, Piece(chunk.stream_id, chunk.modality, "samples",
                           data.take(pa.array(rows)), chunk.meta, owned)
    else:
        for b, lo, hi, owned in point_slices(t, bucket_ns, margin_ns):
            yield b, Piece(chunk.stream_id, chunk.modality, "samples",
                           data.slice(lo, hi - lo), chunk.meta, owned)
    if is_anchor or ticks_only:
        for b, lo, hi, owned in point_slices(t, bucket_ns, tick_margin_ns):
            yield b, Piece(chunk.stream_id, modality, "ticks",
                           data.slice(lo, hi - lo), chunk.meta, owned)


def bucket_close_us(b: int, bucket_ns: int, window_margin_ns: int) -> int:
    """The event time (Beam micros) a bucket's elements carry: the last millisecond of its
    window [b*B + M, (b+1)*B + M). Milliseconds, because Beam's Java runners (Flink, Dataflow)
    keep timestamps in ms: a µs stamp would be moved out of its window there."""
    close_ms = ((b + 1) * bucket_ns + window_margin_ns) // NS_PER_MS
    return (close_ms - 1) * 1000


class AssignBucketsFn(beam.DoFn):
    def __init__(self, bucket_ns: int, margins: dict[tuple[str, str], int],
                 anchors: dict[str, str | None], tick_margins: dict[str, int],
                 window_margin_ns: int, shifts: dict[str, int] | None = None):
        self.bucket_ns = bucket_ns
        self.margins = margins
        self.anchors = anchors
        self.tick_margins = tick_margins
        self.window_margin_ns = window_margin_ns
        self.shifts = shifts or {}

    def process(self, chunk: Chunk):
        for b, piece in chunk_pieces(chunk, bucket_ns=self.bucket_ns,
                                     margin_ns=self.margins.get(chunk.key, 0),
                                     is_anchor=chunk.stream_id == self.anchors.get(
                                         chunk.session_id),
                                     tick_margin_ns=self.tick_margins.get(chunk.session_id, 0)):
            ts = Timestamp(micros=bucket_close_us(b, self.bucket_ns, self.window_margin_ns)
                           + self.shifts.get(chunk.session_id, 0) // NS_PER_US)
            yield TimestampedValue(((chunk.session_id, b), piece), ts)


class AssignBuckets(beam.PTransform):
    """Clocked chunks -> ((session_id, bucket), Piece), windowed so a bucket closes after its
    margin. ``margins``: (session, stream) -> margin in ns (rounded up to whole microseconds);
    ``anchors``: session -> anchor stream (or None for fixed-rate ticks); ``tick_margins``:
    session -> how far beyond its edges a bucket needs the ticks."""

    def __init__(self, bucket_ns: int, margins: dict[tuple[str, str], int],
                 anchors: dict[str, str | None], tick_margins: dict[str, int] | None = None,
                 shifts: dict[str, int] | None = None):
        super().__init__()
        self.shifts = dict(shifts or {})
        if any(v % bucket_ns for v in self.shifts.values()):
            raise ValueError("session clock shifts must be whole bucket widths")
        if bucket_ns % NS_PER_MS:
            raise ValueError("bucket width must be a whole number of milliseconds")
        self.bucket_ns = bucket_ns
        self.margins = {k: -(-v // NS_PER_US) * NS_PER_US for k, v in margins.items()}
        self.anchors = anchors
        self.tick_margins = tick_margins or {}
        self.window_margin_ns = max([*self.margins.values(), *self.tick_margins.values()],
                                    default=0)
        # whole ms, so windows and stamps are exact on runners with ms timestamps
        self.window_margin_ns = -(-self.window_margin_ns // NS_PER_MS) * NS_PER_MS
        if self.window_margin_ns >= bucket_ns:
            raise ValueError(
                f"alignment margin {self.window_margin_ns / 1e9:.3f} s is not smaller than the "
                f"bucket width {bucket_ns / 1e9:.3f} s; raise alignment.bucket_s")

    def fn(self) -> AssignBucketsFn:
        """The DoFn this transform applies (also called per slice: pipelines/time_slices.py)."""
        return AssignBucketsFn(self.bucket_ns, self.margins, self.anchors, self.tick_margins,
                               self.window_margin_ns, self.shifts)

    def expand(self, chunks):
        return (chunks
                | "SliceIntoBuckets" >> beam.ParDo(self.fn())
                | "BucketWindows" >> beam.WindowInto(FixedWindows(
                    Duration(micros=self.bucket_ns // NS_PER_US),
                    offset=Timestamp(micros=self.window_margin_ns // NS_PER_US))))
