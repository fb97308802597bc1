"""Alignment kernels: one stream's samples joined to a tick timeline, plain numpy.

Contracts shared by every kernel
--------------------------------
- Times are int64 nanoseconds on the reference clock. ``ticks`` and sample times are sorted
  ascending (non-decreasing); the caller guarantees it after validation and every kernel checks
  it in one vectorised pass (``ValueError`` naming the array otherwise).
- Every tick gets a status (``Status``, int8; ``STATUS_NAMES[s]`` is its column text). A tick
  without a value always says why; a missing value is ``-1`` (indices) or NaN (values).
- ``bounds=(first_ns, last_ns)``: the extent of the *whole* stream. ``OUT_OF_RANGE`` means the
  tick lies outside it. Default: the extent of the samples given. A bucket sees only part of the
  stream, so for bucketed statuses to equal whole-session statuses the caller passes the
  stream's extent (otherwise only OUT_OF_RANGE vs NO_SAMPLE_IN_TOLERANCE / GAP_TOO_LARGE /
  EMPTY_WINDOW can differ; indices, dt and values never do).

Bucketing (``required_margin_ns``)
----------------------------------
A bucket owns the ticks in ``[b*B, (b+1)*B)`` and sees the samples in ``[b*B - M, (b+1)*B + M)``.
With ``M = required_margin_ns(policy, ...)`` a bucket's result for its ticks equals the
whole-session result (indices shifted by the bucket's first sample), proved per policy:

- nearest: a match is within ``tolerance`` of its tick, so ``M = tolerance``.
- interpolate: a usable bracket is at most ``max_gap`` wide and contains the tick: ``M = max_gap``.
- audio_window: the block holding the window start begins at most one block before it, and a
  block's end depends on the next block's start, at most one block (x (1 + drift) + the 1/8
  contiguity slack, < 2 blocks) after the window end: ``M = ceil(window/2) + 2*block + 2``.
- text_overlap: segments are intervals; the bucketing assigns a segment to *every* bucket its
  ``[start, end]`` overlaps (transforms/buckets.interval_buckets), so ``M = 0``.
- one_to_one: see ``one_to_one``; the bucket needs the *ticks* of the margin too, and ticks whose
  decision is not provably local come back as ``NOT_LOCAL`` (value withheld): ``M = 4*tolerance``.
"""

from __future__ import annotations

import heapq
from enum import IntEnum

import numpy as np

from mmalign.schemas import aligned
from mmalign.schemas.clock import MAX_DRIFT


class Status(IntEnum):
    OK = 0
    NO_SAMPLE_IN_TOLERANCE = 1   # nearest/one_to_one: no sample within tolerance of the tick
    GAP_TOO_LARGE = 2            # interpolate: the bracketing samples are > max_gap apart
    OUT_OF_RANGE = 3             # tick before the stream's first / after its last sample
    TAKEN = 4                    # one_to_one: every candidate went to a closer tick
    NO_OVERLAP = 5               # text_overlap: no segment contains the tick
    PARTIAL_WINDOW = 6           # audio_window: samples missing for part of the window
    EMPTY_WINDOW = 7             # audio_window: the window falls in a gap between blocks
    NOT_LOCAL = 8                # one_to_one in a bucket: decision may depend on data beyond it


STATUS_NAMES = aligned.STATUS_NAMES   # the column text of each Status code
assert STATUS_NAMES == tuple(s.name.lower() for s in Status)
STATUS_DTYPE = np.int8
ONE_TO_ONE_MARGIN_TOLERANCES = 4
DEFAULT_AUDIO_BLOCK_NS = 1_024_000_000   # 1024-sample blocks at the lowest allowed rate, 1 kHz
# audio blocks whose start is within 1/CONTIGUOUS_SLACK of a block of the nominal position are
# contiguous: more than any clock drift (MAX_DRIFT, 10 %)
CONTIGUOUS_SLACK = 8
assert 1 / CONTIGUOUS_SLACK > MAX_DRIFT
_BIG = np.iinfo(np.int64).max


