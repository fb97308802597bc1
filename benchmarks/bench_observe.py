"""Observability overhead: the same backfill with metrics + sampled tracing on and off.

    python benchmarks/bench_observe.py [--duration 12] [--rounds 3] [--sample 0.1]
                                       [--no-stream] [--quick]

"off": no observability options (the stages still time their elements into Beam
distributions and the process mirror: that is always on, it is what the run summary reads).
"on": ``--metrics-port`` (a scraper reads /metrics every second during the run),
``--metrics-textfile`` at the end, ``--trace-sample`` (OpenTelemetry spans written to a JSON
file) and the observing branches (availability, residuals, dead letters, latency).

Runs alternate off/on ``--rounds`` times in this process (DirectRunner) so the machine's load
hits both alike; prints per run the wall time, this process's CPU time and aligned rows/s, and
the median on/off ratios (goal: under 5 % overhead). The streaming job likewise (unless
``--no-stream`` or ``--quick``): a local Kafka broker, the recording published before each
run to fresh topics, the job (Prism) stopping after 3 s idle; its busy time (wall - idle),
CPU time of this process (the loopback workers run here) and messages/s. Then the
per-element cost of a stage's timing with and without a sampled tracer
(``StageMetrics.timed``), which does not depend on the machine's load as much.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmalign.infra import free_port
from mmalign.pipelines import backfill
from mmalign.pipelines.observe import ObserveOptions, Tracing
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas import metrics
from mmalign.transforms.io.parquet import read_aligned


def scrape_while(url: str, stop: threading.Event, scrapes: list) -> None:
    """GET /metrics every second while the run's server is up (as Prometheus would)."""
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                scrapes.append(len(r.read()))
        except OSError:
            pass


def one_run(manifests: list[Path], out: Path, observe: ObserveOptions | None
            ) -> tuple[float, float, int, int]:
    """(wall s, this process's CPU s, aligned rows, scrapes) of one backfill."""
    metrics.reset_local()
    stop, scrapes, scraper = threading.Event(), [], None
    if observe is not None:
        url = f"http://127.0.0.1:{observe.metrics_port}/metrics"
        scraper = threading.Thread(target=scrape_while, args=(url, stop, scrapes))
        scraper.start()
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        backfill.run(manifests, out, run_id="bench", observe=observe)
    finally:
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        stop.set()
        if scraper is not None:
            scraper.join()
    return wall, cpu, read_aligned(out / "aligned").num_rows, len(scrapes)


def stream_runs(manifest: Path, tmp: Path, rounds: int, sample: float) -> dict[str, list]:
    """Alternating off/on streaming runs on a local broker: {mode: [(busy s, cpu s, msgs)]}."""
    from mmalign.infra.kafka_broker import KafkaBroker
    from mmalign.pipelines import stream
    from mmalign.pipelines.publish import publish
    from mmalign.schemas.kafka import MODALITY_TOPICS, KafkaSettings

    idle = 3.0
    broker = KafkaBroker(tmp / "kafka")
    broker.start()
    res: dict[str, list] = {"off": [], "on": []}
    try:
        for r in range(rounds):
            for mode in ("off", "on"):
                tag = f"{mode}{r}"
                settings = KafkaSettings(broker.bootstrap_servers,
                                         {m: f"{t}.{tag}" for m, t in MODALITY_TOPICS.items()},
                                         f"mmalign.deadletter.{tag}")
                for t in [*settings.topics.values(), settings.deadletter_topic]:
                    broker.create_topic(t, 1)
                msgs = sum(publish(manifest, settings).messages.values())
                opts = None if mode == "off" else ObserveOptions(
                    metrics_host="127.0.0.1", metrics_port=free_port(), trace_sample=sample,
                    trace_exporter=str(tmp / f"stream-spans{r}.jsonl"))
                metrics.reset_local()
                stop, scrapes, scraper = threading.Event(), [], None
                if opts is not None:
                    scraper = threading.Thread(target=scrape_while, args=(
                        f"http://127.0.0.1:{opts.metrics_port}/metrics", stop, scrapes))
                    scraper.start()
                c0 = time.process_time()
                try:
                    summary = stream.run([manifest], tmp / f"s-{tag}", settings,
                                         stream.StreamOptions(group_id=f"g{tag}",
                                                              stop_after_idle_s=idle),
                                         run_id=tag, observe=opts)
                finally:
                    stop.set()
                    if scraper is not None:
                        scraper.join()
                cpu = time.process_time() - c0
                busy = summary["elapsed_s"] - idle
                res[mode].append((busy, cpu, msgs))
                print(f"  stream {mode:3s} round {r + 1}: busy {busy:6.2f} s, cpu {cpu:6.2f} s,"
                      f" {msgs / busy:7.1f} messages/s"
                      + (f" ({len(scrapes)} scrapes)" if opts else ""), flush=True)
    finally:
        broker.stop()
    return res


