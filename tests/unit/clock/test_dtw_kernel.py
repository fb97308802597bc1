"""The banded DTW kernel (anti-diagonal sweep) against a plain full-matrix DTW on random bands
and series full of ties (small integers) or of random floats: same cost bit for bit, same path
(tie order diagonal, up, left)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmalign.transforms.clock.dtw import banded_dtw, check_band, diagonal_band
from tests.unit.clock.test_dtw import plain_dtw


def _allowed(lo, hi, n, m):
    allowed = np.zeros((n, m), bool)
    for i in range(n):
        allowed[i, lo[i]:hi[i]] = True
    return allowed


def _check(x, y, lo, hi, metric, path):
    cost, pi, pj = plain_dtw(x, y, metric, _allowed(lo, hi, x.size, y.size))
    r = banded_dtw(x, y, lo, hi, metric=metric, path=path)
    assert r.cost == cost
    if path:
        np.testing.assert_array_equal(r.path_i, pi)
        np.testing.assert_array_equal(r.path_j, pj)
    else:
        assert r.path_i.size == 0


@settings(max_examples=200, deadline=None)
@given(x=st.lists(st.integers(-3, 3), min_size=1, max_size=30),
       y=st.lists(st.integers(-3, 3), min_size=1, max_size=30),
       half_width=st.integers(0, 12), metric=st.sampled_from(["abs", "sq"]),
       path=st.booleans())
def test_banded_equals_plain_dtw_in_the_band(x, y, half_width, metric, path):
    x, y = np.asarray(x, np.float64) / 2, np.asarray(y, np.float64) / 2
    lo, hi = diagonal_band(x.size, y.size, half_width)
    _check(x, y, lo, hi, metric, path)


@st.composite
def bands(draw):
    """Any connected band: non-decreasing lo/hi, lo[i+1] <= hi[i], from (0, 0) to (n-1, m-1);
    thin stretches leave anti-diagonals with no cell at all."""
    n = draw(st.integers(1, 25))
    m = draw(st.integers(1, 25))
    lo = np.zeros(n, np.int64)
    hi = np.zeros(n, np.int64)
    hi[0] = draw(st.integers(1, m))
    for i in range(1, n):
        lo[i] = draw(st.integers(lo[i - 1], min(hi[i - 1], m - 1)))
        hi[i] = draw(st.integers(max(hi[i - 1], lo[i] + 1), m))
    hi[-1] = m
    check_band(lo, hi, m)
    return n, m, lo, hi


@settings(max_examples=300, deadline=None)
@given(band=bands(), data=st.data(), metric=st.sampled_from(["abs", "sq"]),
       path=st.booleans(), ties=st.booleans())
def test_any_band_equals_plain_dtw(band, data, metric, path, ties):
    n, m, lo, hi = band
    if ties:
        vals = st.integers(-2, 2).map(lambda v: v / 2)
    else:
        vals = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    x = np.asarray(data.draw(st.lists(vals, min_size=n, max_size=n)), np.float64)
    y = np.asarray(data.draw(st.lists(vals, min_size=m, max_size=m)), np.float64)
    _check(x, y, lo, hi, metric, path)


def test_long_random_series_match_plain_dtw():
    rng = np.random.default_rng(7)
    for n, m, w in [(300, 280, 15), (257, 311, 40), (200, 200, 0)]:
        x, y = rng.normal(size=n), rng.normal(size=m)
        lo, hi = diagonal_band(n, m, w)
        for metric in ("abs", "sq"):
            _check(x, y, lo, hi, metric, True)


def test_squared_cost_is_the_product_not_pow():
    """The case hypothesis found: numpy's ``e ** 2`` is 1 ulp off ``e * e`` for e = 945.17...;
    the kernel squares by multiplying (IEEE-exact), and so must the reference."""
    x = np.array([0.0] * 10 + [903.0934087525079])
    y = np.array([-42.07706846811004])
    lo, hi = np.zeros(11, np.int64), np.ones(11, np.int64)
    for path in (False, True):
        _check(x, y, lo, hi, "sq", path)