# -- input checks --------------------------------------------------------------------------

def _times(a, name: str) -> np.ndarray:
    """``a`` as a 1-D int64 array, checked sorted ascending (one vectorised pass)."""
    return _times_dup(a, name)[0]


def _times_dup(a, name: str) -> tuple[np.ndarray, bool]:
    """(``a`` as 1-D int64 checked sorted ascending, whether it has equal neighbours)."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of int64 ns, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64, copy=False), False
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer nanoseconds, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size > 1:
        flat = arr[1:] <= arr[:-1]                  # one pass finds decreases and duplicates
        if flat.any():
            bad = arr[1:] < arr[:-1]
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"{name} must be sorted ascending; {name}[{i + 1}]="
                                 f"{arr[i + 1]} < {name}[{i}]={arr[i]}")
            return arr, True
    return arr, False


def _nonneg(x: int, name: str) -> int:
    x = int(x)
    if x < 0:
        raise ValueError(f"{name} must be >= 0 ns, got {x}")
    return x


def _outside(ticks: np.ndarray, t: np.ndarray, bounds) -> np.ndarray:
    """Ticks outside the stream's extent (bounds, else the samples given)."""
    if bounds is None:
        if t.size == 0:
            return np.ones(ticks.size, bool)
        lo, hi = int(t[0]), int(t[-1])
    else:
        lo, hi = int(bounds[0]), int(bounds[1])
    return (ticks < lo) | (ticks > hi)


def _miss_status(ok: np.ndarray, outside: np.ndarray, inside_reason: Status) -> np.ndarray:
    status = np.where(outside, Status.OUT_OF_RANGE, inside_reason).astype(STATUS_DTYPE)
    status[ok] = Status.OK
    return status


# -- 1. nearest ----------------------------------------------------------------------------

def nearest(ticks, t, tolerance_ns: int, *, bounds=None):
    """Many-to-one: each tick takes the sample closest in time, if ``|dt| <= tolerance_ns``.

    Ties go to the earlier sample; among samples with equal times, the first. Returns
    ``(idx int64[m] (-1 when none), dt int64[m] = t[idx] - tick (0 when none), status int8[m])``
    with status OK, NO_SAMPLE_IN_TOLERANCE or OUT_OF_RANGE. O(m log n).
    """
    ticks = _times(ticks, "ticks")
    t, has_dup = _times_dup(t, "t")
    tol = _nonneg(tolerance_ns, "tolerance_ns")
    m, n = ticks.size, t.size
    if n and m:
        # ticks are sorted, so r == 0 is a prefix of them and r == n a suffix
        k0 = int(np.searchsorted(ticks, t[0], side="right"))
        k1 = int(np.searchsorted(ticks, t[-1], side="right"))
        rc = np.searchsorted(t, ticks, side="left")         # first sample >= tick
        lc = rc - 1
        lc[:k0] = 0
        rc[k1:] = n - 1
        tl = t[lc]
        dl = ticks - tl
        dl[:k0] = _BIG
        dr = t[rc]
        dr -= ticks
        dr[k1:] = _BIG
        left = dl <= dr
        ok = np.minimum(dl, dr) <= tol
        idx = np.where(left, lc, rc)
        if has_dup:                                         # equal times: take the first
            dup = ok & left & (lc > 0)
            dup[dup] = t[lc[dup] - 1] == tl[dup]
            if dup.any():
                idx[dup] = np.searchsorted(t, tl[dup], side="left")
        dt = np.where(left, -dl, dr)
        idx[~ok] = -1
        dt[~ok] = 0
    else:
        idx = np.full(m, -1, np.int64)
        dt = np.zeros(m, np.int64)
        ok = np.zeros(m, bool)
    return idx, dt, _miss_status(ok, _outside(ticks, t, bounds), Status.NO_SAMPLE_IN_TOLERANCE)


# -- 2. one-to-one -------------------------------------------------------------------------

