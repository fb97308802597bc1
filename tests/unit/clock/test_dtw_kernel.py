"""The banded DTW kernel against a plain full-matrix DTW on random bands and series full of
ties (small integers): same cost bit for bit, same path (tie order diagonal, up, left)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmalign.transforms.clock.dtw import banded_dtw, diagonal_band
from tests.unit.clock.test_dtw import plain_dtw


@settings(max_examples=200, deadline=None)
@given(x=st.lists(st.integers(-3, 3), min_size=1, max_size=30),
       y=st.lists(st.integers(-3, 3), min_size=1, max_size=30),
       half_width=st.integers(0, 12), metric=st.sampled_from(["abs", "sq"]),
       path=st.booleans())
def test_banded_equals_plain_dtw_in_the_band(x, y, half_width, metric, path):
    x, y = np.asarray(x, np.float64) / 2, np.asarray(y, np.float64) / 2
    n, m = x.size, y.size
    lo, hi = diagonal_band(n, m, half_width)
    allowed = np.zeros((n, m), bool)
    for i in range(n):
        allowed[i, lo[i]:hi[i]] = True
    cost, pi, pj = plain_dtw(x, y, metric, allowed)
    r = banded_dtw(x, y, lo, hi, metric=metric, path=path)
    assert r.cost == cost
    if path:
        np.testing.assert_array_equal(r.path_i, pi)
        np.testing.assert_array_equal(r.path_j, pj)
    else:
        assert r.path_i.size == 0
