"""Banded DTW against a plain O(n*m) DTW, band semantics, fastdtw wrapper, bad input."""

import numpy as np
import pytest

from mmalign.transforms.clock.dtw import (
    banded_dtw,
    check_band,
    diagonal_band,
    fastdtw_path,
    path_cost,
    run_dtw,
)


def plain_dtw(x, y, metric="abs", allowed=None):
    """Textbook full-matrix DTW with the same step pattern and tie order (diag, up, left)."""
    n, m = len(x), len(y)
    D = np.full((n, m), np.inf)
    step = np.zeros((n, m), np.int8)
    for i in range(n):
        for j in range(m):
            if allowed is not None and not allowed[i, j]:
                continue
            d = x[i] - y[j]
            c = abs(d) if metric == "abs" else d * d    # not d ** 2: numpy's pow is not always
            #                                             correctly rounded (1 ulp off e * e)
            if i == 0 and j == 0:
                D[i, j] = c
                continue
            cands = [(D[i - 1, j - 1] if i and j else np.inf, 1),
                     (D[i - 1, j] if i else np.inf, 2),
                     (D[i, j - 1] if j else np.inf, 3)]
            best, s = cands[0]
            for v, k in cands[1:]:
                if v < best:
                    best, s = v, k
            D[i, j] = best + c
            step[i, j] = s
    i, j, path = n - 1, m - 1, [(n - 1, m - 1)]
    while (i, j) != (0, 0):
        s = step[i, j]
        i, j = (i - 1, j - 1) if s == 1 else (i - 1, j) if s == 2 else (i, j - 1)
        path.append((i, j))
    p = np.array(path[::-1])
    return D[-1, -1], p[:, 0], p[:, 1]


@pytest.mark.parametrize("n,m,metric", [(40, 40, "abs"), (37, 52, "sq"), (60, 31, "abs"),
                                        (1, 9, "abs"), (9, 1, "sq")])
def test_wide_band_equals_plain_dtw(n, m, metric):
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.standard_normal(n).cumsum(), rng.standard_normal(m).cumsum()
    cost, pi, pj = plain_dtw(x, y, metric)
    r = banded_dtw(x, y, half_width=max(n, m), metric=metric)
    assert r.cost == pytest.approx(cost, rel=1e-12)
    np.testing.assert_array_equal(r.path_i, pi)
    np.testing.assert_array_equal(r.path_j, pj)
    assert path_cost(x, y, r.path_i, r.path_j, metric) == pytest.approx(r.cost, rel=1e-12)


@pytest.mark.parametrize("half_width", [1, 3, 7])
def test_narrow_band_equals_plain_dtw_restricted_to_band(half_width):
    rng = np.random.default_rng(half_width)
    x = np.sin(np.linspace(0, 12, 80)) + 0.2 * rng.standard_normal(80)
    y = np.sin(np.linspace(0.7, 12.7, 95)) + 0.2 * rng.standard_normal(95)
    lo, hi = diagonal_band(80, 95, half_width)
    allowed = np.zeros((80, 95), bool)
    for i in range(80):
        allowed[i, lo[i]:hi[i]] = True
    cost, pi, pj = plain_dtw(x, y, "abs", allowed)
    r = banded_dtw(x, y, lo, hi)
    assert r.cost == pytest.approx(cost, rel=1e-12)
    np.testing.assert_array_equal(r.path_i, pi)
    np.testing.assert_array_equal(r.path_j, pj)
    assert np.all(allowed[r.path_i, r.path_j])
    # a narrower band can only cost more than the unconstrained optimum
    assert r.cost >= plain_dtw(x, y, "abs")[0] - 1e-9


def test_band_recovers_known_shift_and_path_is_monotone():
    rng = np.random.default_rng(3)
    base = rng.standard_normal(3000)
    x, y = base[20:2020], base[25:2025]          # y lags x by 5 samples
    r = banded_dtw(x, y, half_width=10, path=True)
    assert r.path_i[0] == 0 and r.path_j[0] == 0
    assert r.path_i[-1] == 1999 and r.path_j[-1] == 1999
    assert np.all(np.diff(r.path_i) >= 0) and np.all(np.diff(r.path_j) >= 0)
    assert np.all(np.diff(r.path_i) + np.diff(r.path_j) >= 1)
    mid = (r.path_i > 100) & (r.path_i < 1900)
    assert np.all(r.path_i[mid] - r.path_j[mid] == 5)
    # cost-only mode agrees
    assert banded_dtw(x, y, half_width=10, path=False).cost == r.cost


def test_fastdtw_wrapper_cost_is_its_path_cost_and_not_below_exact():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(300).cumsum()
    y = np.interp(np.linspace(0, 299, 280), np.arange(300), x) + 0.05 * rng.standard_normal(280)
    f = fastdtw_path(x, y, radius=1)
    exact = banded_dtw(x, y, half_width=300)
    assert f.cost == pytest.approx(path_cost(x, y, f.path_i, f.path_j))
    assert f.cost >= exact.cost - 1e-9
    assert run_dtw(x, y, "fastdtw", half_width=50, radius=1).cost == pytest.approx(f.cost)
    assert run_dtw(x, y, "banded", half_width=300).cost == pytest.approx(exact.cost)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        banded_dtw([0.0, np.nan], [1.0, 2.0], half_width=2)
    with pytest.raises(ValueError, match="non-empty"):
        banded_dtw([], [1.0], half_width=2)
    with pytest.raises(ValueError, match="metric"):
        banded_dtw([1.0], [1.0], half_width=1, metric="cosine")
    with pytest.raises(ValueError, match="engine"):
        run_dtw([1.0], [1.0], "magic", half_width=1)
    with pytest.raises(ValueError, match="disconnected"):
        check_band(np.array([0, 5]), np.array([2, 8]), 8)
    with pytest.raises(ValueError, match="contain"):
        banded_dtw([1.0, 2.0], [1.0, 2.0], np.array([1, 1]), np.array([2, 2]))
