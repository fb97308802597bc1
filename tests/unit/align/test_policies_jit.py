"""transforms/jit.njit: the kernels' numba decorator still compiles when no cache folder is
writable (a read-only installation): numba.njit(cache=True) raises at import time there."""

import numba
import numpy as np
import pytest
from numba.core import caching

from mmalign.transforms import jit


def _add(a, b):
    return a + b


def test_without_a_cache_location_njit_falls_back_to_no_cache(monkeypatch):
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl    # renamed in 0.61
    monkeypatch.setattr(impl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(_add)                     # what a read-only install meets
    f = jit.njit(nogil=True)(_add)
    assert f(np.int64(2), np.int64(3)) == 5
    assert isinstance(f._cache, caching.NullCache)


def test_with_a_cache_location_njit_caches():
    f = jit.njit()(_add)
    assert f(1.5, 2.0) == 3.5
    assert isinstance(f._cache, caching.FunctionCache)


def test_other_errors_are_not_swallowed(monkeypatch):
    def broken(**options):
        raise RuntimeError("something else")
    monkeypatch.setattr(numba, "njit", broken)
    with pytest.raises(RuntimeError, match="something else"):
        jit.njit()(_add)
