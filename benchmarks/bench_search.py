"""Latency of `mmalign search` (pipelines/search.py, exact brute-force cosine) on a synthetic
output of --n unit vectors of --dim dimensions in --sessions sessions (one Parquet file per
session and 10 000 ticks, like the aligned layout).

    python benchmarks/bench_search.py [--n 100000] [--dim 384] [--sessions 10] [--queries 50]

Prints p50/p95 of (a) a whole `search()` call (lists the files, reads the column, ranks: what
one command-line query costs after start-up) and (b) the ranking alone on vectors already in
memory (``top_k``: one matrix-vector product + argpartition). Recall@10 vs exact brute force is
1.0 by construction (the search is the brute force); an approximate index would be measured
against ``top_k`` here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.pipelines import search

PER_FILE = 10_000


def write_output(root: Path, n: int, dim: int, sessions: int) -> None:
    rng = np.random.default_rng(0)
    per_session = n // sessions
    for s in range(sessions):
        folder = root / "aligned" / f"sess-{s:03d}"
        folder.mkdir(parents=True)
        for b, start in enumerate(range(0, per_session, PER_FILE)):
            m = min(PER_FILE, per_session - start)
            v = rng.normal(size=(m, dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            ticks = (np.arange(m, dtype=np.int64) + start) * 100_000_000
            pq.write_table(pa.table({
                "session_id": [f"sess-{s:03d}"] * m, "tick_ns": ticks,
                "tick_time": pa.array(ticks, pa.timestamp("ns", "UTC")),
                "cam0__emb": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim),
                "cam0__model_id": ["bench@0"] * m}), folder / f"part-{b:08d}.parquet")


def pct(xs: list[float]) -> str:
    a = np.array(xs) * 1e3
    return f"p50 {np.percentile(a, 50):8.2f} ms  p95 {np.percentile(a, 95):8.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        root = Path(tmp)
        write_output(root, args.n, args.dim, args.sessions)
        rng = np.random.default_rng(1)
        whole = []
        for _ in range(max(3, args.queries // 10)):
            s = int(rng.integers(args.sessions))
            t = int(rng.integers(args.n // args.sessions)) * 100_000_000
            t0 = time.perf_counter()
            res = search.search(str(root), like=f"sess-{s:03d}@{t}", k=args.k)
            whole.append(time.perf_counter() - t0)
        assert len(res["results"]) == args.k
        vec = search.load_vectors(str(root), "cam0")
        ranking = []
        for _ in range(args.queries):
            q = rng.normal(size=args.dim)
            t0 = time.perf_counter()
            search.top_k(vec.matrix, q, args.k)
            ranking.append(time.perf_counter() - t0)
        print(f"{vec.matrix.shape[0]} vectors x {args.dim} (float32), {args.sessions} sessions, "
              f"k={args.k}, exact brute force (recall@{args.k} = 1.0 by construction)")
        print(f"whole search() incl. reading the Parquet ({len(whole)} queries): {pct(whole)}")
        print(f"ranking in memory, top_k ({len(ranking)} queries):            {pct(ranking)}")


if __name__ == "__main__":
    main()
