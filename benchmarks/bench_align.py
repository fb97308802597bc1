"""Alignment kernels against their peers, on the same generated data, side by side.

    python benchmarks/bench_align.py [--n 10000000] [--repeat 5] [--quick]

Data: n sensor samples at ~1 kHz (jitter +-0.3 ms, 2 % dropped, three float64 channels) and
n/10 ticks at ~100 Hz (jitter +-3 ms) over the same span, epoch-nanosecond times; a smaller
size (n/10) runs first. Every join is timed best of --repeat, after a warm-up call (numba's
compile or cache load is printed apart), and its result is checked against ours first:

- nearest(tolerance 2 ms) vs
    pandas.merge_asof(direction="nearest", tolerance=2 ms),
    polars DataFrame.join_asof(strategy="nearest", tolerance=2 ms) on ONE thread
      (POLARS_MAX_THREADS=1 is set before polars is imported, unless the caller set it),
    DuckDB: ASOF JOIN has no "nearest", so a backward and a forward ASOF LEFT JOIN in one
      query and the closer of the two (earlier on ties), ORDER BY tick, threads=1, on DuckDB
      tables (loaded from Arrow outside the timing);
- interpolate(max_gap 3 ms) vs numpy.interp per channel on float64 times (origin subtracted)
  + a searchsorted gap mask to give the same NaNs.

The peers' inputs (DataFrames, registered Arrow tables) are built outside the timing; the
timing covers the join and the matched sample index as a numpy array. polars and duckdb come
with the ``bench`` extra; a peer that is not installed prints "not installed".
Prints one row per (size, kernel, peer): peer s, ours s, ratio = peer / ours (> 1: ours is
faster), and the fraction of ticks matched.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")    # before anything imports polars

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import best_of  # noqa: E402  (benchmarks/timing.py)

from mmalign.transforms.align.policies import interpolate, nearest  # noqa: E402

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


# -- nearest peers: each returns a function giving the matched sample index (-1: none) --------

def pandas_nearest(ticks, t, tol):
    left = pd.DataFrame({"t": ticks})
    right = pd.DataFrame({"t": t, "j": np.arange(t.size, dtype=np.int64)})

    def run():
        out = pd.merge_asof(left, right, on="t", direction="nearest", tolerance=tol)
        return out["j"].to_numpy(dtype=np.float64, na_value=np.nan)
    return run


def polars_nearest(ticks, t, tol):
    # optional: the bench extra
    import polars as pl
    left = pl.DataFrame({"t": ticks}).set_sorted("t")
    right = pl.DataFrame({"t": t, "j": np.arange(t.size, dtype=np.int64)}).set_sorted("t")

    def run():
        out = left.join_asof(right, on="t", strategy="nearest", tolerance=tol)
        return out["j"].to_numpy()                      # float64 with NaN where no match
    return run


def duckdb_nearest(ticks, t, tol):
    # optional: the bench extra
    import duckdb
    import pyarrow as pa
    con = duckdb.connect()
    con.execute("SET threads TO 1")
    # DuckDB tables, not registered Arrow scans: a scan's row estimate is ~1, for which the
    # planner turns ASOF into a nested-loop join (minutes at 100k ticks)
    con.register("la", pa.table({"i": np.arange(ticks.size, dtype=np.int64), "t": ticks}))
    con.register("ra", pa.table({"t": t, "j": np.arange(t.size, dtype=np.int64)}))
    con.execute("CREATE TABLE L AS SELECT * FROM la")
    con.execute("CREATE TABLE R AS SELECT * FROM ra")
    query = f"""
        SELECT CASE
            WHEN b.t IS NOT NULL AND (f.t IS NULL OR L.t - b.t <= f.t - L.t)
                THEN CASE WHEN L.t - b.t <= {int(tol)} THEN b.j END
            WHEN f.t IS NOT NULL AND f.t - L.t <= {int(tol)} THEN f.j
        END AS j
        FROM L ASOF LEFT JOIN R b ON L.t >= b.t
               ASOF LEFT JOIN R f ON L.t <= f.t
        ORDER BY L.i"""

    def run():
        j = con.execute(query).fetchnumpy()["j"]
        return np.ma.filled(np.ma.asarray(j).astype(np.float64), np.nan)
    return run


NEAREST_PEERS = (("pandas.merge_asof", pandas_nearest), ("polars join_asof 1 thr",
                                                          polars_nearest),
                 ("duckdb ASOF x2 1 thr", duckdb_nearest))


def check_nearest(peer: str, got_j, idx, ticks, t):
    """A peer's match must equal ours; at an exact tie (equal distance either side) any
    documented tie rule may differ, so there only the distance has to agree."""
    j = np.where(np.isnan(got_j), -1, got_j).astype(np.int64)
    if np.array_equal(j, idx):
        return
    diff = np.flatnonzero(j != idx)
    both = (j[diff] >= 0) & (idx[diff] >= 0)
    same_d = both & (np.abs(t[np.maximum(j[diff], 0)] - ticks[diff])
                     == np.abs(t[np.maximum(idx[diff], 0)] - ticks[diff]))
    if not same_d.all():
        raise SystemExit(f"nearest differs from {peer} at {int((~same_d).sum())} ticks "
                         f"(first: tick {int(diff[~same_d][0])})")


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
    size = f"{ticks.size:,} x {t.size:,}"
    rows = []

    tol = 2 * MS
    nearest(ticks, t, tol)                              # warm-up: compile or cache load
    ours_s, (idx, _dt, _st) = best_of(lambda: nearest(ticks, t, tol), repeat)
    matched = float((idx >= 0).mean())
    for peer, make in NEAREST_PEERS:
        try:
            fn = make(ticks, t, tol)
        except ImportError:
            rows.append((size, "nearest tol=2ms", peer, None, ours_s, matched))
            continue
        fn()
        peer_s, got = best_of(fn, repeat)
        check_nearest(peer, got, idx, ticks, t)
        rows.append((size, "nearest tol=2ms", peer, peer_s, ours_s, matched))

    gap = 3 * MS
    interpolate(ticks, t, values, gap)
    ours_s, (got_v, _l, _r, _st) = best_of(lambda: interpolate(ticks, t, values, gap), repeat)
    base_s, want_v = best_of(lambda: baseline_interp(ticks, t, values, gap), repeat)
    if not (np.array_equal(np.isnan(got_v), np.isnan(want_v))
            and np.allclose(got_v, want_v, rtol=1e-9, atol=1e-9, equal_nan=True)):
        raise SystemExit("interpolate differs from the numpy.interp baseline")
    rows.append((size + " x 3ch", "interpolate gap=3ms", "numpy.interp+mask", base_s, ours_s,
                 float((~np.isnan(got_v[:, 0])).mean())))
    return rows


def first_call_s() -> float:
    """Seconds of the first nearest + interpolate call in this process: numba loading the
    compiled kernels from its cache (or compiling them, the first time on a machine)."""
    ticks, t, values = make_data(10_000)
    t0 = time.perf_counter()
    nearest(ticks, t, MS)
    interpolate(ticks, t, values, MS)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="sensor samples (ticks = n/10)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per join (best taken)")
    ap.add_argument("--quick", action="store_true", help="n = 1M, 3 runs (smoke run)")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.n, ns.repeat = 1_000_000, 3
    print(f"first call of nearest+interpolate in this process (numba cache load or compile): "
          f"{first_call_s():.2f} s; POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}; "
          f"{os.cpu_count()} CPUs; best of {ns.repeat}")
    sizes = [max(ns.n // 10, 1000), ns.n]
    rows = []
    for n in sizes:
        print(f"running n={n:,} ...", file=sys.stderr, flush=True)
        rows += run(n, ns.repeat)
    head = f"{'size (ticks x samples)':<28} {'kernel':<20} {'peer':<22} " \
           f"{'peer s':>8} {'ours s':>8} {'ratio':>6} {'matched':>8}"
    print(head)
    print("-" * len(head))
    for size, kernel, peer, ps, os_, frac in rows:
        if ps is None:
            print(f"{size:<28} {kernel:<20} {peer:<22} {'not installed':>24}")
            continue
        print(f"{size:<28} {kernel:<20} {peer:<22} {ps:8.4f} {os_:8.4f} {ps / os_:6.2f} "
              f"{frac:8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
