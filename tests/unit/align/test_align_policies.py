"""The alignment kernels: exact semantics against brute force, bucketed == whole session."""

import numpy as np
import pytest

from mmalign.transforms.align import policies as ap
from mmalign.transforms.align.policies import Status

MS = 1_000_000


def jittered(rng, start, period, count, jitter, drop=0.0):
    """Sorted, duplicate-free times around a fixed rate, with jitter and random drops."""
    t = start + np.arange(count, dtype=np.int64) * period
    t = t + rng.integers(-jitter, jitter + 1, count)
    t = np.unique(t)
    return t[rng.random(t.size) >= drop]


def session(seed, n_ticks=600, tick_period=33 * MS, sample_period=10 * MS):
    rng = np.random.default_rng(seed)
    ticks = jittered(rng, 5 * MS, tick_period, n_ticks, 4 * MS, drop=0.05)
    span = n_ticks * tick_period
    t = jittered(rng, -50 * MS, sample_period, span // sample_period + 10, sample_period // 3,
                 drop=0.15)
    # a long dropout in the middle of the stream
    t = t[(t < 7000 * MS) | (t > 9500 * MS)]
    return rng, ticks, t


def buckets_of(ticks, B):
    return range(int(ticks[0]) // B, int(ticks[-1]) // B + 1)


def slice_for(t, b, B, M):
    lo, hi = np.searchsorted(t, [b * B - M, (b + 1) * B + M], side="left")
    return int(lo), int(hi)


def shift(idx, lo):
    return np.where(idx >= 0, idx + lo, -1)


# -- nearest -------------------------------------------------------------------------------

def brute_nearest(ticks, t, tol):
    idx = np.full(ticks.size, -1)
    for i, x in enumerate(ticks):
        if t.size:
            d = np.abs(t - x)
            j = int(np.argmin(d))           # first minimum = earliest sample on ties
            if d[j] <= tol:
                idx[i] = j
    return idx


@pytest.mark.parametrize("seed", range(5))
def test_nearest_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.choice(np.arange(0, 2000, 3), 120, replace=False)).astype(np.int64)
    ticks = np.sort(rng.integers(-100, 2100, 150)).astype(np.int64)
    ticks = np.concatenate([ticks, t[:5] + 7, t[5:10] - 7])   # exact ties between two samples
    ticks.sort()
    t = np.sort(np.concatenate([t, t[::9]]))               # duplicated sample times
    for tol in (0, 5, 7, 40):
        idx, dt, status = ap.nearest(ticks, t, tol)
        want = brute_nearest(ticks, t, tol)
        assert np.array_equal(idx, want)
        ok = want >= 0
        assert np.array_equal(dt[ok], t[want[ok]] - ticks[ok])
        assert np.all(dt[~ok] == 0)
        assert np.all((status == Status.OK) == ok)
        outside = (ticks < t[0]) | (ticks > t[-1])
        assert np.all(status[~ok & outside] == Status.OUT_OF_RANGE)
        assert np.all(status[~ok & ~outside] == Status.NO_SAMPLE_IN_TOLERANCE)


def test_nearest_tie_goes_to_the_earlier_sample_and_first_duplicate():
    t = np.array([10, 20, 20, 30], np.int64)
    idx, dt, _ = ap.nearest(np.array([15, 20, 25, 26], np.int64), t, 5)
    assert idx.tolist() == [0, 1, 1, 3]
    assert dt.tolist() == [-5, 0, -5, 4]


def test_nearest_edge_cases():
    idx, dt, st = ap.nearest(np.array([5], np.int64), np.zeros(0, np.int64), 10)
    assert idx.tolist() == [-1] and st.tolist() == [Status.OUT_OF_RANGE]
    idx, dt, st = ap.nearest(np.zeros(0, np.int64), np.array([1, 2], np.int64), 10)
    assert idx.size == dt.size == st.size == 0
    idx, dt, st = ap.nearest(np.array([0, 100, 200], np.int64), np.array([100], np.int64), 10,
                             bounds=(50, 300))
    assert idx.tolist() == [-1, 0, -1]
    assert [ap.STATUS_NAMES[s] for s in st] == ["out_of_range", "ok", "no_sample_in_tolerance"]


