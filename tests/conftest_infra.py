"""Fixtures for real servers: a KRaft Kafka broker, a Beam Flink job server, a redis-server.

tests/conftest.py registers them for every test folder (``pytest_plugins =
["tests.conftest_infra"]``). Each session gets its own
state dirs and free ports, so a broker or job server started by hand
(``python -m mmalign.infra...``) is left alone. Jars come from the download cache (fetched on
first use).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from mmalign.infra import free_port
from mmalign.infra.flink_jobserver import FlinkJobServer
from mmalign.infra.kafka_broker import KafkaBroker


@contextmanager
def _running(server):
    """``server`` started for the block, stopped after it (also when the block fails)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running single-node Kafka: ``.bootstrap_servers``, ``.create_topic(name, partitions)``,
    ``.stop()``, ``.kill()``, ``.start()``, ``.restart()`` (same ports and log dir)."""
    with _running(KafkaBroker(tmp_path_factory.mktemp("kafka"))) as broker:
        yield broker


@pytest.fixture(scope="session")
def fresh_topics(kafka_broker: KafkaBroker) -> Callable[[int], tuple]:
    """A function ``(partitions=1) -> (KafkaSettings, tag)``: the ingest and dead-letter topics
    under a new suffix ``.<tag>``, created on ``kafka_broker``, so tests never share topics."""
    from mmalign.schemas.kafka import DEADLETTER_TOPIC, MODALITY_TOPICS, KafkaSettings

    def make(partitions: int = 1) -> tuple[KafkaSettings, str]:
        tag = uuid.uuid4().hex[:8]
        settings = KafkaSettings(kafka_broker.bootstrap_servers,
                                 {m: f"{t}.{tag}" for m, t in MODALITY_TOPICS.items()},
                                 f"{DEADLETTER_TOPIC}.{tag}")
        for topic in [*settings.topics.values(), settings.deadletter_topic]:
            kafka_broker.create_topic(topic, partitions)
        return settings, tag
    return make


SASL_USERS = {"mmalign-app": "s3cr3t-Pl41n-pw-7f2c"}


@pytest.fixture(scope="session")
def sasl_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running single-node Kafka whose client listener is SASL_PLAINTEXT/PLAIN with the users
    in ``SASL_USERS`` (``.sasl_users``); ``.client_config(user)`` gives kafka-python kwargs,
    ``.create_topic`` works as on ``kafka_broker``."""
    with _running(KafkaBroker(tmp_path_factory.mktemp("kafka-sasl"),
                              sasl_users=dict(SASL_USERS))) as broker:
        yield broker


@pytest.fixture(scope="session")
def scram_tls_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """Like ``sasl_kafka_broker``, but the client listener is SASL_SSL with SCRAM-SHA-512:
    TLS with a certificate from a CA made for the broker (``.ca_file``), salted credentials
    in the KRaft metadata."""
    with _running(KafkaBroker(tmp_path_factory.mktemp("kafka-scram-tls"),
                              sasl_users=dict(SASL_USERS), sasl_mechanism="SCRAM-SHA-512",
                              tls=True)) as broker:
        yield broker


@pytest.fixture(scope="session")
def flink_job_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Job endpoint (``host:port``) of a running Beam Flink job server with embedded Flink.

    Run pipelines with ``--runner=PortableRunner --job_endpoint=<it> --environment_type=LOOPBACK``.
    """
    with _running(FlinkJobServer(tmp_path_factory.mktemp("flink"))) as server:
        yield server.endpoint


@dataclass
class RedisServer:
    """A redis-server on loopback: ``connection`` ("host:port", Feast's connection string);
    ``pause()`` / ``resume()`` freeze and thaw it (SIGSTOP/SIGCONT: clients block)."""
    connection: str
    proc: subprocess.Popen

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def client(self):
        import redis
        host, port = self.connection.split(":")
        return redis.Redis(host=host, port=int(port))


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A fresh redis-server (Debian's; `make test` installs it when missing)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port("127.0.0.1")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(f"127.0.0.1:{port}", proc)
    try:
        import redis
        client = server.client()
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not answer PING")
        yield server
    finally:
        server.resume()
        proc.terminate()
        proc.wait(timeout=10)
