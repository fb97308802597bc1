"""Dynamic time warping engines for DTW-sync.

``banded_dtw`` is the default engine: exact DTW restricted to a per-row window of columns
(a Sakoe-Chiba band around a line), a numba-compiled dynamic programme swept by
anti-diagonals (vectorised inner loop) that keeps three cost anti-diagonals and one byte of
back-pointer per band cell, so memory is O(n * band), never O(n * m).
``fastdtw_path`` wraps the ``fastdtw`` package (approximate, multiscale) as the selectable
alternative. Both return a ``DTWResult`` with the path as two int64 index arrays.

Step pattern: (i-1, j-1), (i-1, j), (i, j-1), all weight 1; ties prefer the diagonal, then
(i-1, j), then (i, j-1). Local cost: ``abs`` |x - y| (as fastdtw) or ``sq`` (x - y)**2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastdtw import fastdtw

from mmalign.transforms.jit import njit

METRICS = ("abs", "sq")
ENGINES = ("banded", "fastdtw")
FASTDTW_RADIUS = 10


@dataclass(frozen=True)
class DTWResult:
    cost: float              # sum of local costs along the path
    path_i: np.ndarray       # int64, index into x, non-decreasing, from 0 to n-1
    path_j: np.ndarray       # int64, index into y, non-decreasing, from 0 to m-1
    engine: str


def _check_series(x, name: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"DTW input {name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"DTW input {name} has NaN or infinite values; fill or drop them first")
    return a


def diagonal_band(n: int, m: int, half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row column window [lo, hi) of a Sakoe-Chiba band of ``half_width`` cells around the
    line from (0, 0) to (n-1, m-1)."""
    if n < 1 or m < 1:
        raise ValueError(f"band needs n >= 1 and m >= 1, got n={n}, m={m}")
    if half_width < 0:
        raise ValueError(f"band half_width must be >= 0, got {half_width}")
    slope = (m - 1) / (n - 1) if n > 1 else 0.0
    centre = np.arange(n, dtype=np.float64) * slope
    # at least one cell either side of a fractional centre keeps rows connected
    w = max(half_width, int(np.ceil(slope)))
    lo = np.clip(np.ceil(centre - w - 1e-9), 0, m - 1).astype(np.int64)
    hi = np.clip(np.floor(centre + w + 1e-9) + 1, 1, m).astype(np.int64)
    lo[0], hi[-1] = 0, m
    return lo, hi


def check_band(lo: np.ndarray, hi: np.ndarray, m: int) -> None:
    """Raise ValueError unless [lo, hi) rows form a band a path can cross from (0,0) to the
    last cell."""
    n = len(lo)
    if len(hi) != n or n == 0:
        raise ValueError("band lo and hi must have the same non-zero length (one per row of x)")
    if lo[0] != 0 or hi[-1] != m:
        raise ValueError(f"band must contain (0, 0) and (n-1, m-1): lo[0]={lo[0]}, "
                         f"hi[-1]={hi[-1]}, m={m}")
    if np.any(hi <= lo) or np.any(lo < 0) or np.any(hi > m):
        raise ValueError("every band row needs 0 <= lo < hi <= m")
    if np.any(np.diff(lo) < 0) or np.any(np.diff(hi) < 0):
        raise ValueError("band lo and hi must be non-decreasing")
    if n > 1 and np.any(lo[1:] > hi[:-1]):
        raise ValueError("band rows are disconnected (lo[i+1] > hi[i]); widen the band")


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _banded_kernel(x, yr, lo, hi, metric_sq, want_path):
    """Banded DTW swept by anti-diagonals d = i + j: a cell depends only on the two previous
    anti-diagonals, so the inner loop has no carried dependency and vectorises. ``yr`` is ``y``
    reversed (y[d - i] = yr[m - 1 - d + i], contiguous in i). Returns the cost of the last
    cell, one step byte per band cell in anti-diagonal order (bit 0: up beat diagonal, bit 1:
    left beat both; ties: diagonal, then up, then left) and, per anti-diagonal, its first row
    and the offset of its bytes."""
    n = x.shape[0]
    m = yr.shape[0]
    nd = n + m - 1
    inf = np.inf
    # rows i of anti-diagonal d: lo[i] <= d - i < hi[i], a contiguous run [ilo[d], ilo[d] + w)
    # (i + lo[i] and i + hi[i] increase strictly) with w = off[d + 1] - off[d], maybe 0
    ilo = np.empty(nd, np.int64)
    off = np.empty(nd + 1, np.int64)
    a = 0
    b = 0
    total = 0
    for d in range(nd):
        while a < n and a + hi[a] <= d:
            a += 1
        while b < n and b + lo[b] <= d:
            b += 1
        ilo[d] = a
        off[d] = total
        total += b - a
    off[nd] = total
    # the last three anti-diagonals: buf[d % 3, i + 1] = D(i, d - i), inf around the run
    buf = np.full((3, n + 2), inf)
    steps = np.empty(total if want_path else 1, np.uint8)
    c0 = x[0] - yr[m - 1]
    buf[0, 1] = c0 * c0 if metric_sq else abs(c0)          # (0, 0): its local cost only
    for d in range(1, nd):
        a = ilo[d]
        w = off[d + 1] - off[d]
        b = a + w
        cur = buf[d % 3]
        p1 = buf[(d - 1) % 3]
        xs = x[a:b]
        ys = yr[m - 1 - d + a:m - 1 - d + b]
        dg = buf[(d - 2) % 3, a:b]          # D(i-1, j-1)
        up = p1[a:b]                        # D(i-1, j)
        lf = p1[a + 1:b + 1]                # D(i, j-1)
        out = cur[a + 1:b + 1]
        if want_path:
            st = steps[off[d]:off[d] + w]
            if metric_sq:
                for k in range(w):
                    e = xs[k] - ys[k]
                    g = dg[k]
                    u = up[k]
                    t1 = u < g
                    best = u if t1 else g
                    v = lf[k]
                    t2 = v < best
                    best = v if t2 else best
                    out[k] = best + e * e
                    st[k] = np.uint8(t1) | (np.uint8(t2) << np.uint8(1))
            else:
                for k in range(w):
                    c = abs(xs[k] - ys[k])
                    g = dg[k]
                    u = up[k]
                    t1 = u < g
                    best = u if t1 else g
                    v = lf[k]
                    t2 = v < best
                    best = v if t2 else best
                    out[k] = best + c
                    st[k] = np.uint8(t1) | (np.uint8(t2) << np.uint8(1))
        elif metric_sq:
            for k in range(w):
                e = xs[k] - ys[k]
                g = dg[k]
                u = up[k]
                best = u if u < g else g
                v = lf[k]
                best = v if v < best else best
                out[k] = best + e * e
        else:
            for k in range(w):
                g = dg[k]
                u = up[k]
                best = u if u < g else g
                v = lf[k]
                best = v if v < best else best
                out[k] = best + abs(xs[k] - ys[k])
        # the next two anti-diagonals read this one over rows [a - 1, b + 1) only
        cur[a] = inf
        cur[b + 1] = inf
    cost = buf[(nd - 1) % 3, n]
    return cost, steps, ilo, off


