"""Alignment kernels against their usual baselines, on the same generated data, side by side.

    python benchmarks/bench_align.py [--n 10000000] [--repeat 3]

Data: n sensor samples at ~1 kHz (jitter +-0.3 ms, 2 % dropped, three float64 channels) and
n/10 ticks at ~100 Hz (jitter +-3 ms) over the same span, epoch-nanosecond times; a smaller
size (n/10) runs first. Joins timed (best of --repeat), results checked equal first:

- nearest(tolerance 2 ms)   vs pandas.merge_asof(direction="nearest", tolerance=2 ms)
- interpolate(max_gap 3 ms) vs numpy.interp per channel on float64 times (origin subtracted)
                               + a searchsorted gap mask to give the same NaNs
Prints one row per (size, kernel): baseline s, ours s, ratio = baseline / ours (> 1: faster).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmalign.transforms.align.policies import interpolate, nearest

MS = 1_000_000
EPOCH = 1_700_000_000 * 1_000_000_000


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = EPOCH + np.arange(n, dtype=np.int64) * MS + rng.integers(-MS * 3 // 10, MS * 3 // 10, n)
    t = t[rng.random(n) >= 0.02]
    t.sort()
    m = n // 10
    ticks = EPOCH + np.arange(m, dtype=np.int64) * 10 * MS + rng.integers(-3 * MS, 3 * MS, m)
    ticks.sort()
    values = rng.normal(size=(t.size, 3))
    return ticks, t, values


def best_of(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def baseline_merge_asof(ticks, t, tol):
    left = pd.DataFrame({"t": ticks})
    right = pd.DataFrame({"t": t, "j": np.arange(t.size, dtype=np.int64)})
    out = pd.merge_asof(left, right, on="t", direction="nearest", tolerance=tol)
    return out["j"].to_numpy(dtype=np.float64, na_value=np.nan)


def baseline_interp(ticks, t, values, max_gap):
    x = (ticks - t[0]).astype(np.float64)
    xp = (t - t[0]).astype(np.float64)
    out = np.column_stack([np.interp(x, xp, values[:, j]) for j in range(values.shape[1])])
    r = np.searchsorted(t, ticks, side="left")
    rc = np.minimum(r, t.size - 1)
    exact = t[rc] == ticks
    ok = exact | ((r > 0) & (r < t.size) & (t[rc] - t[np.maximum(r - 1, 0)] <= max_gap))
    out[~ok] = np.nan
    return out


def run(n: int, repeat: int) -> list[tuple]:
    ticks, t, values = make_data(n)
    rows = []

    tol = 2 * MS
    base_s, j = best_of(lambda: baseline_merge_asof(ticks, t, tol), repeat)
    ours_s, (idx, _dt, _st) = best_of(lambda: nearest(ticks, t, tol), repeat)
    want = np.where(np.isnan(j), -1, j).astype(np.int64)
    if not np.array_equal(idx, want):
        raise SystemExit(f"nearest differs from merge_asof at {np.count_nonzero(idx != want)} "
                         "ticks")
    rows.append((f"{ticks.size:,} x {t.size:,}", "nearest tol=2ms", "pandas.merge_asof",
                 base_s, ours_s, float((idx >= 0).mean())))

    gap = 3 * MS
    base_s, want_v = best_of(lambda: baseline_interp(ticks, t, values, gap), repeat)
    ours_s, (got_v, _l, _r, _st) = best_of(lambda: interpolate(ticks, t, values, gap), repeat)
    if not (np.array_equal(np.isnan(got_v), np.isnan(want_v))
            and np.allclose(got_v, want_v, rtol=1e-9, atol=1e-9, equal_nan=True)):
        raise SystemExit("interpolate differs from the numpy.interp baseline")
    rows.append((f"{ticks.size:,} x {t.size:,} x 3ch", "interpolate gap=3ms",
                 "numpy.interp+mask", base_s, ours_s, float((~np.isnan(got_v[:, 0])).mean())))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="sensor samples (ticks = n/10)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per join (best taken)")
    ap.add_argument("--quick", action="store_true", help="n = 1M, 1 run (smoke run)")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.n, ns.repeat = 1_000_000, 1
    sizes = [max(ns.n // 10, 1000), ns.n]
    rows = []
    for n in sizes:
        print(f"running n={n:,} ...", file=sys.stderr, flush=True)
        rows += run(n, ns.repeat)
    head = f"{'size (ticks x samples)':<30} {'kernel':<20} {'baseline':<18} " \
           f"{'base s':>8} {'ours s':>8} {'ratio':>6} {'matched':>8}"
    print(head)
    print("-" * len(head))
    for size, kernel, base, bs, os_, frac in rows:
        print(f"{size:<30} {kernel:<20} {base:<18} {bs:8.3f} {os_:8.3f} {bs / os_:6.2f} "
              f"{frac:8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