def one_to_one(ticks, t, tolerance_ns: int, *, context=None, bounds=None):
    """Greedy one-to-one association: each sample and each tick used at most once.

    Semantics (exact): the candidate pairs are (tick, sample) with ``|dt| <= tolerance``; they
    are taken in ascending ``|dt|`` when both members are still free. Ties: put ticks and samples
    in one *merged order* (time, then ticks before samples, then index); among equal ``|dt|`` the
    pair whose later member comes first in that order wins, then the pair whose earlier member
    comes last. (So a tie between an earlier and a later sample goes to the earlier one.)

    Algorithm, O((m+n) log(m+n)): rounds of *mutual best* pairs (each tick's best remaining
    sample is one of its two neighbours in time, and vice versa; a pair that is each other's
    best is the smallest pair at both members, so the greedy takes it) done vectorised; when a
    round settles < 1/8 of what is left, the rest runs through a heap over pairs adjacent in
    the merged order (the smallest remaining pair is always adjacent there) - a tight Python
    loop, the only inherently sequential part. Elements with no candidate drop out each round.

    ``context=(lo, hi)``: the ticks and samples given are exactly those of the session in
    ``[lo, hi)`` (a bucket plus its margin, for ticks AND samples). A pair's outcome depends only
    on smaller pairs sharing a member, recursively; the decision chains of a tick can run
    arbitrarily far (alternating ticks and samples with shrinking gaps), so no finite margin is
    exact. Instead we mark *tainted* every pair touching an element within ``tolerance`` of the
    context edge (it may have unseen candidates), then every pair sharing a member with a smaller
    tainted pair, to a fixpoint. A tick with no tainted pair and no unseen candidate is decided
    exactly as in the whole session (induction in pair order: its smaller neighbours are
    untainted, so present with the same outcome); the others get ``NOT_LOCAL`` (idx -1).

    Returns ``(idx, dt, status)`` as ``nearest``; status OK, NO_SAMPLE_IN_TOLERANCE (no
    candidate), TAKEN (candidates all went to closer ticks), OUT_OF_RANGE or NOT_LOCAL.
    """
    ticks, t = _times(ticks, "ticks"), _times(t, "t")
    tol = _nonneg(tolerance_ns, "tolerance_ns")
    m = ticks.size
    match, has_cand = _greedy_match(ticks, t, tol)
    ok = match >= 0
    dt = np.zeros(m, np.int64)
    dt[ok] = t[match[ok]] - ticks[ok]
    status = _miss_status(ok, _outside(ticks, t, bounds), Status.NO_SAMPLE_IN_TOLERANCE)
    status[has_cand & ~ok] = Status.TAKEN
    if context is not None:
        unsure = _not_local(ticks, t, tol, int(context[0]), int(context[1]))
        match[unsure] = -1
        dt[unsure] = 0
        status[unsure] = Status.NOT_LOCAL
    return match, dt, status


def _best_partner(a: np.ndarray, b: np.ndarray, tol: int, a_first: bool):
    """For each time in ``a``, the position of its best partner in ``b`` (-1: none within tol).

    ``a_first``: at equal times ``a`` elements come before ``b`` elements in the merged order
    (true for ticks against samples). The left neighbour wins ties (see one_to_one)."""
    r = np.searchsorted(b, a, side="left" if a_first else "right")
    nb = b.size
    dl = np.where(r > 0, a - b[np.maximum(r - 1, 0)], _BIG)
    dr = np.where(r < nb, b[np.minimum(r, nb - 1)] - a, _BIG)
    best = np.where(dl <= dr, r - 1, r)
    best[np.minimum(dl, dr) > tol] = -1
    return best


