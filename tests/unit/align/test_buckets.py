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


def test_a_far_off_time_costs_one_bucket_not_the_span():
    # a stray time 200 years away: the buckets in between are never visited
    t = np.array([0, 1_000, 2_000, 6_000_000_000_000_000_000], np.int64)
    slices = list(point_slices(t, 4_000_000_000, 50_000_000))
    assert [b for b, *_ in slices] == [-1, 0, 1_499_999_999, 1_500_000_000]
    assert sum(o for *_, o in slices) == 4


def test_intervals_far_apart_cost_only_the_buckets_they_touch():
    start = np.array([0, 7_000_000_000_000_000_000], np.int64)
    end = start + 5_000
    got = {b: (rows.tolist(), o) for b, rows, o in interval_buckets(start, end, 1000, 0)}
    far = 7_000_000_000_000_000
    assert sorted(got) == [0, 1, 2, 3, 4, 5] + [far + i for i in range(6)]
    assert got[0] == ([0], 1) and got[5] == ([0], 0)
    assert got[far] == ([1], 1) and got[far + 5] == ([1], 0)
