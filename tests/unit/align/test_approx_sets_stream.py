"""Streaming approximate-time sets (``ApproxSetsStream``: state + event-time timers) against the
batch function on the same samples: chunks arrive out of order across streams, in bursts, with
the watermark behind them, and the sets equal ``approx_time_sets(..., flush=True)`` over the
samples in time order."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from mmalign.schemas.chunk import Chunk
from mmalign.transforms.align.approx_sets import ApproxTimeSync, approx_time_sets
from mmalign.transforms.align.join import (
    SETS_STREAM,
    ApproxSetsStream,
    SessionPlan,
    StreamPlan,
    sets_safe_until_ns,
    sets_window_margins,
)

MS = 1_000_000
_GOT: list[dict] = []        # the DirectRunner runs in this process: outputs land here


def _keep(row: dict) -> None:
    _GOT.append(row)


def streams(seed: int):
    rng = np.random.default_rng(seed)
    cam = np.cumsum(rng.normal(33.3 * MS, 2 * MS, 120)).astype(np.int64) + 1_000 * MS
    imu = np.cumsum(rng.normal(5 * MS, 0.4 * MS, 800)).astype(np.int64) + 1_000 * MS
    imu = imu[rng.random(len(imu)) > 0.05]                        # dropped IMU samples
    return {"cam": np.sort(cam), "imu": np.sort(imu)}


def plan(max_span_ns: int, queue: int) -> SessionPlan:
    sp = [StreamPlan(s, "sensor", "nearest", 10 * MS, 10 * MS, 10 * MS) for s in ("cam", "imu")]
    return SessionPlan("s", tuple(sp), bucket_ns=1000 * MS, anchor=SETS_STREAM,
                       sets=("cam", "imu"), sets_max_span_ns=max_span_ns, sets_queue_size=queue)


def chunks(times: dict[str, np.ndarray], rows: int) -> list[Chunk]:
    out = []
    for sid, t in times.items():
        for seq, lo in enumerate(range(0, len(t), rows)):
            tt = t[lo:lo + rows]
            data = pa.record_batch([pa.array(tt), pa.array(np.arange(lo, lo + len(tt)))],
                                   names=["t_ns", "pos"])
            out.append(Chunk("s", sid, "sensor", seq, f"file://{sid}", data, clock="reference"))
    return out


def stream_sets(times, p: SessionPlan, seed: int, lag_ns: int) -> list[tuple]:
    """Run ``ApproxSetsStream`` over shuffled chunks: every chunk is added before the
    watermark passes its first sample; the watermark trails the latest delivered time by
    ``lag_ns``, then goes to infinity."""
    rng = np.random.default_rng(seed)
    cs = chunks(times, rows=int(rng.integers(7, 40)))
    # deliver roughly by time, shuffled within windows of ~0.6 s (streams interleave freely)
    key = np.array([int(c.t_ns()[0]) for c in cs]) + rng.integers(0, 600 * MS, len(cs))
    cs = [cs[i] for i in np.argsort(key, kind="stable")]
    ts = TestStream()
    pending_min = []
    latest = 0
    watermark = 0
    for c in cs:
        first = int(c.t_ns()[0])
        ts.add_elements([TimestampedValue(c, Timestamp(micros=first // MS * 1000))])  # ms
        latest = max(latest, int(c.t_ns()[-1]))
        pending_min.append(first)
        # the watermark may pass a time only once no chunk still to come starts before it
        rest = [int(x.t_ns()[0]) for x in cs[cs.index(c) + 1:]]
        target = min([latest - lag_ns, *rest]) if rest else latest - lag_ns
        target = target // MS * MS
        if target > watermark:
            watermark = target
            ts.advance_watermark_to(Timestamp(micros=watermark // MS * 1000))
    ts.advance_watermark_to_infinity()
    _GOT.clear()
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner="DirectRunner", options=opts) as pipe:
        (pipe | ts | ApproxSetsStream({"s": p})
         | beam.FlatMap(lambda tt: tt.data.to_pylist()) | beam.Map(_keep))
    got = sorted(_GOT, key=lambda r: r["pos"])
    return [(r["cam__pos"], r["imu__pos"], r["cam__t_ns"], r["imu__t_ns"]) for r in got]


def batch_sets(times, p: SessionPlan) -> list[tuple]:
    t = [times["cam"], times["imu"]]
    idx = approx_time_sets(t, p.sets_max_span_ns, p.sets_queue_size, flush=True)
    return [(int(a), int(b), int(t[0][a]), int(t[1][b])) for a, b in idx]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_sets_equal_batch_sets(seed):
    times = streams(seed)
    p = plan(3 * MS, 64)
    want = batch_sets(times, p)
    got = stream_sets(times, p, seed, lag_ns=300 * MS)
    assert len(want) > 50
    assert got == want
    # ticks are numbered in order, each member used once
    assert len({g[0] for g in got}) == len(got) == len({g[1] for g in got})


def test_a_set_is_final_by_its_deadline_without_the_silent_stream():
    """cam and imu pair at 10/11 ms, then both fall silent. ROS waits for a next sample; a
    watermark at the deadline (<= tick + max_span) proves the set instead."""
    sync = ApproxTimeSync(2, 10, 3 * MS)
    assert sync.push(0, 10 * MS, "c0") == []
    assert sync.push(1, 11 * MS, "i0") == []
    d = sync.deadline_ns()
    assert d is not None and 11 * MS < d <= 11 * MS + 3 * MS
    assert sync.bound(11 * MS) == []              # a cam sample at 11 ms would be better
    assert sync.bound(d) == [(("c0", "i0"), (10 * MS, 11 * MS))]
    assert sync.deadline_ns() is None


def test_window_margins_keep_set_buckets_open_for_max_span():
    p = plan(3 * MS, 64)
    assert sets_window_margins({"s": p, "x": SessionPlan("x", (), 1000 * MS)}) == {
        ("s", SETS_STREAM): 3 * MS + 2 * MS}
    # with one_to_one streams ticks reach the buckets around them: their margin adds up
    sp = StreamPlan("cam", "sensor", "one_to_one", 10 * MS, 10 * MS, 10 * MS)
    p2 = SessionPlan("s", (sp,), 1000 * MS, anchor=SETS_STREAM, sets=("cam", "imu"),
                     sets_max_span_ns=3 * MS)
    assert sets_window_margins({"s": p2})[("s", SETS_STREAM)] == p2.tick_margin_ns() + 5 * MS
    # the safe firing time: the first bucket's end + hold - 1 ms, past tick + max_span
    for tick in (0, 5 * MS, 999 * MS, 1000 * MS, 1001 * MS + 7):
        safe = sets_safe_until_ns(p2, tick)
        first_bucket = (tick - p2.tick_margin_ns()) // (1000 * MS)
        window_end = (first_bucket + 1) * 1000 * MS + sets_window_margins({"s": p2})[
            ("s", SETS_STREAM)]
        assert tick + 3 * MS + MS <= safe < window_end
