"""``njit``: numba's ``njit`` with an on-disk cache when there is somewhere to write one.

``numba.njit(cache=True)`` raises at import time when neither the source folder's
``__pycache__`` nor numba's user-wide cache folder is writable (a wheel installed read-only in
a container whose HOME is read-only, for instance): such an installation would not even
import. ``njit`` here keeps the cache where it can and otherwise compiles in every process
(about one second per kernel on first call). ``NUMBA_CACHE_DIR`` points numba at a writable
folder instead.
"""

from __future__ import annotations

import numba

_NO_LOCATOR = "no locator available"


def njit(**options):
    """``numba.njit(cache=True, **options)``, or without the cache when it has no location."""
    def wrap(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as e:
            if _NO_LOCATOR not in str(e):
                raise
            return numba.njit(cache=False, **options)(fn)
    return wrap