def test_unsorted_or_float_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"t must be sorted ascending; t\[2\]=1 < t\[1\]=5"):
        ap.nearest(np.array([0], np.int64), np.array([0, 5, 1], np.int64), 3)
    with pytest.raises(ValueError, match="integer nanoseconds"):
        ap.nearest(np.array([0.5]), np.array([0], np.int64), 3)
    with pytest.raises(ValueError, match="tolerance_ns must be >= 0"):
        ap.nearest(np.array([0], np.int64), np.array([0], np.int64), -1)


@pytest.mark.parametrize("seed", range(3))
def test_nearest_bucketed_equals_whole_session(seed):
    _, ticks, t = session(seed)
    tol = 12 * MS
    bounds = (int(t[0]), int(t[-1]))
    whole = ap.nearest(ticks, t, tol, bounds=bounds)
    M0 = ap.required_margin_ns("nearest", tolerance_ns=tol)
    for B in (250 * MS, 1000 * MS, 3001 * MS):
        for M in (M0, M0 + 7 * MS):
            for b in buckets_of(ticks, B):
                own = (ticks >= b * B) & (ticks < (b + 1) * B)
                lo, hi = slice_for(t, b, B, M)
                idx, dt, st = ap.nearest(ticks[own], t[lo:hi], tol, bounds=bounds)
                assert np.array_equal(shift(idx, lo), whole[0][own])
                assert np.array_equal(dt, whole[1][own])
                assert np.array_equal(st, whole[2][own])


# -- one-to-one ----------------------------------------------------------------------------

def brute_one_to_one(ticks, t, tol):
    """Greedy over all candidate pairs in the documented order."""
    items = sorted([(x, 0, i) for i, x in enumerate(ticks)] + [(x, 1, j) for j, x in enumerate(t)])
    pos = {(k, i): p for p, (_, k, i) in enumerate(items)}
    pairs = []
    for i, x in enumerate(ticks):
        for j, y in enumerate(t):
            if abs(int(y) - int(x)) <= tol:
                a, b = sorted((pos[(0, i)], pos[(1, j)]))
                pairs.append((abs(int(y) - int(x)), b, -a, i, j))
    pairs.sort()
    match = np.full(ticks.size, -1)
    used = set()
    for *_, i, j in pairs:
        if match[i] < 0 and j not in used:
            match[i] = j
            used.add(j)
    has = np.array([any(abs(int(y) - int(x)) <= tol for y in t) for x in ticks], bool)
    return match, has


def random_pairs(rng, dense):
    grid = np.arange(0, 400 if dense else 4000, 1 if dense else 5)
    ticks = np.sort(rng.choice(grid, rng.integers(1, 40), replace=True)).astype(np.int64)
    t = np.sort(rng.choice(grid, rng.integers(1, 40), replace=True)).astype(np.int64)
    return ticks, t   # duplicates on purpose: ties everywhere


@pytest.mark.parametrize("seed", range(40))
def test_one_to_one_matches_brute_force_greedy(seed):
    rng = np.random.default_rng(seed)
    ticks, t = random_pairs(rng, dense=seed % 2 == 0)
    for tol in (0, 3, 10, 60):
        match, has = brute_one_to_one(ticks, t, tol)
        idx, dt, st = ap.one_to_one(ticks, t, tol)
        assert np.array_equal(idx, match), (tol, ticks, t)
        ok = match >= 0
        assert np.array_equal(dt[ok], t[match[ok]] - ticks[ok]) and np.all(dt[~ok] == 0)
        assert np.all(st[has & (match < 0)] == Status.TAKEN)
        assert np.all(st[~has] != Status.TAKEN) and np.all((st == Status.OK) == (match >= 0))
        # the heap path alone gives the same association
        heap = np.full(ticks.size, -1)
        for i, j in ap._greedy_heap(ticks, t, tol, np.arange(ticks.size), np.arange(t.size)):
            heap[i] = j
        assert np.array_equal(heap, match)


