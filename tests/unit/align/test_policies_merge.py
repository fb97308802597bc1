"""The compiled merge kernels of align/policies.py against plain reference implementations.

nearest, interpolate and one_to_one's best-partner step are single passes over the two sorted
arrays (numba); here they are compared, on random sorted int64 arrays full of duplicates and
ties, with per-tick brute force (nearest, interpolate) or the searchsorted formulas they
replaced (best partner), and with the documented greedy (one_to_one, heap included). Empty
arrays, bounds, tolerance 0, blocks longer than the merge's 16-sample scan, epoch-ns and
negative times, and the unsorted-input messages are covered.
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmalign.transforms.align import policies as ap
from mmalign.transforms.align.policies import Status

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
EPOCH = 1_700_000_000_000_000_000


@st.composite
def sorted_times(draw, max_size=60, span=None):
    """A sorted int64 array: few distinct values (duplicates and ties everywhere), sometimes
    dense runs longer than the merge's scan block, at an offset near 0, negative or epoch."""
    span = draw(st.sampled_from([3, 20, 200, 5000])) if span is None else span
    size = draw(st.integers(0, max_size))
    vals = draw(st.lists(st.integers(0, span), min_size=size, max_size=size))
    offset = draw(st.sampled_from([0, -7_000, EPOCH, -EPOCH]))
    return np.sort(np.asarray(vals, np.int64)) + np.int64(offset) if vals else \
        np.zeros(0, np.int64)


@st.composite
def two_arrays(draw, max_ticks=60, max_samples=60):
    """(ticks, t) drawn on a shared grid and offset (so they interleave)."""
    span = draw(st.sampled_from([3, 20, 200, 5000]))
    offset = draw(st.sampled_from([0, -7_000, EPOCH, -EPOCH]))

    def arr(k):
        n = draw(st.integers(0, k))
        v = draw(st.lists(st.integers(0, span), min_size=n, max_size=n))
        return np.sort(np.asarray(v, np.int64)).astype(np.int64) + np.int64(offset) if v else \
            np.zeros(0, np.int64)

    return arr(max_ticks), arr(max_samples), offset


def maybe_bounds(draw, t, offset):
    kind = draw(st.sampled_from(["none", "given"]))
    if kind == "none":
        return None
    a = draw(st.integers(-50, 5050)) + offset
    b = draw(st.integers(-50, 5050)) + offset
    return (min(a, b), max(a, b))


# -- references ------------------------------------------------------------------------------

def ref_outside(x, t, bounds):
    if bounds is None:
        return t.size == 0 or x < int(t[0]) or x > int(t[-1])
    return x < bounds[0] or x > bounds[1]


def ref_nearest(ticks, t, tol, bounds):
    """Per tick: the first index of the least |t - tick|; Python ints (no overflow)."""
    m = ticks.size
    idx, dt, status = np.full(m, -1, np.int64), np.zeros(m, np.int64), np.zeros(m, np.int8)
    tl = [int(v) for v in t]
    for i, x in enumerate(int(v) for v in ticks):
        best = None
        for j, y in enumerate(tl):
            if best is None or abs(y - x) < abs(tl[best] - x):
                best = j
        if best is not None and abs(tl[best] - x) <= tol:
            idx[i], dt[i], status[i] = best, tl[best] - x, Status.OK
        else:
            status[i] = Status.OUT_OF_RANGE if ref_outside(x, t, bounds) else \
                Status.NO_SAMPLE_IN_TOLERANCE
    return idx, dt, status


def ref_interpolate(ticks, t, v, gap, bounds):
    """Per tick: the first exact sample, else the bracket (last < tick, first > tick) when at
    most ``gap`` wide; numpy's float arithmetic (int64 differences to float64, then divide)."""
    m, c = ticks.size, v.shape[1]
    out = np.full((m, c), np.nan)
    left, right = np.full(m, -1, np.int64), np.full(m, -1, np.int64)
    status = np.zeros(m, np.int8)
    tl = [int(y) for y in t]
    for i, x in enumerate(int(y) for y in ticks):
        exact = [j for j, y in enumerate(tl) if y == x]
        below = [j for j, y in enumerate(tl) if y < x]
        above = [j for j, y in enumerate(tl) if y > x]
        if exact:
            j = exact[0]
            out[i], left[i], right[i] = v[j], j, j
        elif below and above and tl[above[0]] - tl[below[-1]] <= gap:
            lj, rj = below[-1], above[0]
            frac = np.float64(x - tl[lj]) / np.float64(tl[rj] - tl[lj])
            out[i] = v[lj] + (v[rj] - v[lj]) * frac
            left[i], right[i] = lj, rj
        else:
            status[i] = Status.OUT_OF_RANGE if ref_outside(x, t, bounds) else \
                Status.GAP_TOO_LARGE
    return out, left, right, status


