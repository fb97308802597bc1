"""Faults on the real broker: the broker restarts mid-stream, then the pipeline is restarted on
new data. Nothing is lost and nothing is duplicated: the rows equal the backfill's, the
dead-letter topic holds each bad record once."""

from __future__ import annotations

import collections
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer

from deadletter.file_sink import read_dead_letters
from deadletter.kafka_topic import read_topic
from pipelines import backfill, stream
from pipelines.kafka_config import MODALITY_TOPICS, KafkaSettings
from pipelines.publish import prepare, publish
from pipelines.sample_recording import generate_recording
from schemas.message import encode
from transforms.parquet_sink import read_aligned

pytestmark = pytest.mark.slow


def _send(bootstrap: str, session: str, messages) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=50,
                             retry_backoff_ms=500, max_in_flight_requests_per_connection=1)
    try:
        for topic, env, ipc in messages:
            producer.send(topic, key=session.encode(), value=encode(env, ipc))
        producer.flush()
    finally:
        producer.close()


def _letters(records) -> collections.Counter:
    return collections.Counter((r.letter.session_id, r.letter.stage, r.letter.reason,
                                r.letter.stream_id, r.letter.position) for r in records
                               if r.letter.stage != "decode")


def _expected_letters(batch_out) -> collections.Counter:
    rows = read_dead_letters(batch_out / "deadletter").to_pylist()
    return collections.Counter((d["session_id"], d["stage"], d["reason"], d["stream_id"],
                                d["position"]) for d in rows if d["stage"] != "decode")


@pytest.fixture(scope="module")
def run(kafka_broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restart")
    m1 = generate_recording(tmp / "rec1", seed=8, duration_s=6.0, session="rs-001")
    m2 = generate_recording(tmp / "rec2", seed=9, duration_s=5.0, session="rs-002")
    backfill.run([m1, m2], tmp / "batch", run_id="batch")
    tag = uuid.uuid4().hex[:8]
    settings = KafkaSettings(kafka_broker.bootstrap_servers,
                             {m: f"{t}.{tag}" for m, t in MODALITY_TOPICS.items()},
                             f"mmalign.deadletter.{tag}")
    for t in [*settings.topics.values(), settings.deadletter_topic]:
        kafka_broker.create_topic(t, 1)
    opts = stream.StreamOptions(group_id=f"g-{tag}", stop_after_idle_s=6.0)
    out = tmp / "stream"

    # run 1: half the recording; while the job runs the broker restarts, then the rest comes
    prep = prepare(m1, settings)
    half = len(prep.messages) // 2
    _send(kafka_broker.bootstrap_servers, prep.session, prep.messages[:half])
    progress = out / "_stream" / "r1"
    fault: dict = {}

    def restart_then_send() -> None:
        deadline = time.monotonic() + 120
        while not list(progress.glob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.2)
        fault["read_before_restart"] = bool(list(progress.glob("*.jsonl")))
        kafka_broker.restart()
        _send(kafka_broker.bootstrap_servers, prep.session, prep.messages[half:])
        fault["sent"] = True

    helper = threading.Thread(target=restart_then_send)
    helper.start()
    first = stream.run([m1, m2], out, settings, opts, run_id="r1")   # Beam needs the main thread
    helper.join(timeout=300)
    assert fault == {"read_before_restart": True, "sent": True}
    first_files = {p.name: p.read_bytes()
                   for p in (out / "aligned" / "session_id=rs-001").glob("*.parquet")}
    dlq_first = list(read_topic(settings))

    # run 2: the pipeline restarts on new data (a second session) from the committed offsets
    publish(m2, settings, run_id="publish2")
    second = stream.run([m1, m2], out, settings, opts, run_id="r2")
    return {"tmp": tmp, "first": first, "second": second, "half": half,
            "first_files": first_files, "dlq_first": dlq_first,
            "dlq": list(read_topic(settings))}


def test_broker_restart_mid_stream_loses_nothing(run):
    batch = read_aligned(run["tmp"] / "batch" / "aligned", "rs-001")
    streamed = read_aligned(run["tmp"] / "stream" / "aligned", "rs-001")
    assert run["half"] > 2 and batch.num_rows > 100
    assert streamed.schema.names == batch.schema.names
    for name in batch.schema.names:
        assert streamed.column(name).equals(batch.column(name)), name
    expected = _expected_letters(run["tmp"] / "batch")
    got = _letters(run["dlq_first"])
    assert got == collections.Counter({k: v for k, v in expected.items() if k[0] == "rs-001"})


def test_pipeline_restart_resumes_at_committed_offsets(run):
    first, second = run["first"], run["second"]
    assert second["started_at"] == first["committed"]
    assert sum(second["committed"].values()) > sum(first["committed"].values())
    batch = read_aligned(run["tmp"] / "batch" / "aligned", "rs-002")
    streamed = read_aligned(run["tmp"] / "stream" / "aligned", "rs-002")
    for name in batch.schema.names:
        assert streamed.column(name).equals(batch.column(name)), name
    # session 1's files were not rewritten; every bad record is on the topic exactly once
    after = {p.name: p.read_bytes()
             for p in (run["tmp"] / "stream" / "aligned" / "session_id=rs-001").glob("*.parquet")}
    assert after == run["first_files"]
    assert _letters(run["dlq"]) == _expected_letters(run["tmp"] / "batch")
    ticks = read_aligned(run["tmp"] / "stream" / "aligned").select(["session_id", "tick_ns"])
    assert len(set(zip(*ticks.to_pydict().values(), strict=True))) == ticks.num_rows