def test_one_to_one_long_chain_uses_the_heap_and_stays_exact(monkeypatch):
    # alternating tick/sample with gaps shrinking to the right: the greedy starts at the far
    # right and its parity decides every pair back to the left (one mutual pair per round)
    gaps = np.arange(200, 100, -1)
    times = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    ticks, t = times[0::2], times[1::2]                 # 51 ticks, 50 samples
    calls = []
    heap = ap._greedy_heap
    monkeypatch.setattr(ap, "_greedy_heap", lambda *a: calls.append(1) or heap(*a))
    idx, _, st = ap.one_to_one(ticks, t, 500)
    assert calls == [1]
    assert np.array_equal(idx, brute_one_to_one(ticks, t, 500)[0])
    assert idx.tolist() == [-1] + list(range(50))       # tick k takes the sample before it
    assert st[0] == Status.TAKEN


def test_one_to_one_one_sample_two_ticks():
    idx, dt, st = ap.one_to_one(np.array([0, 10], np.int64), np.array([6], np.int64), 10)
    assert idx.tolist() == [-1, 0] and dt.tolist() == [0, -4]
    assert [ap.STATUS_NAMES[s] for s in st] == ["taken", "ok"]


@pytest.mark.parametrize("seed", range(4))
def test_one_to_one_bucketed_equals_whole_session_or_says_not_local(seed):
    _, ticks, t = session(seed, sample_period=33 * MS)    # same rates, wide tolerance: conflicts
    tol = 30 * MS
    bounds = (int(t[0]), int(t[-1]))
    whole = ap.one_to_one(ticks, t, tol, bounds=bounds)
    assert (whole[2] == Status.TAKEN).sum() > 50
    M0 = ap.required_margin_ns("one_to_one", tolerance_ns=tol)
    not_local = {}
    for B in (500 * MS, 2000 * MS):
        for M in (tol, M0, 2 * M0):
            for b in buckets_of(ticks, B):
                lo_t, hi_t = slice_for(ticks, b, B, M)
                lo, hi = slice_for(t, b, B, M)
                ctx_ticks = ticks[lo_t:hi_t]
                own = (ctx_ticks >= b * B) & (ctx_ticks < (b + 1) * B)
                idx, dt, st = ap.one_to_one(ctx_ticks, t[lo:hi], tol, bounds=bounds,
                                            context=(b * B - M, (b + 1) * B + M))
                idx, dt, st = shift(idx, lo)[own], dt[own], st[own]
                g = slice(lo_t, hi_t)
                w_idx, w_dt, w_st = whole[0][g][own], whole[1][g][own], whole[2][g][own]
                sure = st != Status.NOT_LOCAL
                assert np.array_equal(idx[sure], w_idx[sure])
                assert np.array_equal(dt[sure], w_dt[sure])
                assert np.array_equal(st[sure], w_st[sure])
                assert np.all(idx[~sure] == -1) and np.all(dt[~sure] == 0)
                not_local[M] = not_local.get(M, 0) + int((~sure).sum())
    assert not_local[tol] > 0                      # a margin of one tolerance is not enough
    assert not_local[M0] <= 0.01 * 2 * ticks.size  # four tolerances leave few undecided ticks


def test_one_to_one_context_flags_a_chain_crossing_the_bucket_edge():
    gaps = np.arange(200, 100, -1)
    times = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    ticks, t = times[0::2], times[1::2]
    whole, _, _ = ap.one_to_one(ticks, t, 500)
    ctx = (0, 3000)        # the chain is decided far to the right of this context
    cut_t, cut_s = ticks[ticks < ctx[1]], t[t < ctx[1]]
    idx, _, st = ap.one_to_one(cut_t, cut_s, 500, context=ctx)
    naive, _, _ = ap.one_to_one(cut_t, cut_s, 500)
    assert not np.array_equal(naive, whole[:cut_t.size])    # a plain local run would be wrong
    assert np.all(st == Status.NOT_LOCAL) and np.all(idx == -1)


# -- interpolate ---------------------------------------------------------------------------

