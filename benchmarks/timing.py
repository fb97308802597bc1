"""Timing shared by the benchmarks: the best of several runs of a function."""

from __future__ import annotations

import math
import time


def best_of(fn, repeat: int):
    """(the shortest wall time of ``repeat`` calls of ``fn``, the last call's result)."""
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