def _greedy_match(ticks: np.ndarray, t: np.ndarray, tol: int):
    """(sample index per tick or -1, tick had any candidate) of the greedy association."""
    m = ticks.size
    match = np.full(m, -1, np.int64)
    has_cand = np.zeros(m, bool)
    T = np.arange(m, dtype=np.int64)
    S = np.arange(t.size, dtype=np.int64)
    first = True
    while T.size and S.size:
        tt, ts = ticks[T], t[S]
        tb = _best_partner(tt, ts, tol, a_first=True)
        sb = _best_partner(ts, tt, tol, a_first=False)
        if first:
            has_cand[T] = tb >= 0
            first = False
        mutual = tb >= 0
        mutual[mutual] = sb[tb[mutual]] == np.flatnonzero(mutual)
        match[T[mutual]] = S[tb[mutual]]
        taken = np.zeros(S.size, bool)
        taken[tb[mutual]] = True
        settled = 2 * int(mutual.sum())
        left = T.size + S.size
        T = T[(tb >= 0) & ~mutual]
        S = S[(sb >= 0) & ~taken]
        if settled * 8 < left and T.size and S.size:
            for i, j in _greedy_heap(ticks, t, tol, T, S):
                match[i] = j
            break
    return match, has_cand


def _greedy_heap(ticks: np.ndarray, t: np.ndarray, tol: int, T: np.ndarray, S: np.ndarray):
    """The greedy association of ticks[T] and t[S] by a heap over merged-order neighbours.

    Yields (tick index, sample index). Sequential by nature; one heap push/pop per pair."""
    times = np.concatenate([ticks[T], t[S]])
    kind = np.concatenate([np.zeros(T.size, np.int8), np.ones(S.size, np.int8)])
    ref = np.concatenate([T, S])
    order = np.lexsort((ref, kind, times))                  # the merged order
    times, kind, ref = times[order].tolist(), kind[order].tolist(), ref[order].tolist()
    k = len(times)
    prv = list(range(-1, k - 1))
    nxt = list(range(1, k + 1))
    nxt[-1] = -1
    alive = [True] * k
    heap = [(times[p + 1] - times[p], p + 1, -p) for p in range(k - 1)
            if kind[p] != kind[p + 1] and times[p + 1] - times[p] <= tol]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, hi, neg_lo = pop(heap)
        lo = -neg_lo
        if not (alive[lo] and alive[hi] and nxt[lo] == hi):
            continue
        alive[lo] = alive[hi] = False
        yield (ref[lo], ref[hi]) if kind[lo] == 0 else (ref[hi], ref[lo])
        p, q = prv[lo], nxt[hi]
        if p >= 0:
            nxt[p] = q
        if q >= 0:
            prv[q] = p
        if p >= 0 and q >= 0 and kind[p] != kind[q] and times[q] - times[p] <= tol:
            push(heap, (times[q] - times[p], q, -p))