def test_interpolate_values_exact_hits_and_statuses():
    t = np.array([0, 10, 20, 100], np.int64)
    v = np.array([[0.0, 1.0], [10.0, 1.0], [30.0, np.inf], [40.0, 0.0]])
    ticks = np.array([-5, 0, 5, 20, 25, 60, 100, 101], np.int64)
    out, left, right, st = ap.interpolate(ticks, t, v, 15)
    assert left.tolist() == [-1, 0, 0, 2, -1, -1, 3, -1]
    assert right.tolist() == [-1, 0, 1, 2, -1, -1, 3, -1]
    assert out[2].tolist() == [5.0, 1.0]
    assert out[3].tolist() == [30.0, np.inf]            # exact hit takes the sample as is
    assert np.isnan(out[[0, 4, 5, 7]]).all()
    assert [ap.STATUS_NAMES[s] for s in st] == [
        "out_of_range", "ok", "ok", "ok", "gap_too_large", "gap_too_large", "ok",
        "out_of_range"]


def test_interpolate_is_exact_on_epoch_nanoseconds():
    base = 1_700_000_000_000_000_000
    t = base + np.array([0, 1000], np.int64)
    out, *_ = ap.interpolate(base + np.array([1, 999], np.int64), t, np.array([0.0, 1000.0]), 1000)
    assert out[:, 0].tolist() == [1.0, 999.0]      # float64 times would be off by ~100 ns


@pytest.mark.parametrize("seed", range(3))
def test_interpolate_bucketed_equals_whole_session(seed):
    rng, ticks, t = session(seed, sample_period=1 * MS)
    v = rng.normal(size=(t.size, 3))
    gap = 3 * MS
    bounds = (int(t[0]), int(t[-1]))
    whole = ap.interpolate(ticks, t, v, gap, bounds=bounds)
    assert (whole[3] == Status.GAP_TOO_LARGE).any() and (whole[3] == Status.OK).mean() > 0.5
    M0 = ap.required_margin_ns("interpolate", max_gap_ns=gap)
    for B in (200 * MS, 1700 * MS):
        for M in (M0, 3 * M0):
            for b in buckets_of(ticks, B):
                own = (ticks >= b * B) & (ticks < (b + 1) * B)
                lo, hi = slice_for(t, b, B, M)
                out, left, right, st = ap.interpolate(ticks[own], t[lo:hi], v[lo:hi], gap,
                                                      bounds=bounds)
                assert np.array_equal(out, whole[0][own], equal_nan=True)
                assert np.array_equal(shift(left, lo), whole[1][own])
                assert np.array_equal(shift(right, lo), whole[2][own])
                assert np.array_equal(st, whole[3][own])


def test_interpolate_shape_error():
    with pytest.raises(ValueError, match="values must have shape"):
        ap.interpolate(np.array([0], np.int64), np.array([0, 1], np.int64), np.zeros((3, 1)), 5)


# -- audio window --------------------------------------------------------------------------