@njit(boundscheck=False)
def _backtrack(steps, ilo, off, n, m):
    pi = np.empty(n + m, dtype=np.int64)
    pj = np.empty(n + m, dtype=np.int64)
    i = n - 1
    j = m - 1
    k = 0
    while True:
        pi[k] = i
        pj[k] = j
        k += 1
        if i == 0 and j == 0:
            break
        d = i + j
        s = steps[off[d] + i - ilo[d]]
        if s >= 2:
            j -= 1
        elif s == 1:
            i -= 1
        else:
            i -= 1
            j -= 1
    return pi[:k][::-1].copy(), pj[:k][::-1].copy()


def banded_dtw(x, y, lo: np.ndarray | None = None, hi: np.ndarray | None = None, *,
               half_width: int | None = None, metric: str = "abs",
               path: bool = True) -> DTWResult:
    """Exact DTW of ``x`` against ``y`` inside a band: give either ``lo``/``hi`` (per-row
    column window, ``hi`` exclusive) or ``half_width`` (Sakoe-Chiba band around the diagonal).
    With ``path=False`` only the cost is computed (paths come back empty)."""
    x, y = _check_series(x, "x"), _check_series(y, "y")
    if metric not in METRICS:
        raise ValueError(f"DTW metric must be one of {METRICS}, got {metric!r}")
    n, m = len(x), len(y)
    if lo is None or hi is None:
        if half_width is None:
            raise ValueError("banded_dtw needs lo/hi or half_width")
        lo, hi = diagonal_band(n, m, int(half_width))
    lo = np.ascontiguousarray(lo, dtype=np.int64)
    hi = np.ascontiguousarray(hi, dtype=np.int64)
    if len(lo) != n:
        raise ValueError(f"band has {len(lo)} rows but x has {n} samples")
    check_band(lo, hi, m)
    yr = np.ascontiguousarray(y[::-1])
    cost, steps, ilo, off = _banded_kernel(x, yr, lo, hi, metric == "sq", path)
    if not np.isfinite(cost):
        raise ValueError("no warping path fits in the band; widen it")
    if not path:
        empty = np.zeros(0, np.int64)
        return DTWResult(float(cost), empty, empty, "banded")
    pi, pj = _backtrack(steps, ilo, off, n, m)
    return DTWResult(float(cost), pi, pj, "banded")


def path_cost(x, y, path_i: np.ndarray, path_j: np.ndarray, metric: str = "abs") -> float:
    """Sum of local costs along a path (to compare engines on equal terms)."""
    d = np.asarray(x, np.float64)[path_i] - np.asarray(y, np.float64)[path_j]
    return float(np.sum(d * d) if metric == "sq" else np.sum(np.abs(d)))


def fastdtw_path(x, y, radius: int = 1, metric: str = "abs") -> DTWResult:
    """The ``fastdtw`` package's approximate DTW (pure Python; slow on long inputs)."""
    x, y = _check_series(x, "x"), _check_series(y, "y")
    if metric not in METRICS:
        raise ValueError(f"DTW metric must be one of {METRICS}, got {metric!r}")
    dist = None if metric == "abs" else (lambda a, b: (a - b) ** 2)
    _, pairs = fastdtw(x, y, radius=int(radius), dist=dist)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return DTWResult(path_cost(x, y, p[:, 0], p[:, 1], metric), p[:, 0].copy(), p[:, 1].copy(),
                     "fastdtw")


def run_dtw(x, y, engine: str = "banded", *, half_width: int, radius: int | None = None,
            metric: str = "abs") -> DTWResult:
    """Dispatch on the manifest's ``sync.engine``. fastdtw's radius defaults to 10."""
    if engine == "banded":
        return banded_dtw(x, y, half_width=half_width, metric=metric)
    if engine == "fastdtw":
        return fastdtw_path(x, y, radius=radius if radius is not None else FASTDTW_RADIUS,
                            metric=metric)
    raise ValueError(f"DTW engine must be one of {ENGINES}, got {engine!r}")
