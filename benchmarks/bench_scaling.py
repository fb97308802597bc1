"""Scaling: the same backfill with 1 and with 2 workers, on Flink (embedded job server,
``--parallelism``), on the local runner (``--direct_num_workers``, multi-processing) and with
the backfill's own ``--workers`` (sessions over forked processes of the local runner).

    python benchmarks/bench_scaling.py [--sessions 2] [--duration 12] [--quick]
    python benchmarks/bench_scaling.py --growth 12 48 192 [--growth-workers 1 2]
    python benchmarks/bench_scaling.py --one 192 --pairs 8

Work is partitioned by (session, file) for decoding and by (session, time bucket) for
alignment, so with S sessions of D seconds and bucket width B there are S*ceil(D/B) align
keys. Prints wall time per setting and the speed-up (1-worker time / 2-worker time), and
checks that every run wrote the same aligned rows.

``--growth D1 D2 ...``: the cost-growth table. One generated recording per duration (seconds;
generated first, untimed), each backfilled in a fresh child process (local DirectRunner) as a
whole session, in 60 s time slices with 1 worker and with 2 (pipelines/time_slices.py): wall
time of the run (imports excluded), CPU time (the child's and its children's), seconds per
recorded second, and the largest process's peak resident memory (the child's own VmHWM, or its
workers' ru_maxrss when larger), so linear time shows as a flat s/recorded-s and flat memory
as a flat peak. ``--growth-workers 1 2`` also runs the longest recording with the local runner
in multi-processing mode at each worker count and prints the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmalign.pipelines import backfill
from mmalign.pipelines.runners import runner_session
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned


def timed(manifests: list[Path], out: Path, runner: str, args: list[str],
          workers: int = 1) -> tuple[float, int]:
    with runner_session(runner, args) as (name, resolved):
        t0 = time.perf_counter()
        backfill.run(manifests, out, runner=name, pipeline_args=resolved, run_id="bench",
                     progress=False, workers=workers)
        elapsed = time.perf_counter() - t0
    return elapsed, read_aligned(out / "aligned").num_rows


def _vm_hwm_kb() -> int:
    """This process's own peak resident memory (VmHWM of its address space since exec).
    ru_maxrss is not used for it: Linux carries the forking parent's high-water mark into the
    child through fork and exec, so a child started by a 1.6 GB parent (the generator of a
    768 s recording) reported 1.6 GB whatever it used itself."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_run(manifest: str, out: str, beam_workers: int, slice_s: float, workers: int
              ) -> None:
    """One backfill in this (fresh) process; prints its measurements as one JSON line.
    ``beam_workers``: the local runner's own multi-processing (0: in process); ``slice_s`` and
    ``workers``: the backfill's time slices (0: whole sessions) and forked workers."""
    args = [] if beam_workers == 0 else [f"--direct_num_workers={beam_workers}",
                                         "--direct_running_mode=multi_processing"]
    c0 = os.times()
    t0 = time.perf_counter()
    summary = backfill.run([manifest], out, pipeline_args=args, run_id="growth",
                           slice_s=slice_s, workers=workers)
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + \
        (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    peak_kb = max(_vm_hwm_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak_kb / 1024,
                      "rows": summary["aligned_rows"]}))


def in_child(manifest: Path, out: Path, beam_workers: int = 0, slice_s: float = 0,
             workers: int = 1) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, __file__, "--child", str(manifest), str(out),
                          str(beam_workers), str(slice_s), str(workers)],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


GROWTH_MODES = [("whole session, 1 process", 0.0, 1), ("60 s slices, 1 worker", 60.0, 1),
                ("60 s slices, 2 workers", 60.0, 2)]


