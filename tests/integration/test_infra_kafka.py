"""The local KRaft Kafka broker: real round trips with kafka-python, offsets, restarts.

Fixture ``kafka_broker`` comes from tests/conftest_infra.py (registered by tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from mmalign.infra import REPO_ROOT, InfraError, maven_fetch
from mmalign.infra.kafka_broker import KafkaBroker


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _consume(bootstrap: str, topic: str, n: int, group: str | None = None, **kw) -> list:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=15000, **kw,
    )  # fmt: skip
    out = []
    try:
        for msg in consumer:
            out.append(msg)
            if len(out) == n:
                break
        if group is not None:
            consumer.commit()
    finally:
        consumer.close()
    return out


@pytest.mark.slow
def test_round_trip_keeps_values_keys_headers_and_per_key_order(kafka_broker: KafkaBroker) -> None:
    topic = _topic("roundtrip")
    kafka_broker.create_topic(topic, partitions=3)
    records = [
        (f"cam{i % 4}".encode(), f"chunk-{i}".encode(),
         [("t_ns", str(1_000_000 * i).encode()), ("modality", b"video"), ("empty", b"")])
        for i in range(60)
    ]  # fmt: skip
    _produce(kafka_broker.bootstrap_servers, topic, records)
    got = _consume(kafka_broker.bootstrap_servers, topic, len(records))
    assert len(got) == len(records)
    assert {m.partition for m in got} <= {0, 1, 2}
    by_value = {m.value: m for m in got}
    for key, value, headers in records:
        msg = by_value[value]
        assert msg.key == key
        assert list(msg.headers) == headers
    for key in {k for k, _, _ in records}:
        seq = [int(m.value.split(b"-")[1]) for m in got if m.key == key]
        assert seq == sorted(seq), f"per-key order broken for {key!r}"


@pytest.mark.slow
def test_committed_offsets_survive_consumer_restart(kafka_broker: KafkaBroker) -> None:
    topic, group = _topic("offsets"), _topic("group")
    kafka_broker.create_topic(topic, partitions=1)
    _produce(kafka_broker.bootstrap_servers, topic, [(None, b"%d" % i, []) for i in range(20)])
    first = _consume(kafka_broker.bootstrap_servers, topic, 8, group=group)
    assert [int(m.value) for m in first] == list(range(8))
    rest = _consume(kafka_broker.bootstrap_servers, topic, 12, group=group)
    assert [int(m.value) for m in rest] == list(range(8, 20))
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group)
    try:
        assert consumer.committed(TopicPartition(topic, 0)) == 20
    finally:
        consumer.close()


@pytest.mark.slow
def test_broker_restart_and_crash_keep_messages_and_offsets(kafka_broker: KafkaBroker) -> None:
    topic, group = _topic("durable"), _topic("group")
    kafka_broker.create_topic(topic, partitions=2)
    bootstrap = kafka_broker.bootstrap_servers
    _produce(bootstrap, topic, [(b"a", b"before-%d" % i, [("h", b"1")]) for i in range(10)])
    assert len(_consume(bootstrap, topic, 4, group=group)) == 4
    pid = kafka_broker.pid

    kafka_broker.restart()  # controlled shutdown, same ports and log dir
    assert kafka_broker.pid not in (None, pid)
    assert kafka_broker.bootstrap_servers == bootstrap
    _produce(bootstrap, topic, [(b"a", b"after-%d" % i, []) for i in range(5)])

    assert kafka_broker.kill()  # SIGKILL: unclean shutdown, log recovery on start
    assert kafka_broker.pid is None
    kafka_broker.start()

    everything = _consume(bootstrap, topic, 15)
    assert sorted(m.value for m in everything) == sorted(
        [b"before-%d" % i for i in range(10)] + [b"after-%d" % i for i in range(5)]
    )
    assert all(list(m.headers) == [("h", b"1")] for m in everything if m.value.startswith(b"b"))
    rest = _consume(bootstrap, topic, 11, group=group)
    assert [m.value for m in rest] == [b"before-%d" % i for i in range(4, 10)] + [
        b"after-%d" % i for i in range(5)
    ]


@pytest.mark.slow
def test_create_topic_rejects_duplicates_and_bad_partition_counts(
    kafka_broker: KafkaBroker,
) -> None:
    topic = _topic("dup")
    kafka_broker.create_topic(topic, partitions=2)
    with pytest.raises(InfraError, match="already exists"):
        kafka_broker.create_topic(topic, partitions=2)
    with pytest.raises(InfraError, match="partitions must be >= 1"):
        kafka_broker.create_topic(_topic("zero"), partitions=0)


@pytest.mark.slow
def test_start_refuses_a_port_in_use(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    other = KafkaBroker(tmp_path / "other", broker_port=kafka_broker.broker_port)
    with pytest.raises(InfraError, match="already in use"):
        other.start()
    assert other.pid is None


def test_cli_status_of_a_stopped_broker(tmp_path: Path) -> None:
    env = {**os.environ, "MMALIGN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mmalign.infra.kafka_broker", "status", "--json",
           "--port", "19092"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert '"running": false' in proc.stdout
    assert '"bootstrap_servers": "127.0.0.1:19092"' in proc.stdout
    assert (tmp_path / "cache" / "run" / "kafka" / "state.json").exists()


def test_fetch_without_maven_names_the_missing_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(InfraError, match="`mvn` is not on PATH"):
        maven_fetch("nothing", ["org.example:nothing:1.0"])
