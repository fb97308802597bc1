"""Streaming on a real Kafka broker and Beam Prism: batch/stream parity, the dead-letter topic,
a pipeline restart that duplicates nothing."""

from __future__ import annotations

import collections

import pyarrow as pa
import pytest
from kafka import KafkaProducer

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.deadletter.kafka_topic import H, read_topic
from mmalign.pipelines import backfill, stream
from mmalign.pipelines.publish import prepare, publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.envelope import encode
from mmalign.transforms.io.parquet import read_aligned
from tests.e2e_checks import assert_rows_equal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(kafka_broker, fresh_topics, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    manifest = generate_recording(tmp / "rec", seed=5, duration_s=6.0)
    # two absurd sensor times (years 2100 and 2200): implausible letters in both jobs, and the
    # streaming watermark must not jump to them
    imu = tmp / "rec" / "imu.csv"
    lines = imu.read_text().splitlines()
    for row, t in ((300, 4_102_444_800 * 10**9), (600, 7_258_118_400 * 10**9)):
        lines[row] = ",".join([str(t), *lines[row].split(",")[1:]])
    imu.write_text("\n".join(lines) + "\n")
    backfill.run([manifest], tmp / "batch", run_id="batch")
    settings, tag = fresh_topics()
    report = publish(manifest, settings, run_id="publish")

    # poison and too-late messages, after the recording: the too-late one is the first message
    # of the stream whose messages span the most event time (its partition has moved on)
    prep = prepare(manifest, settings)
    spans = collections.defaultdict(list)
    for topic, env, ipc in prep.messages:
        spans[env.stream].append((topic, env, ipc))
    msgs = max(spans.values(), key=lambda m: m[-1][1].t_ns - m[0][1].t_ns)
    topic, env, ipc = msgs[0]
    opts = stream.StreamOptions(group_id=f"g-{tag}", stop_after_idle_s=3.0)
    hold_s = opts.max_out_of_orderness_s + opts.allowed_lateness_s
    assert (msgs[-1][1].t_ns - env.t_ns) / 1e9 > hold_s + 0.5
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    key = prep.session.encode()
    sent = {
        "not_an_envelope": producer.send(topic, key=key, value=b"\x00not a message"),
        "bad_payload": producer.send(topic, key=key,          # on time: the latest envelope
                                     value=encode(msgs[-1][1], b"definitely not arrow")),
        "too_late": producer.send(topic, key=key, value=encode(env, ipc)),
    }
    meta = {k: f.get(timeout=30) for k, f in sent.items()}
    producer.close()

    first = stream.run([manifest], tmp / "stream", settings, opts, run_id="s1")
    dlq_after_first = list(read_topic(settings))
    second = stream.run([manifest], tmp / "stream", settings, opts, run_id="s2")
    return {"tmp": tmp, "settings": settings, "report": report, "meta": meta,
            "first": first, "second": second, "dlq_first": dlq_after_first,
            "dlq": list(read_topic(settings)), "topic": topic, "stream": env.stream}


def _plain(t: pa.Table) -> pa.Table:
    return t.replace_schema_metadata(None)


def test_stream_rows_equal_backfill_rows(run):
    assert_rows_equal(read_aligned(run["tmp"] / "stream" / "aligned"),
                      read_aligned(run["tmp"] / "batch" / "aligned"))


def test_deadletter_topic_holds_exactly_bad_poison_and_late(run):
    batch = read_dead_letters(run["tmp"] / "batch" / "deadletter").to_pylist()
    assert sum(d["reason"] == "implausible_timestamp" for d in batch) == 2
    expected = collections.Counter((d["stage"], d["reason"], d["stream_id"], d["position"])
                                   for d in batch)
    offsets = {k: m.offset for k, m in run["meta"].items()}
    st = run["stream"]
    expected.update({("ingest", "not_an_envelope", None, f"offset={offsets['not_an_envelope']}"),
                     ("ingest", "bad_payload", st, f"offset={offsets['bad_payload']}"),
                     ("ingest", "too_late", st, f"offset={offsets['too_late']}")})
    got = collections.Counter((r.letter.stage, r.letter.reason, r.letter.stream_id,
                               r.letter.position) for r in run["dlq"])
    assert len(batch) >= 3
    assert got == expected


def test_deadletter_headers_name_the_original_record(run):
    by_pos = {r.letter.position: r.letter for r in run["dlq"] if r.letter.stage == "ingest"}
    for reason, meta in run["meta"].items():
        d = by_pos[f"offset={meta.offset}"]
        assert d.reason == reason
        assert d.attrs["kafka.topic"] == run["topic"]
        assert d.attrs["kafka.partition"] == str(meta.partition)
        assert d.attrs["kafka.offset"] == str(meta.offset)
        assert d.attrs["kafka.key"] == "demo-001"
        assert d.payload_format == "kafka-value" and d.payload
    # validate-stage letters point at the chunk's message and carry the row copy
    rows = [r.letter for r in run["dlq"] if r.letter.stage == "validate"]
    assert rows and all(d.attrs["kafka.topic"] in run["settings"].topics.values() for d in rows)
    assert all(d.payload and d.payload.startswith(b"{") for d in rows)


def test_headers_follow_kafka_connect_names(kafka_broker, run):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=None,
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)
    tp = TopicPartition(run["settings"].deadletter_topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    late = None
    for m in c:
        h = dict(m.headers)
        if h.get("mmalign.reason") == b"too_late":
            late = m
            break
    c.close()
    assert late is not None
    h = dict(late.headers)
    for name in ("topic", "partition", "offset", "stage", "exception.class.name",
                 "exception.message"):
        assert H + name in h, name
    assert h[H + "stage"] == b"ingest" and h[H + "exception.class.name"] == b"LateRecord"
    assert late.key == b"demo-001"
    assert late.timestamp == run["meta"]["too_late"].timestamp


def test_restart_reads_from_committed_offsets_and_duplicates_nothing(run):
    first, second = run["first"], run["second"]
    assert first["committed"] and second["started_at"] == first["committed"]
    assert second["committed"] == first["committed"]
    assert len(run["dlq"]) == len(run["dlq_first"])
    streamed = read_aligned(run["tmp"] / "stream" / "aligned")
    ticks = streamed.column("tick_ns").to_pylist()
    assert len(ticks) == len(set(ticks))
