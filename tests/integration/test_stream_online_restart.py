"""A kill between a bucket's Parquet write and its online-store write, on a real broker, a
real redis-server (Feast's Redis online store) and Beam Prism: the bucket stays out of the
ledger until its online write is done, so the restart writes it again, and the online store
ends with the session's last tick, read back through Feast.

    `mmalign stream` (a process) writes buckets as the recording arrives at 1x speed
    -> the first ticks reach Redis -> Redis is frozen (SIGSTOP): online writes block
    -> bucket files keep their ledger line back while their online write hangs
    -> SIGKILL the job; thaw Redis; the job restarts and runs to the end
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from mmalign.encoders import feature_store as fs
from mmalign.pipelines import backfill, stream
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.pipelines.stream_ledger import WRITTEN, state_dir
from mmalign.transforms.io.kafka import load_lines
from mmalign.transforms.io.parquet import part_key, read_aligned
from tests.e2e_checks import assert_online_holds, wait_until

pytestmark = pytest.mark.slow
SESSION = "sonl-001"


def _manifest(tmp, redis_connection: str, online: bool):
    base = generate_recording(tmp / "rec", seed=11, duration_s=18.0, size=(96, 72), fps=10.0,
                              imu_hz=100.0, session=SESSION, bad_records=False)
    data = yaml.safe_load(base.read_text())
    data["alignment"]["bucket_s"] = 3.0
    data["encoders"] = {"sensor": {"device": "cpu", "window_ms": 200},
                        "feature_store": {"enabled": online, "online": "redis",
                                          "redis": redis_connection}}
    path = base.with_name(f"manifest.{'online' if online else 'batch'}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_kill_before_the_online_write_leaves_the_bucket_to_the_restart(
        fresh_topics, redis_server, tmp_path):
    manifest = _manifest(tmp_path, redis_server.connection, online=True)
    backfill.run([_manifest(tmp_path, redis_server.connection, online=False)],
                 tmp_path / "batch", run_id="batch")      # the reference, Redis untouched
    settings, tag = fresh_topics()
    group, out = f"g-{tag}", tmp_path / "stream"
    state = state_dir(out, group)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMALIGN_KAFKA_")}
    env.update({"MMALIGN_KAFKA_DEADLETTER_TOPIC": settings.deadletter_topic,
                **{f"MMALIGN_KAFKA_TOPIC_{m.upper()}": t for m, t in settings.topics.items()}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmalign.pipelines.cli", "stream", "--manifest", str(manifest),
         "--out", str(out), "--group-id", group, "--run-id", "k1",
         "--bootstrap-servers", settings.bootstrap_servers, "--out-of-orderness", "0.3",
         "--allowed-lateness", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    files = lambda: set((out / "aligned").glob("*/part-*.parquet"))          # noqa: E731
    ledger = lambda: {(r["s"], r["b"]) for r in load_lines(state / WRITTEN)}  # noqa: E731
    pending = lambda: {part_key(p) for p in files()} - ledger()               # noqa: E731
    client = redis_server.client()
    publisher = threading.Thread(target=publish, args=(manifest, settings),
                                 kwargs={"speed": 1.0, "run_id": "pub"})
    try:
        assert wait_until(state.exists, 120, every_s=0.05), "the job did not start"
        publisher.start()
        assert wait_until(lambda: client.dbsize() > 0, 150, every_s=0.05), \
            "no tick reached the online store"
        redis_server.pause()
        since: dict = {}                            # bucket -> when first seen pending

        def stuck_for(seconds: float) -> set:
            now, now_pending = time.monotonic(), pending()
            for k in list(since):
                if k not in now_pending:
                    del since[k]
            for k in now_pending:
                since.setdefault(k, now)
            return {k for k, t in since.items() if now - t >= seconds}

        # a bucket file whose online write hangs stays out of the ledger (seconds, not ms)
        assert wait_until(lambda: bool(stuck_for(4.0)), 90, every_s=0.05), \
            "no bucket file waited for its online write: the ledger did not wait for it"
        stuck = stuck_for(4.0)
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)         # the job and its Prism: no drain, no commit
        proc.communicate(timeout=60)
        redis_server.resume()
        if publisher.is_alive() or publisher.ident:
            publisher.join(timeout=120)

    summary = stream.run([manifest], out, settings,
                         stream.StreamOptions(group_id=group, stop_after_idle_s=3.0,
                                              max_out_of_orderness_s=0.3,
                                              allowed_lateness_s=0.2), run_id="k2")
    assert summary["replayed_below"]
    batch, streamed = read_aligned(tmp_path / "batch" / "aligned"), read_aligned(out / "aligned")
    assert batch.num_rows > 50
    assert streamed.column("tick_ns").equals(batch.column("tick_ns"))
    np.testing.assert_allclose(np.stack(streamed.column("imu__emb").to_numpy(False)),
                               np.stack(batch.column("imu__emb").to_numpy(False)),
                               rtol=1e-5, atol=1e-6)
    rewritten = {(r["s"], r["b"]) for r in load_lines(state / WRITTEN) if r["run"] == "k2"}
    assert stuck <= rewritten                       # the restart wrote them again
    assert {part_key(p) for p in files()} <= ledger()
    assert not summary["counters"].get("sink.online.failed")
    last = streamed.slice(streamed.num_rows - 1).to_pylist()[0]
    assert_online_holds(fs.read_online(fs.load_store(out / "features"), [SESSION]), last,
                        ["imu"])
