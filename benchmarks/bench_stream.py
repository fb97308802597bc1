"""Streaming job on a real local Kafka broker + Beam Prism, against the backfill of the same
recording (DirectRunner, same process).

    python benchmarks/bench_stream.py [--duration 30] [--speeds 1 2 4]

1. throughput: the whole recording is published first, then the job reads it from offset 0;
   messages/s and samples/s over the job's wall time minus its idle stop (``--idle``), and the
   ratio to the backfill's wall time on the same recording; and messages/s over the time from
   calling the job to the first write of its last bucket file (the backlog drained, start-up
   included, the stop excluded);
2. latency: the recording is published at each of ``--speeds`` x real time while the job runs;
   for each aligned bucket file, latency = the file's write time - the wall time its last event
   time was published. It includes the watermark hold (out-of-orderness + lateness, in event
   time: divided by the speed in wall time), printed beside it; one row per speed, so the
   table is latency against offered message rate.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmalign.infra.kafka_broker import KafkaBroker
from mmalign.pipelines import backfill, stream
from mmalign.pipelines.core import prepare as prepare_job
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas import kafka as kafka_schema
from mmalign.schemas.kafka import MODALITY_TOPICS, KafkaSettings


def _settings(broker: KafkaBroker) -> KafkaSettings:
    tag = uuid.uuid4().hex[:8]
    s = KafkaSettings(broker.bootstrap_servers,
                      {m: f"{t}.{tag}" for m, t in MODALITY_TOPICS.items()},
                      f"mmalign.deadletter.{tag}")
    for t in [*s.topics.values(), s.deadletter_topic]:
        broker.create_topic(t, 1)
    return s


class FirstWrites:
    """The time each bucket file under ``folder`` was first written, polled every 20 ms while
    the job runs (the stop later rewrites files to the dataset's one schema: their mtimes
    move, so the job's own write times are read as they happen)."""

    def __init__(self, folder: Path):
        self.folder, self.first = folder, {}
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self._scan()

    def _scan(self) -> None:
        for f in self.folder.glob("*/part-*.parquet"):
            if f not in self.first:
                with contextlib.suppress(FileNotFoundError):
                    self.first[f] = f.stat().st_mtime

    def __enter__(self) -> FirstWrites:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="recording seconds")
    ap.add_argument("--speeds", type=float, nargs="+", default=[1.0],
                    help="publish speeds (x real time) for the latency runs")
    ap.add_argument("--idle", type=float, default=3.0, help="stop after idle seconds")
    ap.add_argument("--quick", action="store_true", help="a 10 s recording")
    ap.add_argument("--out-of-orderness", type=float, default=None,
                    help="the job's max out-of-orderness, s (default: the job's default)")
    ap.add_argument("--lateness", type=float, default=None,
                    help="the job's allowed lateness, s (default: the job's default)")
    args = ap.parse_args()
    if args.quick:
        args.duration = 10.0
    tmp = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    manifest = generate_recording(tmp / "rec", seed=21, duration_s=args.duration)
    t0 = time.perf_counter()
    bsum = backfill.run([manifest], tmp / "batch", run_id="batch")
    batch_s = time.perf_counter() - t0
    broker = KafkaBroker(tmp / "kafka")
    broker.start()
    try:
        # 1. throughput: everything is on the topics before the job starts
        settings = _settings(broker)
        rep = publish(manifest, settings)
        n_msgs = sum(rep.messages.values())
        opts = stream.StreamOptions(group_id="bench", stop_after_idle_s=args.idle)
        # as in a process of its own: the job's first Kafka client probes the broker version
        # (the publisher above, in this process, taught the other clients of it)
        getattr(kafka_schema, "_BROKER_VERSIONS", {}).clear()
        with FirstWrites(tmp / "s1" / "aligned") as writes:
            started = time.time()
            s1 = stream.run([manifest], tmp / "s1", settings, opts, run_id="t")
        busy = s1["elapsed_s"] - args.idle
        drained = max(writes.first.values()) - started
        samples = sum(v for k, v in s1["counters"].items()
                      if k.startswith("ingest.") and k.endswith(".records")
                      and k != "ingest.records")
        print(f"recording {args.duration:g} s: {n_msgs} messages, {samples} samples, "
              f"{bsum['aligned_rows']} aligned rows")
        print(f"throughput: stream {n_msgs / busy:.1f} messages/s, {samples / busy:.0f} "
              f"samples/s (job {s1['elapsed_s']:.1f} s - {args.idle:g} s idle stop); "
              f"backfill {batch_s:.1f} s; stream/backfill time ratio {busy / batch_s:.2f}x")
        print(f"backlog drained: the last of {len(writes.first)} bucket files written "
              f"{drained:.2f} s after the job was called (start-up included): "
              f"{n_msgs / drained:.1f} messages/s")

        # 2. latency: published at each --speeds while the job runs (latency vs offered rate)
        hold = {k: v for k, v in (("max_out_of_orderness_s", args.out_of_orderness),
                                  ("allowed_lateness_s", args.lateness)) if v is not None}
        print("speed | offered messages/s | buckets | latency p50 | p95 | max | hold")
        for k, speed in enumerate(args.speeds):
            settings = _settings(broker)
            out = tmp / f"s2-{k}"
            job = prepare_job([manifest], out, f"lat{k}")
            published: dict = {}

            def producer(speed=speed, settings=settings, published=published) -> None:
                time.sleep(2.0)          # let the job start reading
                published["report"] = publish(manifest, settings, speed=speed)

            th = threading.Thread(target=producer)
            th.start()
            opts2 = stream.StreamOptions(group_id=f"bench-lat{k}",
                                         stop_after_idle_s=args.idle + 2, **hold)
            stream.run([manifest], out, settings, opts2, run_id=f"lat{k}")
            th.join()
            rep = published["report"]
            lat = []
            for f in sorted((out / "aligned").glob("*/part-b*.parquet")):
                b = int(f.stem.split("-b")[1])
                last_event = (b + 1) * job.bucket_ns
                sent_wall = rep.started_wall_ns + (last_event - rep.first_event_ns) / speed
                lat.append((f.stat().st_mtime_ns - sent_wall) / 1e9)
            # the last bucket's nominal end lies after the recording's: not a latency
            steady = lat[:-1] or lat
            rate = sum(rep.messages.values()) / (args.duration / speed)
            print(f"{speed:g}x | {rate:.1f} | {len(steady)} x {job.bucket_ns / 1e9:g} s | "
                  f"{_pct(steady, 50):.2f} s | {_pct(steady, 95):.2f} s | {max(steady):.2f} s | "
                  f"{opts2.max_out_of_orderness_s + opts2.allowed_lateness_s:g} s (event time)")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
