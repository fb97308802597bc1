"""Scaling: the same backfill with 1 and with 2 workers, on Flink (embedded job server,
``--parallelism``) and on the local runner (``--direct_num_workers``, multi-processing).

    python benchmarks/bench_scaling.py [--sessions 2] [--duration 12] [--quick]

Work is partitioned by (session, file) for decoding and by (session, time bucket) for
alignment, so with S sessions of D seconds and bucket width B there are S*ceil(D/B) align
keys. Prints wall time per setting and the speed-up (1-worker time / 2-worker time), and
checks that every run wrote the same aligned rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmalign.pipelines import backfill
from mmalign.pipelines.runners import runner_session
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned


def timed(manifests: list[Path], out: Path, runner: str, args: list[str]) -> tuple[float, int]:
    with runner_session(runner, args) as (name, resolved):
        t0 = time.perf_counter()
        backfill.run(manifests, out, runner=name, pipeline_args=resolved, run_id="bench")
        elapsed = time.perf_counter() - t0
    return elapsed, read_aligned(out / "aligned").num_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--quick", action="store_true", help="2 sessions x 6 s, Flink only")
    ns = ap.parse_args()
    sessions, duration = (2, 6.0) if ns.quick else (ns.sessions, ns.duration)
    settings = [("flink", 1, ["--parallelism=1"]), ("flink", 2, ["--parallelism=2"])]
    if not ns.quick:
        settings += [("local", w, [f"--direct_num_workers={w}",
                                   "--direct_running_mode=multi_processing"]) for w in (1, 2)]
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; {sessions} session(s) x "
          f"{duration:.0f} s, bucket 4 s")
    with tempfile.TemporaryDirectory() as tmp:
        manifests = [generate_recording(Path(tmp) / f"rec{i}", seed=i, duration_s=duration,
                                        session=f"bench-{i}") for i in range(sessions)]
        times: dict[tuple[str, int], float] = {}
        rows = set()
        for runner, workers, args in settings:
            elapsed, n = timed(manifests, Path(tmp) / f"out-{runner}-{workers}", runner, args)
            times[(runner, workers)] = elapsed
            rows.add(n)
            print(f"  {runner:6s} {workers} worker(s): {elapsed:7.1f} s  ({n} aligned rows)",
                  flush=True)
        for runner in dict.fromkeys(r for r, _ in times):
            print(f"  {runner}: speed-up 1 -> 2 workers = "
                  f"{times[(runner, 1)] / times[(runner, 2)]:.2f}x")
        if len(rows) != 1:
            print(f"  MISMATCH: aligned row counts differ between settings: {sorted(rows)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
