"""Dynamic time warping engines for DTW-sync.

``banded_dtw`` is the default engine: exact DTW restricted to a per-row window of columns
(a Sakoe-Chiba band around a line), a numba-compiled dynamic programme that keeps two cost
rows and one byte of back-pointer per band cell, so memory is O(n * band), never O(n * m).
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


@njit(nogil=True)
def _banded_kernel(x, y, lo, hi, metric_sq, want_path):
    """Cost of the band's last cell and one step byte per band cell (0 start, 1 diagonal,
    2 up, 3 left). The previous row lives in ``pbuf`` (``pbuf[k + 1] = D(i-1, plo + k)``, inf
    outside its window: only the cells a row left behind are reset); the step choice is made
    with selects, not branches (ties: diagonal, then up, then left)."""
    n = x.shape[0]
    inf = np.inf
    width = 0
    jump = 0
    for i in range(n):
        width = max(width, hi[i] - lo[i])
        if i > 0:
            jump = max(jump, lo[i] - lo[i - 1])
    size = width + jump + 2
    pbuf = np.full(size, inf)
    cur = np.empty(width)
    if want_path:
        steps = np.zeros((n, width), dtype=np.uint8)
    else:
        steps = np.zeros((1, 1), dtype=np.uint8)
    plo = 0
    pw = 0                                  # pbuf[q] is inf for q > pw (and q == 0)
    for i in range(n):
        a = lo[i]
        b = hi[i]
        xi = x[i]
        left = inf
        k0 = a - plo
        for j in range(a, b):
            d = xi - y[j]
            c = d * d if metric_sq else abs(d)
            k = j - a + k0
            diag = pbuf[k]
            up = pbuf[k + 1]
            t1 = up < diag
            best = up if t1 else diag
            step = np.uint8(2) if t1 else np.uint8(1)
            t2 = left < best
            best = left if t2 else best
            step = np.uint8(3) if t2 else step
            left = best + c
            cur[j - a] = left
            if want_path:
                steps[i, j - a] = step
        if i == 0:
            # (0, 0) costs its local cost only; the rest of row 0 comes from the left
            d = xi - y[0]
            left = d * d if metric_sq else abs(d)
            cur[0] = left
            if want_path:
                steps[0, 0] = 0
            for j in range(a + 1, b):
                d = xi - y[j]
                left = left + (d * d if metric_sq else abs(d))
                cur[j - a] = left
                if want_path:
                    steps[0, j - a] = 3
        w = b - a
        for q in range(w):
            pbuf[q + 1] = cur[q]
        for q in range(w + 1, pw + 1):
            pbuf[q] = inf
        pw = w
        plo = a
    cost = cur[hi[n - 1] - 1 - lo[n - 1]]
    return cost, steps


@njit()
def _backtrack(steps, lo, n, m):
    pi = np.empty(n + m, dtype=np.int64)
    pj = np.empty(n + m, dtype=np.int64)
    i = n - 1
    j = m - 1
    k = 0
    while True:
        pi[k] = i
        pj[k] = j
        k += 1
        s = steps[i, j - lo[i]]
        if s == 0:
            break
        if s == 1:
            i -= 1
            j -= 1
        elif s == 2:
            i -= 1
        else:
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
    cost, steps = _banded_kernel(x, y, lo, hi, metric == "sq", path)
    if not np.isfinite(cost):
        raise ValueError("no warping path fits in the band; widen it")
    if not path:
        empty = np.zeros(0, np.int64)
        return DTWResult(float(cost), empty, empty, "banded")
    pi, pj = _backtrack(steps, lo, n, m)
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