def audio_blocks(rng, sr, block, n_blocks, drift_ppm, gaps):
    """Blocks as decode+clock give them: t = round(first * 1e9 / sr) * (1 + drift), with some
    whole blocks missing (pos jumps) and one time discontinuity."""
    first = np.arange(n_blocks, dtype=np.int64) * block
    keep = np.ones(n_blocks, bool)
    keep[gaps] = False
    first = first[keep]
    t = np.rint((first * 1e9 / sr) * (1 + drift_ppm * 1e-6)).astype(np.int64) + 3 * MS
    t[first >= block * (n_blocks // 2)] += 40 * MS          # timestamps jump: time gap, no pos gap
    n = np.full(first.size, block, np.int64)
    n[-1] = block // 3
    return t, first, n


def brute_audio(ticks, t, pos, n, sr, w):
    """Per-sample times, then a direct count; coverage from a 1-ns-resolution-free sum."""
    end = ap.audio_blocks_end(t, pos, n, sr)
    s0, s1, cov = [], [], []
    samples = []
    for k in range(t.size):
        q = np.arange(n[k])
        # time of sample q >= x  <=>  q * (end - t) >= (x - t) * n   (exact integers)
        samples.append((pos[k] + q, t[k], end[k] - t[k], n[k]))
    for x in ticks:
        a, b = int(x) - w // 2, int(x) - w // 2 + w
        inside = []
        covered = 0
        for p, tk, seg, nk in samples:
            qs = p - p[0]
            sel = (qs * seg >= (a - tk) * nk) & (qs * seg < (b - tk) * nk)
            inside.extend(p[sel].tolist())
            covered += max(0, min(b, tk + seg) - max(a, tk))
        s0.append(min(inside) if covered else -1)
        s1.append(max(inside) + 1 if covered else -1)
        cov.append(covered / w)
    return np.array(s0), np.array(s1), np.array(cov)


def test_audio_window_matches_brute_force_with_drift_and_gaps():
    rng = np.random.default_rng(1)
    sr, block = 8000, 256
    t, pos, n = audio_blocks(rng, sr, block, 60, drift_ppm=300, gaps=[10, 11, 12, 13, 40])
    ticks = np.sort(rng.integers(int(t[0]) - 80 * MS, int(t[-1]) + 80 * MS, 200)).astype(np.int64)
    in_gap = (t[9] + 32 * MS + t[10]) // 2                 # centre of the 4-block hole
    ticks = np.concatenate([ticks, t[::7] + 25 * MS, [in_gap]])   # windows on block edges
    ticks.sort()
    w = 50 * MS
    s0, s1, cov, st = ap.audio_window(ticks, t, pos, n, sr, w)
    b0, b1, bc = brute_audio(ticks, t, pos, n, sr, w)
    assert np.array_equal(s0, b0) and np.array_equal(s1, b1)
    assert np.allclose(cov, bc, rtol=0, atol=1e-12)
    names = {ap.STATUS_NAMES[s] for s in st}
    assert names == {"ok", "partial_window", "empty_window", "out_of_range"}
    assert np.all((st == Status.OK) == (cov == 1.0))
    full = st == Status.OK
    # drift absorbed: a fully covered window without a gap holds ~ w * sr samples
    assert np.all(np.abs((s1 - s0)[full] - w * sr / 1e9) <= 2)


def test_audio_window_contiguous_blocks_map_through_block_starts():
    sr = 1000
    t = np.array([0, 1_000_500_000], np.int64)       # block 0 runs 500 ppm slow
    s0, s1, cov, st = ap.audio_window(np.array([1_000_250_000], np.int64), t,
                                      np.array([0, 1000]), np.array([1000, 1000]), sr, 2_000_000)
    # window [999.25 ms, 1001.25 ms): block 0 samples at k * 1.0005 ms -> 999 is at 999.4995
    assert (s0[0], s1[0], cov[0], st[0]) == (999, 1001, 1.0, Status.OK)


@pytest.mark.parametrize("sr,block", [(8000, 256), (48000, 1024)])
def test_audio_window_bucketed_equals_whole_session(sr, block):
    rng = np.random.default_rng(sr)
    t, pos, n = audio_blocks(rng, sr, block, 400, drift_ppm=-150, gaps=[30, 31, 32, 200])
    ticks = jittered(rng, int(t[0]) - 100 * MS, 33 * MS, int((t[-1] - t[0]) // (33 * MS)) + 6,
                     3 * MS)
    w = 100 * MS
    block_ns = round(block * 1e9 / sr)
    end = ap.audio_blocks_end(t, pos, n, sr)
    bounds = (int(t[0]), int(end[-1]))
    whole = ap.audio_window(ticks, t, pos, n, sr, w, bounds=bounds)
    M0 = ap.required_margin_ns("audio_window", window_ns=w, block_ns=block_ns)
    for B in (150 * MS, 1000 * MS):
        for M in (M0, M0 + 50 * MS):
            for b in buckets_of(ticks, B):
                own = (ticks >= b * B) & (ticks < (b + 1) * B)
                lo, hi = slice_for(t, b, B, M)
                got = ap.audio_window(ticks[own], t[lo:hi], pos[lo:hi], n[lo:hi], sr, w,
                                      bounds=bounds)
                for g, want in zip(got, whole):
                    assert np.array_equal(g, want[own])


def test_audio_window_errors_and_empty():
    one = np.array([0], np.int64)
    with pytest.raises(ValueError, match="sample_rate must be > 0"):
        ap.audio_window(one, one, one, one, 0, 10)
    with pytest.raises(ValueError, match="block_n must be > 0"):
        ap.audio_window(one, one, one, np.array([0]), 100, 10)
    s0, s1, cov, st = ap.audio_window(one, np.zeros(0, np.int64), [], [], 100, 10)
    assert (s0[0], s1[0], cov[0], st[0]) == (-1, -1, 0.0, Status.OUT_OF_RANGE)


# -- text overlap --------------------------------------------------------------------------

def test_text_overlap_overlapping_unsorted_segments():
    start = np.array([50, 0, 10, 10, 200], np.int64)
    end = np.array([60, 100, 10, 55, 300], np.int64)
    ticks = np.array([-1, 0, 10, 55, 56, 150, 200], np.int64)
    off, seg, st = ap.text_overlap(ticks, start, end)
    got = [seg[off[i]:off[i + 1]].tolist() for i in range(ticks.size)]
    assert got == [[], [1], [1, 2, 3], [0, 1, 3], [0, 1], [], [4]]
    assert [ap.STATUS_NAMES[s] for s in st] == ["no_overlap", "ok", "ok", "ok", "ok",
                                                "no_overlap", "ok"]
    with pytest.raises(ValueError, match="segment 1 ends before it starts"):
        ap.text_overlap(ticks, np.array([0, 9]), np.array([1, 8]))


@pytest.mark.parametrize("seed", range(3))
def test_text_overlap_brute_force_and_bucketed(seed):
    rng = np.random.default_rng(seed)
    ticks = jittered(rng, 0, 33 * MS, 900, 5 * MS, drop=0.1)
    start = rng.integers(-MS * 500, int(ticks[-1]), 300)
    end = start + rng.integers(0, 4000 * MS, 300)
    off, seg, st = ap.text_overlap(ticks, start, end)
    for i, x in enumerate(ticks):
        assert seg[off[i]:off[i + 1]].tolist() == np.flatnonzero((start <= x) & (x <= end)).tolist()
    for B in (100 * MS, 2000 * MS):
        for b in buckets_of(ticks, B):
            own = (ticks >= b * B) & (ticks < (b + 1) * B)
            rows = np.flatnonzero((start < (b + 1) * B) & (end >= b * B))   # overlaps the bucket
            o2, s2, st2 = ap.text_overlap(ticks[own], start[rows], end[rows])
            whole_rows = [seg[off[i]:off[i + 1]].tolist() for i in np.flatnonzero(own)]
            assert [rows[s2[o2[i]:o2[i + 1]]].tolist() for i in range(own.sum())] == whole_rows
            assert np.array_equal(st2, st[own])


def test_edge_cases_all_samples_on_bucket_edges():
    B = 1000
    t = np.arange(0, 10_001, B, dtype=np.int64)          # every sample on a bucket edge
    ticks = np.arange(0, 10_000, 250, dtype=np.int64)
    v = t.astype(float)[:, None]
    for policy, fn in (("nearest",
                        lambda tk, s, lo, hi: ap.nearest(tk, s, 500, bounds=(0, 10_000))),
                       ("interpolate", lambda tk, s, lo, hi: ap.interpolate(
                           tk, s, v[lo:hi], 1000, bounds=(0, 10_000)))):
        whole = fn(ticks, t, 0, t.size)
        M = ap.required_margin_ns(policy, tolerance_ns=500, max_gap_ns=1000)
        for b in range(10):
            own = (ticks >= b * B) & (ticks < (b + 1) * B)
            lo, hi = slice_for(t, b, B, M)
            got = fn(ticks[own], t[lo:hi], lo, hi)
            if policy == "nearest":
                assert np.array_equal(shift(got[0], lo), whole[0][own])
            else:
                assert np.array_equal(got[0], whole[0][own])
                assert np.array_equal(shift(got[1], lo), whole[1][own])
            assert np.array_equal(got[-1], whole[-1][own])


def test_required_margin_unknown_policy():
    with pytest.raises(ValueError, match="unknown alignment policy 'bogus'"):
        ap.required_margin_ns("bogus")
    assert ap.required_margin_ns("text_overlap") == 0
    assert ap.required_margin_ns("one_to_one", tolerance_ns=10) == 40