def _not_local(ticks: np.ndarray, t: np.ndarray, tol: int, c_lo: int, c_hi: int) -> np.ndarray:
    """Ticks whose one_to_one decision may depend on data outside the context [c_lo, c_hi)."""
    m = ticks.size
    tick_edge = (ticks - tol < c_lo) | (ticks + tol >= c_hi)
    samp_edge = (t - tol < c_lo) | (t + tol >= c_hi)
    lo = np.searchsorted(t, ticks - tol, side="left")
    hi = np.searchsorted(t, ticks + tol, side="right")
    cnt = hi - lo
    E = int(cnt.sum())
    if E == 0:
        return tick_edge
    ei = np.repeat(np.arange(m, dtype=np.int64), cnt)
    ej = np.arange(E, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
    # merged-order positions: ticks before samples at equal times
    pos_t = np.arange(m, dtype=np.int64) + np.searchsorted(t, ticks, side="left")
    pos_s = np.arange(t.size, dtype=np.int64) + np.searchsorted(ticks, t, side="right")
    pi, pj = pos_t[ei], pos_s[ej]
    rank = np.empty(E, np.int64)
    rank[np.lexsort((-np.minimum(pi, pj), np.maximum(pi, pj), np.abs(t[ej] - ticks[ei])))] = \
        np.arange(E)
    # tau: the smallest tainted pair rank at each element (-1: element at the context edge)
    tau_t = np.where(tick_edge, -1, E).astype(np.int64)
    tau_s = np.where(samp_edge, -1, E).astype(np.int64)
    while True:
        tainted = rank > np.minimum(tau_t[ei], tau_s[ej])
        new_t, new_s = tau_t.copy(), tau_s.copy()
        np.minimum.at(new_t, ei[tainted], rank[tainted])
        np.minimum.at(new_s, ej[tainted], rank[tainted])
        if np.array_equal(new_t, tau_t) and np.array_equal(new_s, tau_s):
            break
        tau_t, tau_s = new_t, new_s
    out = tick_edge.copy()
    out[ei[tainted]] = True
    return out


# -- 3. interpolate ------------------------------------------------------------------------

def interpolate(ticks, t, values, max_gap_ns: int, *, bounds=None):
    """Linear interpolation of ``values`` (float64[n, c], or [n] as one channel) at the ticks.

    A tick equal to a sample time takes that sample (the first of equal times): left = right =
    its index. Otherwise the bracket is the last sample before and the first after the tick;
    it is used when ``t[right] - t[left] <= max_gap_ns``: v = v_l + (v_r - v_l) * (tick - t_l) /
    (t_r - t_l), the fraction computed from int64 differences (exact for epoch-ns times).
    Returns ``(values float64[m, c] (NaN when missing), left int64[m], right int64[m] (-1 when
    missing), status)`` with status OK, GAP_TOO_LARGE or OUT_OF_RANGE. O(m log n + m c).
    """
    ticks, t = _times(ticks, "ticks"), _times(t, "t")
    gap_max = _nonneg(max_gap_ns, "max_gap_ns")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] != t.size:
        raise ValueError(f"values must have shape (len(t)={t.size}, channels), got {v.shape}")
    m, n, c = ticks.size, t.size, v.shape[1]
    out = np.full((m, c), np.nan)
    left = np.full(m, -1, np.int64)
    right = np.full(m, -1, np.int64)
    if n and m:
        r = np.searchsorted(t, ticks, side="left")          # first sample >= tick
        rc = np.minimum(r, n - 1)
        lc = np.maximum(r - 1, 0)
        exact = (r < n) & (t[rc] == ticks)
        span = t[rc] - t[lc]
        inner = ~exact & (r > 0) & (r < n) & (span <= gap_max)
        ie = np.flatnonzero(exact)
        out[ie] = v[rc[ie]]
        left[ie] = right[ie] = rc[ie]
        ii = np.flatnonzero(inner)
        li, ri = lc[ii], rc[ii]
        frac = ((ticks[ii] - t[li]) / span[ii])[:, None]
        vl = v[li]
        out[ii] = vl + (v[ri] - vl) * frac
        left[ii], right[ii] = li, ri
    ok = left >= 0
    return out, left, right, _miss_status(ok, _outside(ticks, t, bounds), Status.GAP_TOO_LARGE)


# -- 4. audio window -----------------------------------------------------------------------