def ref_best_partner(a, b, tol, a_first):
    """The vectorised searchsorted formula the merge replaced."""
    big = np.iinfo(np.int64).max
    r = np.searchsorted(b, a, side="left" if a_first else "right")
    nb = b.size
    if nb == 0:
        return np.full(a.size, -1, np.int64)
    dl = np.where(r > 0, a - b[np.maximum(r - 1, 0)], big)
    dr = np.where(r < nb, b[np.minimum(r, nb - 1)] - a, big)
    best = np.where(dl <= dr, r - 1, r)
    best[np.minimum(dl, dr) > tol] = -1
    return best


def ref_one_to_one(ticks, t, tol):
    """The documented greedy over every candidate pair (see test_align_policies)."""
    items = sorted([(int(x), 0, i) for i, x in enumerate(ticks)]
                   + [(int(x), 1, j) for j, x in enumerate(t)])
    pos = {(k, i): p for p, (_, k, i) in enumerate(items)}
    pairs = []
    for i, x in enumerate(ticks):
        for j, y in enumerate(t):
            d = abs(int(y) - int(x))
            if d <= tol:
                a, b = sorted((pos[(0, i)], pos[(1, j)]))
                pairs.append((d, b, -a, i, j))
    pairs.sort()
    match = np.full(ticks.size, -1, np.int64)
    used = set()
    for *_, i, j in pairs:
        if match[i] < 0 and j not in used:
            match[i] = j
            used.add(j)
    return match


# -- properties ------------------------------------------------------------------------------

@SETTINGS
@given(data=st.data(), arrays=two_arrays(), tol=st.sampled_from([0, 1, 2, 7, 60, 10**6]))
def test_nearest_equals_brute_force(data, arrays, tol):
    ticks, t, offset = arrays
    bounds = maybe_bounds(data.draw, t, offset)
    got = ap.nearest(ticks, t, tol, bounds=bounds)
    want = ref_nearest(ticks, t, tol, bounds)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)


@SETTINGS
@given(ticks=sorted_times(max_size=8, span=5000), t=sorted_times(max_size=400, span=5000),
       tol=st.sampled_from([0, 5, 40, 10**6]))
def test_nearest_many_samples_per_tick(ticks, t, tol):
    # samples outnumber ticks far beyond the 16-sample scan block (and the offsets differ, so
    # sometimes every tick is far before or after every sample)
    want = ref_nearest(ticks, t, tol, None)
    for g, w in zip(ap.nearest(ticks, t, tol), want):
        assert np.array_equal(g, w)


@SETTINGS
@given(data=st.data(), arrays=two_arrays(), gap=st.sampled_from([0, 1, 3, 50, 10**6]),
       channels=st.integers(1, 3))
def test_interpolate_equals_reference_bit_for_bit(data, arrays, gap, channels):
    ticks, t, offset = arrays
    bounds = maybe_bounds(data.draw, t, offset)
    v = np.asarray(data.draw(st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        min_size=t.size * channels, max_size=t.size * channels)), np.float64)
    v = v.reshape(t.size, channels)
    got = ap.interpolate(ticks, t, v if channels > 1 else v[:, 0], gap, bounds=bounds)
    want = ref_interpolate(ticks, t, v, gap, bounds)
    assert got[0].shape == want[0].shape
    assert np.array_equal(got[0].view(np.int64), want[0].view(np.int64))   # bits, NaN too
    for g, w in zip(got[1:], want[1:]):
        assert g.dtype == w.dtype and np.array_equal(g, w)


@SETTINGS
@given(arrays=two_arrays(max_ticks=120, max_samples=120),
       tol=st.sampled_from([0, 1, 4, 100, 10**6]), a_first=st.booleans())
def test_best_partner_equals_searchsorted_formula(arrays, tol, a_first):
    a, b, _ = arrays
    assert np.array_equal(ap._best_partner(a, b, tol, a_first), ref_best_partner(a, b, tol,
                                                                                 a_first))


@SETTINGS
@given(arrays=two_arrays(max_ticks=25, max_samples=25), tol=st.sampled_from([0, 1, 3, 30]))
def test_one_to_one_and_its_heap_equal_the_greedy(arrays, tol):
    ticks, t, _ = arrays
    want = ref_one_to_one(ticks, t, tol)
    idx, dt, status = ap.one_to_one(ticks, t, tol)
    assert np.array_equal(idx, want)
    ok = want >= 0
    assert np.array_equal(dt[ok], t[want[ok]] - ticks[ok]) and np.all(dt[~ok] == 0)
    heap = np.full(ticks.size, -1, np.int64)
    for i, j in ap._greedy_heap(ticks, t, tol, np.arange(ticks.size), np.arange(t.size)):
        assert heap[i] == -1
        heap[i] = j
    assert np.array_equal(heap, want)