def report(res: dict[str, list], label: str) -> None:
    """Median on/off ratios of wall (or busy) time and CPU time, and per round."""
    for i, what in ((0, "wall"), (1, "cpu")):
        off_med = statistics.median(x[i] for x in res["off"])
        on_med = statistics.median(x[i] for x in res["on"])
        pairs = [b[i] / a[i] for a, b in zip(res["off"], res["on"])]
        ratio = on_med / off_med
        print(f"{label} {what:4s}: median off {off_med:.2f} s, on {on_med:.2f} s -> on/off "
              f"{ratio:.3f} ({(ratio - 1) * 100:+.1f} %); per round on/off "
              f"{' '.join(f'{r:.3f}' for r in pairs)} (median {statistics.median(pairs):.3f})")


def element_cost(n: int, sample: float) -> tuple[float, float]:
    """µs per ``StageMetrics.timed`` element without and with a tracer sampling ``sample``
    of the buckets (spans to /dev/null)."""
    stage = metrics.StageMetrics("bench")

    def loop() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            with stage.timed(modality="video", session="s", bucket=i):
                pass
        return (time.perf_counter() - t0) / n * 1e6
    metrics.reset_local()
    off = min(loop() for _ in range(3))
    tr = Tracing(sample, os.devnull, "bench", "mmalign-bench").start()
    try:
        on = min(loop() for _ in range(3))
    finally:
        tr.stop()
    metrics.reset_local()
    return off, on


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=12.0, help="seconds per recording")
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    ap.add_argument("--sample", type=float, default=0.1, help="--trace-sample of 'on'")
    ap.add_argument("--no-stream", action="store_true", help="backfill only")
    ap.add_argument("--quick", action="store_true", help="1 session x 6 s, 2 rounds, "
                    "backfill only")
    ns = ap.parse_args()
    sessions, duration, rounds = ((1, 6.0, 2) if ns.quick else
                                  (ns.sessions, ns.duration, ns.rounds))
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; {sessions} session(s) x "
          f"{duration:.0f} s, DirectRunner, {rounds} off/on rounds, trace sample {ns.sample}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        manifests = [generate_recording(t / f"rec{i}", seed=i, duration_s=duration,
                                        session=f"bench-{i}") for i in range(sessions)]
        backfill.run(manifests, t / "warm", run_id="warm")          # imports, caches
        res: dict[str, list] = {"off": [], "on": []}
        for r in range(rounds):
            for mode in ("off", "on"):
                opts = None if mode == "off" else ObserveOptions(
                    metrics_host="127.0.0.1", metrics_port=free_port(),
                    textfile=str(t / f"m{r}.prom"), trace_sample=ns.sample,
                    trace_exporter=str(t / f"spans{r}.jsonl"))
                wall, cpu, rows, scrapes = one_run(manifests, t / f"out-{mode}-{r}", opts)
                res[mode].append((wall, cpu, rows))
                extra = ""
                if opts is not None:
                    with open(opts.trace_exporter, encoding="utf-8") as f:
                        spans = sum(1 for _ in f)
                    extra = f", {scrapes} scrapes, {spans} spans"
                print(f"  backfill {mode:3s} round {r + 1}: wall {wall:6.2f} s, cpu {cpu:6.2f} "
                      f"s, {rows / wall:7.1f} rows/s ({rows} rows{extra})", flush=True)
        if {x[2] for x in res["off"] + res["on"]} != {res["off"][0][2]}:
            print("different row counts between runs", file=sys.stderr)
            return 1
    report(res, "backfill")
    if not (ns.quick or ns.no_stream):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = generate_recording(Path(tmp) / "rec", seed=21, duration_s=duration,
                                          session="bench-stream")
            report(stream_runs(manifest, Path(tmp), rounds, ns.sample), "stream")
    off, on = element_cost(20_000, ns.sample)
    print(f"per element StageMetrics.timed: {off:.1f} µs without a tracer, {on:.1f} µs with "
          f"{ns.sample:g} of buckets traced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
