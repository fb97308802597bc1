import numpy as np

from mmalign.transforms.align.buckets import bucket_close_us, interval_buckets, point_slices


def test_point_slices_cover_each_time_once_as_owned_and_margins_twice():
    t = np.arange(0, 10_000, 7, dtype=np.int64)
    B, M = 1000, 50
    slices = list(point_slices(t, B, M))
    assert sum(o for *_, o in slices) == t.size
    for b, lo, hi, _ in slices:
        seen = t[lo:hi]
        assert seen.min() >= b * B - M and seen.max() < (b + 1) * B + M
        inside = t[(t >= b * B - M) & (t < (b + 1) * B + M)]
        assert np.array_equal(seen, inside)


def test_negative_times_and_edges():
    t = np.array([-1000, -1, 0, 999, 1000], np.int64)
    got = {b: (lo, hi, o) for b, lo, hi, o in point_slices(t, 1000, 0)}
    assert got == {-1: (0, 2, 2), 0: (2, 4, 2), 1: (4, 5, 1)}


def test_intervals_go_to_every_bucket_they_touch():
    start = np.array([100, 900, 2500], np.int64)
    end = np.array([200, 2100, 2600], np.int64)
    got = {b: (rows.tolist(), o) for b, rows, o in interval_buckets(start, end, 1000, 0)}
    assert got == {0: ([0, 1], 2), 1: ([1], 0), 2: ([1, 2], 1)}


def test_bucket_close_is_inside_the_bucket_window():
    B, M = 4_000_000_000, 50_000_000
    for b in (-2, 0, 3):
        close = bucket_close_us(b, B, M) * 1000
        assert b * B + M <= close < (b + 1) * B + M
        assert close % 1_000_000 == 0        # whole ms: Flink/Dataflow keep ms timestamps
