"""A running streaming job shows itself: it commits the consumer group's offsets as buckets
complete (not only when it stops), so standard lag tools follow it, and it logs throughput,
watermark lag and the dead-letter rate every few seconds."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from mmalign.pipelines import stream
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording

pytestmark = pytest.mark.slow


def test_offsets_are_committed_while_the_job_runs(kafka_broker, fresh_topics, tmp_path,
                                                  capsys):
    manifest = generate_recording(tmp_path / "rec", seed=2, duration_s=12.0)
    settings, tag = fresh_topics()
    publish(manifest, settings, run_id="publish")
    group = f"g-{tag}"
    opts = stream.StreamOptions(group_id=group, stop_after_idle_s=8.0, progress=True,
                                progress_every_s=1.0)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group,
                             enable_auto_commit=False)
    tps = [TopicPartition(t, 0) for t in settings.topics.values()]
    seen, done = [], threading.Event()

    def watch():                      # what a lag tool sees while the job runs
        while not done.is_set():
            seen.append(sum(consumer.committed(tp) or 0 for tp in tps))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:                              # Beam's job server wants the main thread
        summary = stream.run([manifest], tmp_path / "out", settings, opts, run_id="p1")
    finally:
        done.set()
        watcher.join()
        consumer.close()
    final = sum(summary["committed"].values())
    mid_run = [s for s in seen if s > 0]
    assert final > 0 and mid_run, seen            # committed before the job stopped
    assert max(seen) <= final
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("stream: ")]
    assert lines and "msgs" in lines[-1] and "dead letters" in lines[-1]
    assert "watermark" in lines[-1] and "committed offsets" in lines[-1]
