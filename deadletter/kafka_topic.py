"""Dead letters on a Kafka topic (Kafka Connect's convention), and `inspect` / `replay`.

A dead letter becomes one record on the dead-letter topic: the original key, value and
timestamp when the letter is about a whole Kafka message (poison, too late), or the rejected
row's copy (JSON) when it is about one row of a chunk; headers say where it came from and why:

    __connect.errors.topic / .partition / .offset     the original record (when from Kafka)
    __connect.errors.stage                            ingest, decode, validate, ... (our stages)
    __connect.errors.exception.class.name / .message  the error class and one sentence
    __connect.errors.connector.name                   "mmalign"
    mmalign.reason, mmalign.session, mmalign.stream, mmalign.modality, mmalign.position,
    mmalign.source_uri, mmalign.run_id, mmalign.event_time_ns   (when known)
    mmalign.letter_id                                 ``letter_id``: the same bad record gives
                                                      the same id in every run (restarts skip
                                                      ids already on the topic)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.metrics import DEADLETTER

H = "__connect.errors."
# DeadLetter.attrs keys that carry the original Kafka coordinates
KAFKA_ATTRS = ("kafka.topic", "kafka.partition", "kafka.offset", "kafka.timestamp_ms",
               "kafka.key")
LETTER_ID = "mmalign.letter_id"


def kafka_attrs(topic: str, partition: int, offset: int, timestamp_ms: int | None,
                key: bytes | None) -> dict[str, str]:
    a = {"kafka.topic": topic, "kafka.partition": str(partition), "kafka.offset": str(offset)}
    if timestamp_ms is not None:
        a["kafka.timestamp_ms"] = str(timestamp_ms)
    if key is not None:
        a["kafka.key"] = key.decode("utf-8", "backslashreplace")
    return a


def letter_id(d: DeadLetter) -> str:
    """A stable id of what went wrong where: stage, reason, error class, session, stream,
    position, source and the original Kafka record; not the run, the time or the message."""
    a = d.attrs
    key = [d.stage, d.reason, d.error_class, d.session_id, d.stream_id, d.modality,
           d.position, d.source_uri, d.event_time_ns,
           *(a.get(k) for k in ("kafka.topic", "kafka.partition", "kafka.offset"))]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def to_record(d: DeadLetter) -> tuple[bytes | None, bytes | None, list, int | None]:
    """(key, value, headers, timestamp_ms) of the dead-letter topic record for ``d``."""
    a = d.attrs
    headers = {
        H + "stage": d.stage,
        H + "exception.class.name": d.error_class,
        H + "exception.message": d.message,
        H + "connector.name": "mmalign",
        "mmalign.reason": d.reason,
        LETTER_ID: letter_id(d),
    }
    if "kafka.topic" in a:
        headers |= {H + "topic": a["kafka.topic"], H + "partition": a["kafka.partition"],
                    H + "offset": a["kafka.offset"]}
    for name, value in (("session", d.session_id), ("stream", d.stream_id),
                        ("modality", d.modality), ("position", d.position),
                        ("source_uri", d.source_uri), ("run_id", d.run_id),
                        ("payload_format", d.payload_format),
                        ("event_time_ns", None if d.event_time_ns is None
                         else str(d.event_time_ns))):
        if value:
            headers["mmalign." + name] = value
    key = a.get("kafka.key", d.session_id)
    ts = a.get("kafka.timestamp_ms")
    return (key.encode() if key is not None else None, d.payload,
            [(k, str(v).encode()) for k, v in headers.items()],
            int(ts) if ts is not None else None)


def from_record(key: bytes | None, value: bytes | None, headers: list, timestamp_ms: int | None,
                ) -> DeadLetter:
    """The DeadLetter a dead-letter topic record describes (inverse of ``to_record``)."""
    h = {k: v.decode("utf-8", "replace") for k, v in headers}
    attrs = {}
    if H + "topic" in h:
        attrs = {"kafka.topic": h[H + "topic"], "kafka.partition": h[H + "partition"],
                 "kafka.offset": h[H + "offset"]}
    if timestamp_ms is not None:
        attrs["kafka.timestamp_ms"] = str(timestamp_ms)
    if key is not None:
        attrs["kafka.key"] = key.decode("utf-8", "backslashreplace")
    if LETTER_ID in h:
        attrs[LETTER_ID] = h[LETTER_ID]
    ev = h.get("mmalign.event_time_ns")
    return DeadLetter(stage=h.get(H + "stage", "ingest"),
                      error_class=h.get(H + "exception.class.name", ""),
                      reason=h.get("mmalign.reason", ""),
                      message=h.get(H + "exception.message", ""),
                      run_id=h.get("mmalign.run_id", ""), session_id=h.get("mmalign.session"),
                      stream_id=h.get("mmalign.stream"), modality=h.get("mmalign.modality"),
                      source_uri=h.get("mmalign.source_uri"),
                      position=h.get("mmalign.position"),
                      event_time_ns=int(ev) if ev else None, payload=value,
                      payload_format=h.get("mmalign.payload_format"), attrs=attrs)


class DeadLetterProducer:
    """Sends dead letters to the topic; ``flush()`` returns once the broker has them all."""

    def __init__(self, settings, topic: str | None = None):
        from kafka import KafkaProducer  # lazy: kafka-python only where a broker is used
        self.topic = topic or settings.deadletter_topic
        self.producer = settings.make(KafkaProducer, acks="all", retries=20,
                                      retry_backoff_ms=250, linger_ms=5,
                                      max_in_flight_requests_per_connection=1)
        self.sent = 0

    def send(self, d: DeadLetter) -> None:
        key, value, headers, ts = to_record(d)
        self.producer.send(self.topic, key=key, value=value, headers=headers, timestamp_ms=ts)
        self.sent += 1

    def flush(self, timeout_s: float = 120.0) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


class WriteDeadLettersToKafkaFn(beam.DoFn):
    """DeadLetters -> the dead-letter topic; a bundle finishes only once the broker acked it.
    Letters whose ``letter_id`` is in ``skip_ids`` (already on the topic: sent by an earlier
    run before a restart) are not sent again."""

    def __init__(self, settings, run_id: str = "", skip_ids: frozenset[str] = frozenset()):
        self.settings = settings
        self.run_id = run_id
        self.skip_ids = skip_ids

    def setup(self):
        self.out = DeadLetterProducer(self.settings)

    def process(self, d: DeadLetter):
        if self.skip_ids and letter_id(d) in self.skip_ids:
            DEADLETTER.count("already_sent", modality="kafka")
            return
        self.out.send(d if d.run_id else d.with_run(self.run_id))
        DEADLETTER.count(d.stage, modality="kafka")
        yield d

    def finish_bundle(self):
        self.out.flush()

    def teardown(self):
        out = getattr(self, "out", None)
        if out is not None:
            out.close()


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    letter: DeadLetter


def read_topic(settings, topic: str | None = None, timeout_s: float = 10.0
               ) -> Iterator[TopicRecord]:
    """Every record now on the dead-letter topic, from the beginning (no group, no commits)."""
    # lazy: kafka-python only where a broker is used
    from kafka import KafkaConsumer, TopicPartition
    topic = topic or settings.deadletter_topic
    consumer = settings.make(KafkaConsumer, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        todo = {tp for tp in tps if end[tp] > consumer.position(tp)}
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    yield TopicRecord(m.partition, m.offset,
                                      from_record(m.key, m.value, m.headers, m.timestamp))
                    deadline = time.monotonic() + timeout_s
                if consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
    finally:
        consumer.close()


def letter_ids(settings, topic: str | None = None) -> frozenset[str]:
    """The ``letter_id`` of every record now on the dead-letter topic."""
    return frozenset(r.letter.attrs[LETTER_ID] for r in read_topic(settings, topic)
                     if LETTER_ID in r.letter.attrs)


def summarize(records: Iterable[TopicRecord]) -> dict:
    """Counts by stage/reason and by stream: what `mmalign deadletter inspect --json` prints."""
    records = list(records)
    by_reason = Counter(f"{r.letter.stage}/{r.letter.reason}" for r in records)
    by_stream = Counter(f"{r.letter.session_id}/{r.letter.stream_id}" for r in records)
    return {"records": len(records), "by_reason": dict(sorted(by_reason.items())),
            "by_stream": dict(sorted(by_stream.items()))}


def describe(r: TopicRecord) -> dict:
    d = r.letter
    return {"partition": r.partition, "offset": r.offset, "stage": d.stage,
            "reason": d.reason, "error_class": d.error_class, "message": d.message,
            "session": d.session_id, "stream": d.stream_id, "position": d.position,
            "origin": {k: d.attrs[k] for k in KAFKA_ATTRS[:3] if k in d.attrs},
            "value_bytes": len(d.payload or b"")}


def replay(settings, *, stage: str | None = None, reason: str | None = None,
           fixed_values: dict[tuple[int, int], bytes] | None = None,
           topic: str | None = None) -> dict:
    """Re-publish dead letters that came from a Kafka topic back to it, with their original
    key. ``fixed_values``: (dlq partition, offset) -> a corrected value; letters not from a
    topic (decode of a file, row-level copies) are skipped and counted."""
    from kafka import KafkaProducer  # lazy: kafka-python only where a broker is used
    producer = settings.make(KafkaProducer, acks="all", retries=20)
    sent, skipped = Counter(), Counter()
    try:
        for r in read_topic(settings, topic):
            d = r.letter
            if (stage and d.stage != stage) or (reason and d.reason != reason):
                continue
            if "kafka.topic" not in d.attrs or d.payload_format != "kafka-value":
                skipped[f"{d.stage}/{d.reason}"] += 1
                continue
            value = (fixed_values or {}).get((r.partition, r.offset), d.payload)
            key = d.attrs.get("kafka.key")
            producer.send(d.attrs["kafka.topic"], key=key.encode() if key else None,
                          value=value,
                          headers=[("mmalign.replayed_from", f"{r.partition}:{r.offset}"
                                    .encode())])
            sent[d.attrs["kafka.topic"]] += 1
        producer.flush()
    finally:
        producer.close()
    return {"sent": dict(sent), "skipped": dict(skipped)}


def to_json_lines(records: Iterable[TopicRecord]) -> Iterator[str]:
    for r in records:
        yield json.dumps(describe(r), sort_keys=True)
