"""Alignment kernels: one stream's samples joined to a tick timeline (numpy, and numba-compiled
single-pass merges of the sorted arrays for nearest, interpolate and one_to_one's neighbours).

Contracts shared by every kernel
--------------------------------
- Times are int64 nanoseconds on the reference clock. ``ticks`` and sample times are sorted
  ascending (non-decreasing); the caller guarantees it after validation and every kernel checks
  it in one pass (``ValueError`` naming the array otherwise).
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

import contextlib
import heapq
import threading
from collections.abc import Callable
from enum import IntEnum

import numpy as np

from mmalign.schemas import aligned
from mmalign.schemas.clock import MAX_DRIFT
from mmalign.transforms.jit import njit


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
    """``a`` as a 1-D int64 array, checked sorted ascending (one compiled pass)."""
    arr = _as_times(a, name)
    if arr.size > 1 and _first_decrease(arr) >= 0:
        _raise_unsorted(arr, name)
    return arr


def _as_times(a, name: str) -> np.ndarray:
    """``a`` as a read-only C-contiguous 1-D int64 view (no copy when it is one); order not
    checked."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of int64 ns, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer nanoseconds, got dtype {arr.dtype}")
    return _frozen(arr.astype(np.int64, copy=False))


def _frozen(arr: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous view of ``arr`` (copied only when strided). The compiled
    kernels take their inputs in this one form, so each compiles (or loads from numba's cache)
    one specialisation, whether a caller passes Arrow's read-only buffers or its own arrays."""
    view = np.ascontiguousarray(arr).view()
    view.flags.writeable = False
    return view


def _raise_unsorted(arr: np.ndarray, name: str) -> None:
    """Raise the ValueError naming the first decrease of ``arr`` (if it has one)."""
    bad = arr[1:] < arr[:-1]
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be sorted ascending; {name}[{i + 1}]="
                         f"{arr[i + 1]} < {name}[{i}]={arr[i]}")


@njit(nogil=True)
def _first_decrease(a):
    """Index of the first ``a[i] < a[i-1]``, or -1. The common case (sorted) is one SIMD pass
    with no early exit (``_any_decrease``); the index is looked for only when there is one."""
    if not _any_decrease(a):
        return -1
    for i in range(1, a.size):
        if a[i] < a[i - 1]:
            return i
    return -1


@njit(nogil=True)
def _any_decrease(a):
    bad = False
    for i in range(1, a.size):
        bad |= a[i] < a[i - 1]
    return bad


_SCAN = 16          # samples compared at once by ``_first_not_below`` (two AVX-512 vectors)


@njit(nogil=True, inline="always")
def _first_not_below(t, j, x):
    """The first position >= ``j`` with ``t[pos] >= x`` in the sorted ``t`` (searchsorted
    side="left" started at ``j``): blocks of ``_SCAN`` from ``j`` are *counted* (a branch-free
    compare-and-add the compiler vectorises) until one is not wholly below ``x``, so a merge
    step costs one well-predicted branch when samples outnumber ticks by less than 16x."""
    n = t.size
    while j + _SCAN <= n:
        c = 0
        for q in range(_SCAN):
            c += np.int64(t[j + q] < x)
        j += c
        if c < _SCAN:
            return j
    while j < n and t[j] < x:
        j += 1
    return j


@njit(nogil=True, inline="always")
def _first_above(t, j, x):
    """``_first_not_below`` for side="right": the first position >= ``j`` with t > x."""
    n = t.size
    while j + _SCAN <= n:
        c = 0
        for q in range(_SCAN):
            c += np.int64(t[j + q] <= x)
        j += c
        if c < _SCAN:
            return j
    while j < n and t[j] <= x:
        j += 1
    return j


@njit(nogil=True, inline="always")
def _run_start(t, k):
    """The first index of the run of times equal to ``t[k]`` (``k`` when unique)."""
    v = t[k]
    while k and t[k - 1] == v:
        k -= 1
    return k


def _unsorted_error(ticks: np.ndarray, t: np.ndarray, t_name: str = "t") -> None:
    """A merge kernel found an input out of order: raise the message of ``_times``, ticks
    first (the order the checks have always run in)."""
    _raise_unsorted(ticks, "ticks")
    _raise_unsorted(t, t_name)
    raise AssertionError("a merge kernel reported an unsorted input that is sorted")


def _nonneg(x: int, name: str) -> int:
    x = int(x)
    if x < 0:
        raise ValueError(f"{name} must be >= 0 ns, got {x}")
    return x


def _extent(t: np.ndarray, bounds) -> tuple[int, int]:
    """The stream's extent [lo, hi]: ``bounds``, else the samples given; with neither, an
    empty range (lo > hi), so every tick is outside it."""
    if bounds is not None:
        return int(bounds[0]), int(bounds[1])
    return (int(t[0]), int(t[-1])) if t.size else (1, 0)


def _outside(ticks: np.ndarray, t: np.ndarray, bounds) -> np.ndarray:
    """Ticks outside the stream's extent (``_extent``)."""
    lo, hi = _extent(t, bounds)
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
    with status OK, NO_SAMPLE_IN_TOLERANCE or OUT_OF_RANGE. O(m + n): one compiled merge of
    the two sorted arrays (``_nearest_merge``) that also checks their order.
    """
    ticks = _as_times(ticks, "ticks")
    t = _as_times(t, "t")
    tol = _nonneg(tolerance_ns, "tolerance_ns")
    m = ticks.size
    idx = np.empty(m, np.int64)
    dt = np.empty(m, np.int64)
    status = np.empty(m, STATUS_DTYPE)
    lo, hi = _extent(t, bounds)
    if _nearest_merge(ticks, t, tol, lo, hi, idx, dt, status):
        _unsorted_error(ticks, t)
    return idx, dt, status


@njit(nogil=True)
def _nearest_merge(ticks, t, tol, lo, hi, idx, dt, status):
    """``nearest`` in one pass over both sorted arrays; 0, or 1 when one is out of order.

    ``j`` is the first sample >= the tick (searchsorted side="left"), so the right candidate
    is already the first of its equal times; the left one, ``j - 1``, is the last of its run,
    whose start is looked up once per ``j`` (ties and duplicates as documented in
    ``nearest``: every run is walked at most once, O(n) in all)."""
    if _any_decrease(ticks) or _any_decrease(t):
        return 1
    m, n = ticks.size, t.size
    j = 0
    run_j = -1                              # the j whose left run start is in ``run``
    run = 0
    for i in range(m):
        x = ticks[i]
        j = _first_not_below(t, j, x)
        k = -1
        d = 0
        if j < n:
            dr = t[j] - x
            if j and x - t[j - 1] <= dr:
                k = j - 1
                d = t[k] - x
            else:
                k = j
                d = dr
        elif j:                              # after the last sample
            k = j - 1
            d = t[k] - x
        if k >= 0 and abs(d) <= tol:
            if k < j:                        # the left candidate: the first of equal times
                if run_j != j:
                    run = _run_start(t, k)
                    run_j = j
                k = run
            idx[i] = k
            dt[i] = d
            status[i] = 0                    # Status.OK
        else:
            idx[i] = -1
            dt[i] = 0
            status[i] = 3 if (x < lo or x > hi) else 1   # OUT_OF_RANGE : NO_SAMPLE_IN_TOLERANCE
    return 0


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
    best = np.empty(a.size, np.int64)
    _best_partner_merge(_frozen(a), _frozen(b), tol, a_first, best)
    return best


@njit(nogil=True)
def _best_partner_merge(a, b, tol, a_first, best):
    """``_best_partner`` as one merge of the sorted ``a`` and ``b``: ``r`` is
    searchsorted(b, a, side="left" if a_first else "right")."""
    nb = b.size
    r = 0
    for i in range(a.size):
        x = a[i]
        r = _first_not_below(b, r, x) if a_first else _first_above(b, r, x)
        k = -1
        if r > 0 and (r == nb or x - b[r - 1] <= b[r] - x):
            if x - b[r - 1] <= tol:
                k = r - 1
        elif r < nb and b[r] - x <= tol:
            k = r
        best[i] = k


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

    Yields (tick index, sample index). Sequential by nature; one heap push/pop per pair, in
    compiled code (``_greedy_heap_kernel``)."""
    times = np.concatenate([ticks[T], t[S]])
    kind = np.concatenate([np.zeros(T.size, np.int8), np.ones(S.size, np.int8)])
    ref = np.concatenate([T, S]).astype(np.int64, copy=False)
    order = np.lexsort((ref, kind, times))                  # the merged order
    pi, pj = _greedy_heap_kernel(times[order], kind[order], ref[order], tol)
    yield from zip(pi.tolist(), pj.tolist())


@njit(nogil=True)
def _greedy_heap_kernel(times, kind, ref, tol):
    """(tick refs, sample refs) of the pairs the greedy takes, in the order it takes them.
    Heap items are (gap, later position, -earlier position): the documented tie order."""
    k = times.size
    prv = np.arange(-1, k - 1)
    nxt = np.arange(1, k + 1)
    if k:
        nxt[k - 1] = -1
    alive = np.ones(k, np.bool_)
    heap = [(np.int64(0), np.int64(0), np.int64(0)) for _ in range(0)]
    for p in range(k - 1):
        if kind[p] != kind[p + 1] and times[p + 1] - times[p] <= tol:
            heap.append((times[p + 1] - times[p], np.int64(p + 1), np.int64(-p)))
    heapq.heapify(heap)
    out_i = np.empty(k // 2 + 1, np.int64)
    out_j = np.empty(k // 2 + 1, np.int64)
    taken = 0
    while heap:
        _, hi, neg_lo = heapq.heappop(heap)
        lo = -neg_lo
        if not (alive[lo] and alive[hi] and nxt[lo] == hi):
            continue
        alive[lo] = False
        alive[hi] = False
        if kind[lo] == 0:
            out_i[taken], out_j[taken] = ref[lo], ref[hi]
        else:
            out_i[taken], out_j[taken] = ref[hi], ref[lo]
        taken += 1
        p, q = prv[lo], nxt[hi]
        if p >= 0:
            nxt[p] = q
        if q >= 0:
            prv[q] = p
        if p >= 0 and q >= 0 and kind[p] != kind[q] and times[q] - times[p] <= tol:
            heapq.heappush(heap, (times[q] - times[p], np.int64(q), np.int64(-p)))
    return out_i[:taken], out_j[:taken]


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
    missing), status)`` with status OK, GAP_TOO_LARGE or OUT_OF_RANGE. O(m c + n): one compiled
    merge of the sorted arrays (``_interpolate_merge``) that also checks their order.
    """
    ticks, t = _as_times(ticks, "ticks"), _as_times(t, "t")
    gap_max = _nonneg(max_gap_ns, "max_gap_ns")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    v = _frozen(v)
    if v.ndim != 2 or v.shape[0] != t.size:
        _times(ticks, "ticks"), _times(t, "t")          # an order error comes first
        raise ValueError(f"values must have shape (len(t)={t.size}, channels), got {v.shape}")
    m, c = ticks.size, v.shape[1]
    out = np.empty((m, c))
    left = np.empty(m, np.int64)
    right = np.empty(m, np.int64)
    status = np.empty(m, STATUS_DTYPE)
    lo, hi = _extent(t, bounds)
    if _interpolate_merge(ticks, t, v, gap_max, lo, hi, out, left, right, status):
        _unsorted_error(ticks, t)
    return out, left, right, status


@njit(nogil=True)
def _interpolate_merge(ticks, t, v, gap_max, lo, hi, out, left, right, status):
    """``interpolate`` in one pass over both sorted arrays; 0, or 1 when one is out of order.
    The arithmetic is numpy's, operation for operation (no fused multiply-add), so values are
    bit-identical to the vectorised formula."""
    if _any_decrease(ticks) or _any_decrease(t):
        return 1
    m, n, c = ticks.size, t.size, v.shape[1]
    j = 0
    for i in range(m):
        x = ticks[i]
        j = _first_not_below(t, j, x)       # first sample >= tick
        if j < n and t[j] == x:
            for k in range(c):
                out[i, k] = v[j, k]
            left[i] = j
            right[i] = j
            status[i] = 0                                    # Status.OK
        elif 0 < j < n and t[j] - t[j - 1] <= gap_max:
            frac = (x - t[j - 1]) / (t[j] - t[j - 1])
            for k in range(c):
                vl = v[j - 1, k]
                out[i, k] = vl + (v[j, k] - vl) * frac
            left[i] = j - 1
            right[i] = j
            status[i] = 0
        else:
            for k in range(c):
                out[i, k] = np.nan
            left[i] = -1
            right[i] = -1
            status[i] = 3 if (x < lo or x > hi) else 2       # OUT_OF_RANGE : GAP_TOO_LARGE
    return 0


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


# -- start-up ------------------------------------------------------------------------------

def warm() -> None:
    """Load the compiled kernels of the common policies now (numba's cache, or a compile).

    The first call of a kernel in a process initialises numba and loads it from the on-disk
    cache (0.3-1.3 s here); a job calls this on a spare thread while it starts, so the first
    bucket does not wait for it (idempotent; a kernel already loaded costs microseconds)."""
    ticks = np.array([0, 10, 20], np.int64)
    t = np.array([1, 9, 11, 19], np.int64)
    nearest(ticks, t, 5)
    one_to_one(ticks, t, 5)
    interpolate(ticks, t, np.zeros((t.size, 1)), 5)


def warm_in_background(*also: Callable[[], object]) -> threading.Thread:
    """:func:`warm`, then each of ``also`` (another stage's warm-up), on a daemon thread
    (jobs whose workers share this process: the local runner, Prism's LOOPBACK; the sliced
    backfill's parent, while its first workers decode); an error is left for the first real
    call to raise."""
    def run() -> None:
        for fn in (warm, *also):
            with contextlib.suppress(Exception):
                fn()
    thread = threading.Thread(target=run, name="mmalign-warm-kernels", daemon=True)
    thread.start()
    return thread


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