def unsorted_message(name, arr):
    i = int(np.argmax(arr[1:] < arr[:-1]))
    return f"{name} must be sorted ascending; {name}[{i + 1}]={arr[i + 1]} < {name}[{i}]={arr[i]}"


@SETTINGS
@given(ticks=st.lists(st.integers(-30, 30), max_size=40),
       t=st.lists(st.integers(-30, 30), max_size=40))
def test_unsorted_inputs_raise_the_first_decrease_ticks_first(ticks, t):
    ticks, t = np.asarray(ticks, np.int64), np.asarray(t, np.int64)
    bad = [(name, a) for name, a in (("ticks", ticks), ("t", t))
           if a.size > 1 and (a[1:] < a[:-1]).any()]
    calls = [lambda: ap.nearest(ticks, t, 3), lambda: ap.one_to_one(ticks, t, 3),
             lambda: ap.interpolate(ticks, t, np.zeros(t.size), 3)]
    for call in calls:
        if bad:
            with pytest.raises(ValueError, match=re.escape(unsorted_message(*bad[0]))):
                call()
        else:
            call()
    # values of the wrong shape: an order error still comes first
    msg = unsorted_message(*bad[0]) if bad else "values must have shape"
    with pytest.raises(ValueError, match=re.escape(msg)):
        ap.interpolate(ticks, t, np.zeros(t.size + 1), 3)


def test_empty_inputs_and_no_samples():
    e = np.zeros(0, np.int64)
    ticks = np.array([-5, 0, 5], np.int64)
    idx, dt, status = ap.nearest(ticks, e, 10)
    assert idx.tolist() == [-1] * 3 and dt.tolist() == [0] * 3
    assert status.tolist() == [Status.OUT_OF_RANGE] * 3
    idx, dt, status = ap.nearest(ticks, e, 10, bounds=(-1, 5))
    assert status.tolist() == [Status.OUT_OF_RANGE, Status.NO_SAMPLE_IN_TOLERANCE,
                               Status.NO_SAMPLE_IN_TOLERANCE]
    for out in ap.nearest(e, ticks, 10):
        assert out.size == 0
    out, left, right, status = ap.interpolate(ticks, e, np.zeros((0, 2)), 10)
    assert out.shape == (3, 2) and np.isnan(out).all() and left.tolist() == [-1] * 3
    assert status.tolist() == [Status.OUT_OF_RANGE] * 3
    out, left, right, status = ap.interpolate(e, ticks, np.zeros(3), 10)
    assert out.shape == (0, 1) and status.size == 0


def test_non_contiguous_and_read_only_inputs():
    t = np.arange(0, 400, 2, dtype=np.int64)
    ticks = np.arange(-10, 410, 7, dtype=np.int64)
    want = ap.nearest(ticks.copy(), t.copy(), 1)
    ro = t.copy()
    ro.flags.writeable = False
    for tk, tt in ((ticks, ro), (ticks[::1], t[::2].repeat(2)), (ticks[::2], t[::3])):
        got = ap.nearest(tk, tt, 1)
        ref = ref_nearest(np.ascontiguousarray(tk), np.ascontiguousarray(tt), 1, None)
        for g, w in zip(got, ref):
            assert np.array_equal(g, w)
    assert np.array_equal(ap.nearest(ticks, ro, 1)[0], want[0])
    got = ap.interpolate(ticks[::2], ro, np.arange(ro.size, dtype=np.float64)[::-1], 2)
    ref = ref_interpolate(ticks[::2], ro, np.arange(ro.size, dtype=np.float64)[::-1, None], 2,
                          None)
    assert np.array_equal(got[0], ref[0], equal_nan=True)


def test_each_kernel_compiles_one_specialisation():
    # read-only (Arrow) and writable, strided and contiguous inputs all reach the compiled
    # merges as read-only C arrays: one signature each, so one compile (or cache load)
    t = np.arange(0, 100, 2, dtype=np.int64)
    ro = t.copy()
    ro.flags.writeable = False
    for tk, tt in ((t, t), (t, ro), (t[::2], ro), (ro[::3], t[::2])):
        ap.nearest(tk, tt, 1)
        ap.interpolate(tk, tt, np.zeros(tt.size), 3)
        ap.one_to_one(tk, tt, 1)
    for kernel in (ap._nearest_merge, ap._interpolate_merge, ap._best_partner_merge):
        assert len(kernel.signatures) == 1, (kernel, kernel.signatures)