def growth(durations: list[float], workers: list[int]) -> int:
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; cost growth, local "
          f"DirectRunner, a fresh process per run; peak MB: the largest process's peak "
          f"resident memory (a forked worker's counts the pages it shares with its parent)")
    print(f"{'recording s':>12} {'mode':26} {'wall s':>8} {'cpu s':>8} {'wall s / rec s':>15} "
          f"{'peak MB':>8} {'rows':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        manifests = {}
        for d in durations:
            manifests[d] = generate_recording(Path(tmp) / f"rec{d:g}", duration_s=d,
                                              session=f"growth-{d:g}")
            rows = set()
            for mode, slice_s, w in GROWTH_MODES:
                r = in_child(manifests[d], Path(tmp) / f"out{d:g}", 0, slice_s, w)
                rows.add(r["rows"])
                print(f"{d:12.0f} {mode:26} {r['wall']:8.1f} {r['cpu']:8.1f} "
                      f"{r['wall'] / d:15.3f} {r['peak_mb']:8.0f} {r['rows']:7d}", flush=True)
            if len(rows) != 1:
                print(f"MISMATCH: aligned row counts differ between modes: {rows}")
                return 1
            shutil.rmtree(Path(tmp) / f"rec{d:g}", ignore_errors=True)   # 768 s: ~2.5 GB
        if workers:
            d = max(durations)
            manifests[d] = generate_recording(Path(tmp) / f"rec{d:g}", duration_s=d,
                                              session=f"growth-{d:g}")
            times, rows = {}, set()
            for w in workers:
                r = in_child(manifests[d], Path(tmp) / f"outw{w}", w)
                times[w] = r["wall"]
                rows.add(r["rows"])
                print(f"{d:.0f} s recording, local runner multi-processing, {w} worker(s): "
                      f"{r['wall']:.1f} s wall, {r['cpu']:.1f} s cpu, peak {r['peak_mb']:.0f} "
                      f"MB, {r['rows']} rows", flush=True)
            if len(workers) > 1:
                print(f"speed-up {workers[0]} -> {workers[-1]} workers: "
                      f"{times[workers[0]] / times[workers[-1]]:.2f}x")
            if len(rows) != 1:
                print(f"MISMATCH: aligned row counts differ between worker counts: {rows}")
                return 1
    return 0


# (label, --slice-s, --workers, CPUs the command may use); None: the command's default
ONE_MODES = [("whole, 1 process", "0", "1", None), ("slices, 1 worker", "60", "1", None),
             ("slices, 2 workers", "60", "2", None), ("default, 1 core", None, None, "0"),
             ("default, 2 cores", None, None, None)]


def one_recording(duration: float, pairs: int) -> int:
    """One generated recording, ``mmalign backfill`` as a whole session in one process, in
    60 s time slices with 1 and 2 workers, and with its defaults (auto slices and workers)
    pinned to one core (``taskset -c 0``: a one-core machine, where the command picks one
    worker) and on both cores, the five in a rotating order ``pairs`` times; prints each run
    (the summary's elapsed_s: the run without the command's imports; and the whole command's
    wall time) and the median speed-ups."""
    import statistics
    mmalign = Path(sys.executable).with_name("mmalign")
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; one {duration:g} s "
          f"recording, {pairs} rounds; run = summary elapsed_s, command = wall")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_recording(Path(tmp) / "rec", duration_s=duration, seed=0,
                                      session=f"one-{duration:g}")
        runs: dict[str, list[tuple[float, float]]] = {m[0]: [] for m in ONE_MODES}
        outputs = set()
        k = len(ONE_MODES)
        for i in range(pairs):
            for mode, slice_s, workers, cpus in ONE_MODES[i % k:] + ONE_MODES[:i % k]:
                out = Path(tmp) / "out"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [*(["taskset", "-c", cpus] if cpus else []), str(mmalign), "backfill",
                       "--manifest", str(manifest), "--out", str(out), "--json",
                       "--no-progress", *(["--slice-s", slice_s] if slice_s else []),
                       *(["--workers", workers] if workers else [])]
                t0 = time.perf_counter()
                res = subprocess.run(cmd, check=True, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                summary = json.loads(res.stdout)
                runs[mode].append((summary["elapsed_s"], wall))
                outputs.add((summary["aligned_rows"], summary["dead_letters"]))
                used = summary.get("slices", {}).get("workers", 1)
                print(f"  round {i + 1}: {mode:18s} run {summary['elapsed_s']:6.2f} s, "
                      f"command {wall:6.2f} s ({used} worker(s))", flush=True)
        med = {m: (statistics.median(r for r, _ in v), statistics.median(w for _, w in v))
               for m, v in runs.items()}
        for m, (r, w) in med.items():
            print(f"  median {m:18s} run {r:6.2f} s, command {w:6.2f} s")
        base, one, two, core1, core2 = (med[m[0]] for m in ONE_MODES)
        print(f"  2 workers vs whole session: run {base[0] / two[0]:.2f}x, command "
              f"{base[1] / two[1]:.2f}x; vs slices on 1 worker: run {one[0] / two[0]:.2f}x, "
              f"command {one[1] / two[1]:.2f}x")
        print(f"  the default command on 2 cores vs on 1 core: run {core1[0] / core2[0]:.2f}x, "
              f"command {core1[1] / core2[1]:.2f}x")
        if len(outputs) != 1:
            print(f"  MISMATCH: rows/letters differ between runs: {sorted(outputs)}")
            return 1
    return 0


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child_run(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
                  int(sys.argv[6]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--quick", action="store_true",
                    help="2 sessions x 6 s, Flink and --workers only")
    ap.add_argument("--growth", type=float, nargs="+", metavar="SECONDS",
                    help="cost-growth table over these recording durations (no Flink)")
    ap.add_argument("--growth-workers", type=int, nargs="*", default=[],
                    help="with --growth: local multi-processing runs of the longest recording")
    ap.add_argument("--one", type=float, metavar="SECONDS",
                    help="one recording of this length: whole session vs time slices on 1 "
                         "and 2 workers, alternating (--pairs rounds)")
    ap.add_argument("--pairs", type=int, default=5)
    ns = ap.parse_args()
    if ns.one:
        return one_recording(ns.one, ns.pairs)
    if ns.growth:
        return growth(ns.growth, ns.growth_workers)
    sessions, duration = (2, 6.0) if ns.quick else (ns.sessions, ns.duration)
    settings = [("flink", 1, ["--parallelism=1"]), ("flink", 2, ["--parallelism=2"])]
    if not ns.quick:
        settings += [("local", w, [f"--direct_num_workers={w}",
                                   "--direct_running_mode=multi_processing"]) for w in (1, 2)]
    # backfill --workers: sessions over forked processes of the local runner (in memory)
    settings += [("forked", w, []) for w in (1, 2)]
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; {sessions} session(s) x "
          f"{duration:.0f} s, bucket 4 s")
    with tempfile.TemporaryDirectory() as tmp:
        manifests = [generate_recording(Path(tmp) / f"rec{i}", seed=i, duration_s=duration,
                                        session=f"bench-{i}") for i in range(sessions)]
        times: dict[tuple[str, int], float] = {}
        rows = set()
        for runner, workers, args in settings:
            elapsed, n = timed(manifests, Path(tmp) / f"out-{runner}-{workers}",
                               "local" if runner == "forked" else runner, args,
                               workers if runner == "forked" else 1)
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