def audio_blocks_end(block_t, block_pos, block_n, sample_rate: int) -> np.ndarray:
    """End time (exclusive) of each block's samples on the reference clock.

    A block is *contiguous* with the next when its samples continue (``pos + n == next pos``)
    and the next starts where the nominal rate says, within max(one sample, 1/8 of the block):
    this absorbs ns rounding and any clock drift a model may carry (|drift| <= ``MAX_DRIFT``,
    10 %), so a drifting stream's blocks, which on the reference clock last ``(1 + drift)``
    times their nominal duration, still tile the time without holes. A contiguous block ends at
    the next block's start, so time -> sample is piecewise linear through the block starts
    (the window is measured in the same clock as the blocks: a full window is ``ok`` at any
    drift and holds ``w * rate / (1 + drift)`` device samples). Otherwise it ends after its
    nominal duration ``round(n * 1e9 / rate)`` (clipped at the next start; on the reference
    clock it truly lasts ``(1 + drift)`` times that: the last block of a stream, or one before
    a hole, is off by drift x its duration, 5 us for 1024 samples at 44.1 kHz and 200 ppm) and
    the time up to the next block has no samples."""
    bt = np.asarray(block_t, np.int64)
    n = np.asarray(block_n, np.int64)
    pos = np.asarray(block_pos, np.int64)
    dur = (n * 1_000_000_000 + sample_rate // 2) // sample_rate
    end = bt + dur
    if bt.size > 1:
        thr = np.maximum(-(-1_000_000_000 // sample_rate), dur[:-1] // CONTIGUOUS_SLACK)
        step = bt[1:] - bt[:-1]
        contiguous = (pos[:-1] + n[:-1] == pos[1:]) & (np.abs(step - dur[:-1]) <= thr)
        end[:-1] = np.where(contiguous, bt[1:], np.minimum(end[:-1], bt[1:]))
    return end


def audio_window(ticks, block_t, block_pos, block_n, sample_rate: int, window_ns: int, *,
                 bounds=None):
    """Source sample range of the window ``[tick - w//2, tick - w//2 + w)`` around each tick.

    Blocks are (time of first sample, source index of first sample, sample count), sorted by
    time; sample q of block k sits at ``t_k + q * (end_k - t_k) / n_k`` (``audio_blocks_end``).
    Returns ``(sample_start, sample_end, coverage, status)``: ``[sample_start, sample_end)`` are
    the source indices of the samples whose time is in the window (-1, -1 when none);
    ``coverage`` in [0, 1] is the fraction of the window's time covered by blocks. Status OK
    (coverage 1), PARTIAL_WINDOW (0 < coverage < 1), EMPTY_WINDOW (window inside a gap between
    blocks) or OUT_OF_RANGE (window wholly before the first block / after the last block's end;
    ``bounds`` = (first block start, last block end) of the whole stream). O((m + n) log n).
    """
    ticks = _times(ticks, "ticks")
    bt = _times(block_t, "block_t")
    pos = np.asarray(block_pos, np.int64)
    n = np.asarray(block_n, np.int64)
    if not (pos.shape == n.shape == bt.shape):
        raise ValueError(f"block_t, block_pos, block_n must have the same length, got "
                         f"{bt.size}, {pos.size}, {n.size}")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
    if int(window_ns) <= 0:
        raise ValueError(f"window_ns must be > 0, got {window_ns}")
    if n.size and n.min() <= 0:
        raise ValueError(f"block_n must be > 0; block {int(np.argmin(n))} has {int(n.min())}")
    sr, w = int(sample_rate), int(window_ns)
    m, k = ticks.size, bt.size
    a = ticks - w // 2
    b = a + w
    s0 = np.full(m, -1, np.int64)
    s1 = np.full(m, -1, np.int64)
    if k == 0 or m == 0:
        cov = np.zeros(m)
        outside = np.ones(m, bool) if bounds is None else (b <= bounds[0]) | (a >= bounds[1])
        status = np.where(outside, Status.OUT_OF_RANGE, Status.EMPTY_WINDOW).astype(STATUS_DTYPE)
        return s0, s1, cov, status
    end = audio_blocks_end(bt, pos, n, sr)
    seg = end - bt
    cum = np.concatenate([[0], np.cumsum(seg)])

    def covered_until(x):                                   # block time covered before x
        j = np.searchsorted(bt, x, side="right") - 1
        jc = np.maximum(j, 0)
        part = np.clip(x - bt[jc], 0, seg[jc])
        return np.where(j >= 0, cum[jc] + part, 0)

    covered = covered_until(b) - covered_until(a)
    has = covered > 0
    seg1 = np.maximum(seg, 1)
    # first sample with time >= a
    j = np.searchsorted(bt, a, side="right") - 1
    jc = np.maximum(j, 0)
    q = -((-np.clip(a - bt[jc], 0, seg1[jc]) * n[jc]) // seg1[jc])     # clip: no overflow
    nxt = np.minimum(jc + 1, k - 1)
    first = np.where(q < n[jc], pos[jc] + q, np.where(jc + 1 < k, pos[nxt], pos[jc] + n[jc]))
    first = np.where(j >= 0, first, pos[0])
    # one past the last sample with time < b
    j2 = np.searchsorted(bt, b, side="left") - 1
    j2c = np.maximum(j2, 0)
    cnt = np.minimum(n[j2c], -((-np.clip(b - bt[j2c], 0, seg1[j2c]) * n[j2c]) // seg1[j2c]))
    last = pos[j2c] + cnt
    s0[has], s1[has] = first[has], last[has]
    cov = covered / w
    lo, hi = (int(bt[0]), int(end[-1])) if bounds is None else (int(bounds[0]), int(bounds[1]))
    outside = (b <= lo) | (a >= hi)
    status = np.where(outside, Status.OUT_OF_RANGE, Status.EMPTY_WINDOW).astype(STATUS_DTYPE)
    status[has] = Status.PARTIAL_WINDOW
    status[covered == w] = Status.OK
    return s0, s1, cov, status


# -- 5. text overlap -----------------------------------------------------------------------

def text_overlap(ticks, start, end):
    """Segments whose closed interval ``[start, end]`` contains each tick, as CSR.

    Segments may overlap and come in any order (no sort needed on start or end). Returns
    ``(offsets int64[m+1], seg_idx int64[k], status)``: the segments of tick i are
    ``seg_idx[offsets[i]:offsets[i+1]]`` in ascending segment index; status OK or NO_OVERLAP.
    Each segment covers a contiguous run of ticks (two searchsorted), the runs are expanded and
    grouped by tick with one stable sort: O((m + n) log m + k log k) for k output pairs.
    """
    ticks = _times(ticks, "ticks")
    s = np.asarray(start, np.int64)
    e = np.asarray(end, np.int64)
    if s.shape != e.shape or s.ndim != 1:
        raise ValueError(f"start and end must be 1-D of the same length, got {s.shape}, {e.shape}")
    if s.size and (e < s).any():
        i = int(np.argmax(e < s))
        raise ValueError(f"segment {i} ends before it starts: end={e[i]} < start={s[i]}")
    m = ticks.size
    lo = np.searchsorted(ticks, s, side="left")
    hi = np.searchsorted(ticks, e, side="right")
    cnt = hi - lo
    k = int(cnt.sum())
    seg = np.repeat(np.arange(s.size, dtype=np.int64), cnt)
    tick_of = np.arange(k, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt) + \
        np.repeat(lo, cnt)
    order = np.argsort(tick_of, kind="stable")
    seg_idx = seg[order]
    per_tick = np.bincount(tick_of, minlength=m)
    offsets = np.zeros(m + 1, np.int64)
    np.cumsum(per_tick, out=offsets[1:])
    status = np.where(per_tick > 0, Status.OK, Status.NO_OVERLAP).astype(STATUS_DTYPE)
    return offsets, seg_idx, status


# -- bucketing -----------------------------------------------------------------------------

def required_margin_ns(policy: str, *, tolerance_ns: int = 0, max_gap_ns: int = 0,
                       window_ns: int = 0, block_ns: int | None = None) -> int:
    """The sample margin M a bucket needs for ``policy`` (see the module docstring).

    one_to_one: the margin applies to ticks as well as samples and ``one_to_one`` must get
    ``context=(b*B - M, (b+1)*B + M)``. audio_window: ``block_ns`` is the longest block's
    duration (default ``DEFAULT_AUDIO_BLOCK_NS``, 1024 samples at 1 kHz)."""
    if policy == "nearest":
        return _nonneg(tolerance_ns, "tolerance_ns")
    if policy == "one_to_one":
        return ONE_TO_ONE_MARGIN_TOLERANCES * _nonneg(tolerance_ns, "tolerance_ns")
    if policy == "interpolate":
        return _nonneg(max_gap_ns, "max_gap_ns")
    if policy == "audio_window":
        w = _nonneg(window_ns, "window_ns")
        blk = DEFAULT_AUDIO_BLOCK_NS if block_ns is None else _nonneg(block_ns, "block_ns")
        return w - w // 2 + 2 * blk + 2
    if policy == "text_overlap":
        return 0
    raise ValueError(f"unknown alignment policy {policy!r}; expected one of nearest, one_to_one, "
                     "interpolate, audio_window, text_overlap")
