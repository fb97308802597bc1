"""The core join (transforms/align/join.py) on small hand-made Arrow tables: ``join_stream`` for
each policy, ``fixed_rate_ticks``, anchor and fixed-rate ticks in ``align_bucket``, a bucket
seeing the next bucket's samples in its margin, and a session joined bucket by bucket (cut by
``chunk_pieces``) equal to the same session joined as one bucket.

Expected values are worked out by hand (or by a plain loop over the samples) in the test, never
by calling the code under test; the aligned columns are named ``<stream>__<field>``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from mmalign.schemas.chunk import Chunk
from mmalign.transforms.align.buckets import chunk_pieces
from mmalign.transforms.align.join import (
    SessionPlan,
    StreamPlan,
    align_bucket,
    fixed_rate_ticks,
    join_stream,
)

MS = 1_000_000
S = 1_000_000_000
I64 = pa.int64()


def ms(*values: float) -> np.ndarray:
    return np.array([round(v * MS) for v in values], np.int64)


def plan(stream_id: str, modality: str, policy: str, *, tolerance_ms: float = 0,
         max_gap_ms: float = 0, window_ms: float = 0, channels=()) -> StreamPlan:
    return StreamPlan(stream_id, modality, policy, tolerance_ns=round(tolerance_ms * MS),
                      max_gap_ns=round(max_gap_ms * MS), window_ns=round(window_ms * MS),
                      channels=tuple(channels))


def col(cols: dict, name: str) -> list:
    return cols[name].to_pylist()


def in_ms(values: list) -> list:
    return [None if v is None else v / MS for v in values]


# ---------------------------------------------------------------- fixed-rate ticks


def brute_ticks(start: int, end: int, rate_hz: float, t_lo: int, t_hi: int) -> list[int]:
    period = round(1e9 / rate_hz)
    lo, hi = max(start, t_lo), min(end - 1, t_hi)
    k = lo // period - 2
    out = []
    while k * period <= hi:
        if k * period >= lo:
            out.append(k * period)
        k += 1
    return out


@pytest.mark.parametrize("start,end,rate,t_lo,t_hi", [
    (0, S, 10.0, 0, 10 * S),                              # [0, 1 s): 0 .. 900 ms
    (0, S, 10.0, 250 * MS, 720 * MS),                     # inside the data: 300 .. 700 ms
    (-250 * MS, 250 * MS, 10.0, -10 * S, 10 * S),         # negative times: whole periods
    (0, 300 * MS, 10.0, 0, 300 * MS),                     # end excluded
    (0, S, 10.0, 0, 300 * MS),                            # last data time included
    (2 * S, 3 * S, 30.0, 0, 10 * S),                      # 33_333_333 ns period
    (0, S, 10.0, 500 * MS, 400 * MS),                     # no data: no ticks
    (5 * S, 6 * S, 10.0, 0, 4 * S),                       # data ends before the bucket
])
def test_fixed_rate_ticks_are_whole_periods_inside_bucket_and_data(start, end, rate, t_lo, t_hi):
    got = fixed_rate_ticks(start, end, rate, t_lo, t_hi)
    assert got.dtype == np.int64
    assert got.tolist() == brute_ticks(start, end, rate, t_lo, t_hi)


def test_fixed_rate_ticks_by_hand():
    assert fixed_rate_ticks(0, S, 10.0, 250 * MS, 720 * MS).tolist() == \
        [300 * MS, 400 * MS, 500 * MS, 600 * MS, 700 * MS]
    assert fixed_rate_ticks(-250 * MS, 250 * MS, 10.0, -S, S).tolist() == \
        [-200 * MS, -100 * MS, 0, 100 * MS, 200 * MS]
    assert fixed_rate_ticks(0, 100 * MS, 30.0, 0, S).tolist() == [0, 33_333_333, 66_666_666,
                                                                  99_999_999]


# ---------------------------------------------------------------- join_stream, one policy each


def video_table(t_ms, src="cam.mp4") -> pa.Table:
    n = len(t_ms)
    return pa.table({"t_ns": pa.array(ms(*t_ms), I64), "pos": pa.array(range(n), I64),
                     "src": [src] * n, "file": [f"f{i}.png" for i in range(n)]})


def test_nearest_within_tolerance_and_out_of_range_at_both_ends():
    p = plan("cam", "video", "nearest", tolerance_ms=10)
    samples = video_table([100, 205, 290, 500])
    ticks = ms(50, 100, 200, 300, 400, 600)
    cols = join_stream(p, ticks, samples)
    # 50: before the first sample; 100: exact; 200 -> 205 (+5); 300 -> 290 (-10: the
    # tolerance is inclusive); 400: 100 ms from 500 and 110 from 290; 600: after the last
    assert col(cols, "cam__status") == ["out_of_range", "ok", "ok", "ok",
                                        "no_sample_in_tolerance", "out_of_range"]
    assert in_ms(col(cols, "cam__dt_ns")) == [None, 0, 5, -10, None, None]
    assert in_ms(col(cols, "cam__t_ns")) == [None, 100, 205, 290, None, None]
    assert col(cols, "cam__pos") == [None, 0, 1, 2, None, None]
    assert col(cols, "cam__src") == [None, "cam.mp4", "cam.mp4", "cam.mp4", None, None]
    assert col(cols, "cam__file") == [None, "f0.png", "f1.png", "f2.png", None, None]
    # with the whole stream's extent wider than these samples, the ends are plain misses
    wide = join_stream(p, ticks, samples, bounds=(0, 10 * S))
    assert col(wide, "cam__status") == ["no_sample_in_tolerance", "ok", "ok", "ok",
                                        "no_sample_in_tolerance", "no_sample_in_tolerance"]


def test_nearest_tie_goes_to_the_earlier_sample_and_no_table_is_all_missing():
    p = plan("cam", "video", "nearest", tolerance_ms=60)
    cols = join_stream(p, ms(150), video_table([100, 200]))
    assert col(cols, "cam__pos") == [0] and in_ms(col(cols, "cam__dt_ns")) == [-50]
    empty = join_stream(p, ms(0, 10), None)
    assert col(empty, "cam__status") == ["out_of_range"] * 2
    assert col(empty, "cam__t_ns") == [None, None] and col(empty, "cam__src") == [None, None]


def sensor_table(t_ms, x) -> pa.Table:
    n = len(t_ms)
    return pa.table({"t_ns": pa.array(ms(*t_ms), I64), "pos": pa.array(range(n), I64),
                     "x": pa.array(x, pa.float64()), "src": ["imu.csv"] * n})


def test_interpolate_across_a_short_gap_but_not_a_long_one():
    p = plan("imu", "sensor", "interpolate", max_gap_ms=20, channels=["x"])
    samples = sensor_table([0, 10, 30, 70, 80], [0.0, 10.0, 30.0, 100.0, 50.0])
    ticks = ms(-5, 0, 5, 20, 50, 75, 80, 85)
    cols = join_stream(p, ticks, samples)
    # 5: 0..10 halfway; 20: 10..30 is exactly max_gap wide, halfway; 50: 30..70 is 40 ms wide;
    # 75: 70..80 halfway; 0 and 80 are samples themselves
    assert col(cols, "imu__status") == ["out_of_range", "ok", "ok", "ok", "gap_too_large", "ok",
                                        "ok", "out_of_range"]
    assert col(cols, "imu__x") == [None, 0.0, 5.0, 20.0, None, 75.0, 50.0, None]
    assert col(cols, "imu__pos") == [None, 0, 0, 1, None, 3, 4, None]
    assert col(cols, "imu__pos_right") == [None, 0, 1, 2, None, 4, 4, None]
    # signed: the nearer bracketing sample's time - the tick (the earlier one on a tie)
    assert in_ms(col(cols, "imu__dt_ns")) == [None, 0, -5, -10, None, -5, 0, None]
    assert col(cols, "imu__src") == [None] + ["imu.csv"] * 3 + [None] + ["imu.csv"] * 2 + [None]


def audio_table(blocks: list[tuple[int, int]], n: int, sr: int) -> pa.Table:
    """Blocks (first sample index, n samples each) timed at pos / sr."""
    pos = [b for b, _ in blocks]
    return pa.table({"t_ns": pa.array([p * S // sr for p in pos], I64),
                     "pos": pa.array(pos, I64),
                     "n_samples": pa.array([k for _, k in blocks], pa.int32()),
                     "src": ["mic.wav"] * len(pos)})


def brute_window(tick: int, w: int, blocks: list[tuple[int, int]], sr: int):
    """(sample_start, sample_end, coverage, status) from the samples' own times: blocks of
    samples at pos / sr, a block covering [its first sample, its last sample + 1 / sr)."""
    a, b = tick - w // 2, tick - w // 2 + w
    times = [(p, p * S // sr) for first, k in blocks for p in range(first, first + k)]
    inside = [p for p, t in times if a <= t < b]
    spans = [(first * S // sr, (first + k) * S // sr) for first, k in blocks]
    covered = sum(max(0, min(b, hi) - max(a, lo)) for lo, hi in spans)
    if covered == w:
        status = "ok"
    elif covered > 0:
        status = "partial_window"
    elif b <= spans[0][0] or a >= spans[-1][1]:
        status = "out_of_range"
    else:
        status = "empty_window"
    return ((min(inside), max(inside) + 1) if inside else (None, None)), covered / w, status


def test_audio_window_coverage_by_hand_and_by_sample_loop():
    sr, w = 1000, 50 * MS                          # 1 sample per ms; 50 ms windows
    blocks = [(0, 100), (100, 100), (300, 100)]    # samples 200..299 lost: a 100 ms hole
    p = plan("mic", "audio", "audio_window", window_ms=50)
    ticks = ms(-30, 0, 50, 190, 250, 310, 420, 440)
    cols = join_stream(p, ticks, audio_table(blocks, 100, sr), {"sample_rate": sr})
    assert col(cols, "mic__status") == ["out_of_range", "partial_window", "ok", "partial_window",
                                        "empty_window", "partial_window", "partial_window",
                                        "out_of_range"]
    assert col(cols, "mic__sample_start") == [None, 0, 25, 165, None, 300, 395, None]
    assert col(cols, "mic__sample_end") == [None, 25, 75, 200, None, 335, 400, None]
    assert col(cols, "mic__coverage") == pytest.approx([0, 0.5, 1, 0.7, 0, 0.7, 0.1, 0])
    assert col(cols, "mic__sample_rate") == [sr] * 8
    assert col(cols, "mic__src") == [None, "mic.wav", "mic.wav", "mic.wav", None, "mic.wav",
                                     "mic.wav", None]
    for i, tick in enumerate(ticks.tolist()):
        (s0, s1), cov, status = brute_window(tick, w, blocks, sr)
        assert (col(cols, "mic__sample_start")[i], col(cols, "mic__sample_end")[i]) == (s0, s1)
        assert col(cols, "mic__coverage")[i] == pytest.approx(cov)
        assert col(cols, "mic__status")[i] == status


def test_text_overlap_touching_and_nested_cues():
    p = plan("sub", "text", "text_overlap")
    cues = pa.table({"t_ns": pa.array(ms(1000, 2000, 2500, 5000), I64),
                     "t_end_ns": pa.array(ms(2000, 3000, 2600, 6000), I64),
                     "pos": pa.array([0, 1, 2, 3], I64), "text": ["a", "b", "c", "d"],
                     "src": ["sub.srt"] * 4})
    ticks = ms(500, 1000, 2000, 2550, 3000, 4000, 6000)
    cols = join_stream(p, ticks, cues)
    # cue intervals are closed: 2000 is in "a" (ends) and "b" (starts); 3000 still in "b"
    assert col(cols, "sub__status") == ["no_overlap", "ok", "ok", "ok", "ok", "no_overlap", "ok"]
    assert col(cols, "sub__text") == [None, "a", "a\nb", "b\nc", "b", None, "d"]
    assert col(cols, "sub__cues") == [[], [0], [0, 1], [1, 2], [1], [], [3]]
    assert col(cols, "sub__src") == [None, "sub.srt", "sub.srt", "sub.srt", "sub.srt", None,
                                     "sub.srt"]


def test_one_to_one_each_sample_used_once():
    p = plan("cam1", "video", "one_to_one", tolerance_ms=30)
    samples = video_table([10, 95, 120, 290, 310, 800], src="cam1.mp4")
    ticks = ms(0, 100, 110, 132, 300, 400, 900)
    cols = join_stream(p, ticks, samples)
    # pairs within 30 ms by |dt|: (100, 95) 5, (0, 10) 10, (110, 120) 10, (300, 290) 10 and
    # (300, 310) 10 (a tie: the earlier sample), (132, 120) 12 -- 120 is gone: 132 "taken";
    # (110, 95) 15 and (100, 120) 20 -- both members used. 400: nothing within 30 ms; 900:
    # after the last sample. The samples at 310 and 800 stay unused.
    assert col(cols, "cam1__status") == ["ok", "ok", "ok", "taken", "ok",
                                         "no_sample_in_tolerance", "out_of_range"]
    assert col(cols, "cam1__pos") == [0, 1, 2, None, 3, None, None]
    assert in_ms(col(cols, "cam1__dt_ns")) == [10, -5, 10, None, -10, None, None]
    assert in_ms(col(cols, "cam1__t_ns")) == [10, 95, 120, None, 290, None, None]


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown policy"):
        join_stream(plan("x", "video", "closest"), ms(0), video_table([0]))


# ---------------------------------------------------------------- align_bucket: ticks and edges


def chunk(stream_id: str, modality: str, data: dict, schema: pa.Schema, uri: str,
          meta: dict | None = None) -> Chunk:
    batch = pa.RecordBatch.from_pydict(data, schema=schema)
    return Chunk("s1", stream_id, modality, 0, uri, batch, meta or {}, clock="reference")


POINT = pa.schema([("t_ns", I64), ("pos", I64)])
SENSOR = pa.schema([("t_ns", I64), ("pos", I64), ("x", pa.float64())])
AUDIO = pa.schema([("t_ns", I64), ("pos", I64), ("n_samples", pa.int32())])
TEXT = pa.schema([("t_ns", I64), ("t_end_ns", I64), ("pos", I64), ("text", pa.string())])


def video_chunk(stream_id: str, t: np.ndarray) -> Chunk:
    return chunk(stream_id, "video", {"t_ns": t, "pos": np.arange(len(t))}, POINT,
                 f"{stream_id}.mp4")


def sensor_chunk(stream_id: str, t: np.ndarray, x: np.ndarray, pos0: int = 0,
                 uri: str = "imu.csv") -> Chunk:
    return chunk(stream_id, "sensor", {"t_ns": t, "pos": pos0 + np.arange(len(t)), "x": x},
                 SENSOR, uri)


def pieces_by_bucket(plan_: SessionPlan, chunks: list[Chunk]) -> dict[int, list]:
    """What the bucketing hands each bucket: every chunk cut by chunk_pieces with its stream's
    margin (and the tick margin for the anchor)."""
    margins = plan_.margins()
    out: dict[int, list] = {}
    for c in chunks:
        for b, piece in chunk_pieces(c, bucket_ns=plan_.bucket_ns, margin_ns=margins[c.stream_id],
                                     is_anchor=c.stream_id == plan_.anchor,
                                     tick_margin_ns=plan_.tick_margin_ns()):
            out.setdefault(b, []).append(piece)
    return out


def test_fixed_rate_ticks_of_a_bucket():
    imu = plan("imu", "sensor", "nearest", tolerance_ms=5, channels=["x"])
    sp = SessionPlan("s1", (imu,), bucket_ns=S, rate_hz=10.0)
    t = ms(*range(230, 1391, 10))                            # 230 .. 1390 ms, every 10 ms
    c = sensor_chunk("imu", t, np.arange(len(t), dtype=np.float64))
    buckets = pieces_by_bucket(sp, [c])
    assert sorted(buckets) == [0, 1]
    b0 = align_bucket(sp, 0, buckets[0])
    # ticks: whole 100 ms inside [0, 1 s) and inside the data [230 ms, 1390 ms]
    assert b0.column("tick_ns").to_pylist() == ms(300, 400, 500, 600, 700, 800, 900).tolist()
    assert b0.column("tick_pos").to_pylist() == [3, 4, 5, 6, 7, 8, 9]
    assert b0.column("bucket").to_pylist() == [0] * 7
    assert b0.column("session_id").to_pylist() == ["s1"] * 7
    assert b0.column("tick_time").type == pa.timestamp("ns", tz="UTC")
    # no wall-clock start and ticks before 2000-01-01: not a wall-clock time
    assert b0.column("tick_time").to_pylist() == [None] * 7
    start = 1_767_258_000 * S                                 # 2026-01-01T09:00:00Z
    utc = dataclasses.replace(sp, start_ns=start)
    assert align_bucket(utc, 0, buckets[0]).column("tick_time").cast(I64).to_pylist() == [
        start + t for t in ms(300, 400, 500, 600, 700, 800, 900).tolist()]
    assert b0.column("imu__status").to_pylist() == ["ok"] * 7
    assert b0.column("imu__x").to_pylist() == [7.0, 17.0, 27.0, 37.0, 47.0, 57.0, 67.0]
    b1 = align_bucket(sp, 1, buckets[1])
    assert b1.column("tick_ns").to_pylist() == ms(1000, 1100, 1200, 1300).tolist()
    assert b1.column("tick_pos").to_pylist() == [10, 11, 12, 13]
    assert b1.column("bucket").to_pylist() == [1] * 4


def test_fixed_rate_ticks_do_not_depend_on_where_the_buckets_cut():
    cam = plan("cam", "video", "nearest", tolerance_ms=16)
    t = np.rint((5 + np.arange(300) * 1000 / 30) * MS).astype(np.int64)   # 30 fps from 5 ms
    sp = SessionPlan("s1", (cam,), bucket_ns=S, rate_hz=10.0)
    pieces = pieces_by_bucket(sp, [video_chunk("cam", t)])
    extents = {("s1", "cam"): (int(t[0]), int(t[-1]))}
    got = [v for b in sorted(pieces)
           for v in align_bucket(sp, b, pieces[b], extents).column("tick_ns").to_pylist()]
    # the whole session's ticks: every 100 ms from the first frame (5 ms) to the last (9972 ms)
    assert got == [k * 100 * MS for k in range(1, 100)]


def test_anchor_ticks_are_the_anchor_samples_of_the_bucket():
    cam = plan("cam", "video", "nearest", tolerance_ms=5)
    imu = plan("imu", "sensor", "nearest", tolerance_ms=20, channels=["x"])
    sp = SessionPlan("s1", (cam, imu), bucket_ns=S, anchor="cam")
    cam_t = ms(40, 500, 990, 1010, 1500)
    imu_t = ms(30, 960, 1005, 1030)
    chunks = [video_chunk("cam", cam_t), sensor_chunk("imu", imu_t, np.array([1., 2., 3., 4.]))]
    buckets = pieces_by_bucket(sp, chunks)
    b0 = align_bucket(sp, 0, buckets[0])
    assert b0.column("tick_ns").to_pylist() == ms(40, 500, 990).tolist()
    assert b0.column("tick_pos").to_pylist() == [0, 1, 2]          # the anchor's frame numbers
    assert b0.column("cam__dt_ns").to_pylist() == [0, 0, 0]        # the anchor joins itself
    # 990 is 30 ms from 960 and 15 ms from 1005: a sample of bucket 1, in bucket 0's margin
    assert in_ms(b0.column("imu__t_ns").to_pylist()) == [30, None, 1005]
    assert b0.column("imu__status").to_pylist() == ["ok", "no_sample_in_tolerance", "ok"]
    assert b0.column("imu__x").to_pylist() == [1.0, None, 3.0]
    b1 = align_bucket(sp, 1, buckets[1])
    assert b1.column("tick_ns").to_pylist() == ms(1010, 1500).tolist()
    assert in_ms(b1.column("imu__t_ns").to_pylist()) == [1005, None]
    assert b1.column("imu__status").to_pylist() == ["ok", "out_of_range"]


def test_a_bucket_sees_the_next_buckets_samples_in_its_margin_only():
    imu = plan("imu", "sensor", "nearest", tolerance_ms=20, channels=["x"])
    sp = SessionPlan("s1", (imu,), bucket_ns=S, rate_hz=10.0)
    t = ms(900, 1015, 1030, 1900)
    buckets = pieces_by_bucket(sp, [sensor_chunk("imu", t, np.array([1., 2., 3., 4.]))])
    (p0,) = buckets[0]
    # bucket 0 owns 900 and sees 1015 (in [1000, 1020)); 1030 is past its margin
    assert p0.data.column("t_ns").to_pylist() == ms(900, 1015).tolist() and p0.owned == 1
    (p1,) = buckets[1]
    assert p1.data.column("t_ns").to_pylist() == ms(1015, 1030, 1900).tolist() and p1.owned == 3
    # bucket 0's tick 900 cannot use 1015 (too far), bucket 1's 1100 takes nothing either
    b0 = align_bucket(sp, 0, buckets[0])
    assert in_ms(b0.column("tick_ns").to_pylist()) == [900]
    assert in_ms(b0.column("imu__t_ns").to_pylist()) == [900]


# ---------------------------------------------------------------- bucketed == one bucket


def session(seed: int) -> tuple[list[Chunk], dict]:
    """One 10 s session: cam 30 fps and cam1 20 fps (jittered), a 100 Hz IMU in two files, an
    8 kHz microphone in 256-sample blocks with a lost stretch, and subtitles, some crossing the
    3 s bucket edges. Returns the chunks and each stream's whole extent."""
    rng = np.random.default_rng(seed)

    def jittered(period_ms: float, n: int, jitter_ms: float, start_ms: float) -> np.ndarray:
        t = start_ms + period_ms * np.arange(n) + rng.uniform(-jitter_ms, jitter_ms, n)
        return np.unique(np.rint(t * MS).astype(np.int64))

    cam_t = jittered(1000 / 30, 300, 3.0, 20.0)
    cam1_t = jittered(50.0, 198, 6.0, 35.0)
    imu_t = jittered(10.0, 995, 2.0, 5.0)
    imu_t = np.delete(imu_t, np.r_[300:306, 598:603])      # holes wider than max_gap
    imu_x = np.sin(imu_t / 3e8)
    half = len(imu_t) // 2
    sr, n = 8000, 256
    first = np.arange(0, 9 * sr, n)
    first = first[(first < 3 * sr - 2 * n) | (first > 3 * sr + 6 * n)]   # blocks lost near 3 s
    mic_t = first * S // sr
    starts = ms(150, 1400, 2900, 2950, 3000, 4100, 5990, 7000, 8800)
    ends = ms(900, 2900, 3300, 3050, 3500, 4100, 6100, 7600, 9400)
    chunks = [
        video_chunk("cam", cam_t),
        video_chunk("cam1", cam1_t),
        sensor_chunk("imu", imu_t[:half], imu_x[:half], uri="imu_a.csv"),
        sensor_chunk("imu", imu_t[half:], imu_x[half:], pos0=half, uri="imu_b.csv"),
        chunk("mic", "audio", {"t_ns": mic_t, "pos": first, "n_samples": np.full(len(first), n)},
              AUDIO, "mic.wav", {"sample_rate": sr}),
        chunk("sub", "text", {"t_ns": starts, "t_end_ns": ends, "pos": np.arange(len(starts)),
                              "text": [f"cue {i}" for i in range(len(starts))]}, TEXT, "sub.srt"),
    ]
    extents = {("s1", "cam"): (int(cam_t[0]), int(cam_t[-1])),
               ("s1", "cam1"): (int(cam1_t[0]), int(cam1_t[-1])),
               ("s1", "imu"): (int(imu_t[0]), int(imu_t[-1])),
               ("s1", "mic"): (int(mic_t[0]), int(mic_t[-1]) + n * S // sr),
               ("s1", "sub"): (int(starts.min()), int(ends.max()))}
    return chunks, extents


STREAMS = (plan("cam", "video", "nearest", tolerance_ms=20),
           plan("cam1", "video", "one_to_one", tolerance_ms=20),
           plan("imu", "sensor", "interpolate", max_gap_ms=25, channels=["x"]),
           plan("mic", "audio", "audio_window", window_ms=100),
           plan("sub", "text", "text_overlap"))


@pytest.mark.parametrize("ticks", [{"anchor": "cam"}, {"rate_hz": 30.0}],
                         ids=["anchor", "fixed-rate"])
def test_bucket_by_bucket_equals_one_big_bucket(ticks):
    chunks, extents = session(3)
    small = SessionPlan("s1", STREAMS, bucket_ns=3 * S, **ticks)
    big = SessionPlan("s1", STREAMS, bucket_ns=100 * S, **ticks)
    assert max(small.margins().values()) < small.bucket_ns
    pieces = pieces_by_bucket(small, chunks)
    assert sorted(pieces) == [-1, 0, 1, 2, 3]          # -1: samples in bucket 0's low margin
    parts = [align_bucket(small, b, pieces[b], extents) for b in sorted(pieces)]
    bucketed = pa.concat_tables([t for t in parts if t.num_rows]).drop_columns(["bucket"])
    whole_pieces = pieces_by_bucket(big, chunks)[0]                    # all of the session
    whole = align_bucket(big, 0, whole_pieces).drop_columns(["bucket"])   # extents: its own
    assert whole.num_rows > 90 and bucketed.column_names == whole.column_names
    for name in whole.column_names:
        assert bucketed.column(name).to_pylist() == whole.column(name).to_pylist(), name
    # every policy's outcomes occur, at bucket edges too, so the equality means something
    status = {s: set(whole.column(f"{s}__status").to_pylist()) for s in
              ("cam", "cam1", "imu", "mic", "sub")}
    assert {"ok", "taken"} <= status["cam1"] and "not_local" not in status["cam1"]
    assert {"ok", "gap_too_large"} <= status["imu"]
    assert {"ok", "partial_window", "empty_window"} <= status["mic"]
    assert {"ok", "no_overlap"} <= status["sub"]
    # and the nearest column against a plain loop over the samples
    cam_t = chunks[0].data.column("t_ns").to_pylist()
    tol = 20 * MS
    for tick, got in zip(whole.column("tick_ns").to_pylist(),
                         whole.column("cam__t_ns").to_pylist(), strict=True):
        near = min(cam_t, key=lambda t, tick=tick: (abs(t - tick), t))
        assert got == (near if abs(near - tick) <= tol else None)
