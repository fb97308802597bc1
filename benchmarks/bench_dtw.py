"""DTW engines side by side: the default banded exact DTW (numba) against fastdtw (radius 1 and
10) and dtaidistance's banded C DTW, on the same sequences.

Sequences are sync-feature-like: sparse smoothed impulses plus noise, and a copy warped by a
smooth random time warp that stays inside the band, with its own noise. The band is
+-``--band`` samples (100 = 1 s at 100 Hz). Cost error is relative to the exact banded cost
with the same local metric (|x - y| for fastdtw, squared for dtaidistance, whose distance is
the square root of the summed squares; its ``window=w`` is our half-width w - 1).

    python benchmarks/bench_dtw.py            # n = 1k, 10k, 100k
    python benchmarks/bench_dtw.py --quick    # n = 1k, 10k

Per size it also prints the band's cell count and the banded engine's throughput in G cells/s
(cells / best time), with and without the path.

fastdtw is pure Python: a run projected (from the previous size, linearly) to take more than
``--fastdtw-limit`` seconds (default 120) is skipped, and the table says so.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.ndimage import gaussian_filter1d
from timing import best_of  # benchmarks/timing.py

from mmalign.transforms.clock.dtw import banded_dtw, diagonal_band, fastdtw_path


def sequences(n: int, band: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.zeros(n + 2 * band)
    base[rng.choice(len(base), max(3, len(base) // 80), replace=False)] = rng.uniform(
        0.5, 1.0, max(3, len(base) // 80))
    base = gaussian_filter1d(base, 1.5)
    t = np.arange(n, dtype=np.float64)
    warp = gaussian_filter1d(rng.normal(0, 1, n), max(50, n / 40))
    warp = 0.4 * band * warp / (np.max(np.abs(warp)) or 1.0)       # within the band
    src = np.arange(len(base), dtype=np.float64) - band
    x = np.interp(t, src, base) + rng.normal(0, 0.01, n)
    y = np.interp(t + warp, src, base) + rng.normal(0, 0.01, n)
    return x, y


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes 1k and 10k only")
    ap.add_argument("--sizes", type=int, nargs="*", help="explicit sequence lengths")
    ap.add_argument("--band", type=int, default=100, help="Sakoe-Chiba half-width (samples)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="best of this many runs for the banded engine and dtaidistance")
    ap.add_argument("--fastdtw-limit", type=float, default=120.0,
                    help="skip a fastdtw run projected to take longer (s)")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])

    try:
        from dtaidistance import dtw as dtai
    except ImportError:
        dtai = None
        print("dtaidistance not installed: pip install dtaidistance (its rows are skipped)")

    w = args.band
    banded_dtw(np.zeros(8), np.ones(8), half_width=2)                  # compile once
    if dtai is not None:
        dtai.distance_fast(np.zeros(8), np.ones(8), window=3, use_pruning=False)
    rows, fast_time = [], {}
    rp = max(1, args.repeat)
    print(f"band half-width {w} samples; times are the best of {rp} runs (fastdtw: 3, 1 at "
          f">= 100k)\n")
    for n in sizes:
        x, y = sequences(n, w)
        rep = 3 if n <= 10_000 else 1
        t_path, ours = best_of(lambda x=x, y=y: banded_dtw(x, y, half_width=w), rp)
        t_cost, _ = best_of(lambda x=x, y=y: banded_dtw(x, y, half_width=w, path=False), rp)
        t_sq, ours_sq = best_of(
            lambda x=x, y=y: banded_dtw(x, y, half_width=w, metric="sq", path=False), rp)
        exact_abs, exact_sq = ours.cost, math.sqrt(ours_sq.cost)
        lo, hi = diagonal_band(n, n, w)
        cells = int((hi - lo).sum())
        print(f"n={n:,}: {cells:,} band cells; banded path+cost {cells / t_path / 1e9:.3f} "
              f"G cells/s, cost only |x-y| {cells / t_cost / 1e9:.3f} G cells/s, (x-y)^2 "
              f"{cells / t_sq / 1e9:.3f} G cells/s")
        rows.append((n, "banded (default) path+cost", t_path, 1.0, exact_abs, 0.0))
        rows.append((n, "banded cost only |x-y|", t_cost, t_cost / t_path, exact_abs, 0.0))
        rows.append((n, "banded cost only (x-y)^2", t_sq, t_sq / t_path, exact_sq, 0.0))
        if dtai is not None:
            t_d, d = best_of(
                lambda x=x, y=y: dtai.distance_fast(x, y, window=w + 1, use_pruning=False), rp)
            rows.append((n, "dtaidistance distance_fast", t_d, t_d / t_path, d,
                         (d - exact_sq) / exact_sq))
            try:
                t_dp, (_, dp) = best_of(lambda x=x, y=y: dtai.warping_path_fast(
                    x, y, window=w + 1, include_distance=True), rp)
                rows.append((n, "dtaidistance warping_path_fast", t_dp, t_dp / t_path, dp,
                             (dp - exact_sq) / exact_sq))
            except MemoryError:
                rows.append((n, "dtaidistance warping_path_fast", math.nan, math.nan, math.nan,
                             math.nan))
        for radius in (1, 10):
            prev = fast_time.get(radius)
            projected = prev[1] * n / prev[0] if prev else 0.0
            name = f"fastdtw radius {radius}"
            if projected > args.fastdtw_limit:
                rows.append((n, f"{name} SKIPPED (projected {projected:.0f} s > "
                                f"{args.fastdtw_limit:.0f} s)", math.nan, math.nan, math.nan,
                             math.nan))
                continue
            t_f, f = best_of(lambda r=radius, x=x, y=y: fastdtw_path(x, y, radius=r),
                           rep if n <= 10_000 else 1)
            fast_time[radius] = (n, t_f)
            rows.append((n, name, t_f, t_f / t_path, f.cost, (f.cost - exact_abs) / exact_abs))
        print_rows(rows[-7:] if dtai is not None else rows[-5:])
    print("\nratio = engine time / default engine time (path + cost); cost error = (engine "
          "cost - exact banded cost) / exact banded cost")
    return 0


def print_rows(rows) -> None:
    for n, name, t, ratio, cost, err in rows:
        ts = "       -" if math.isnan(t) else f"{t * 1e3:9.2f}"
        rs = "      -" if math.isnan(ratio) else f"{ratio:8.2f}x"
        cs = "         -" if math.isnan(cost) else f"{cost:12.4f}"
        es = "      -" if math.isnan(err) else f"{err:+9.2%}"
        print(f"n={n:>7,}  {name:<48} {ts} ms {rs}  cost {cs}  err {es}")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
