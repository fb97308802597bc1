"""`mmalign publish` and `mmalign deadletter inspect|replay` run as a user runs them, on a real
broker."""

from __future__ import annotations

import collections
import json
import os
import uuid
from functools import partial

import pytest
from kafka import KafkaConsumer, TopicPartition

from mmalign.deadletter.kafka_topic import H
from mmalign.pipelines.publish import DEFAULT_SLICE_MAX_BYTES, DEFAULT_SLICE_S, slice_chunk
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.envelope import decode_chunk, split
from mmalign.schemas.kafka import MODALITY_TOPICS
from mmalign.transforms.decode.stage import decode_file
from tests.cli import run_mmalign

pytestmark = pytest.mark.slow


_mmalign = partial(run_mmalign, timeout=300)


def _read_all(bootstrap: str, topic: str) -> list:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        out = []
        while len(out) < end:
            for msgs in c.poll(timeout_ms=2000).values():
                out.extend(msgs)
        return out
    finally:
        c.close()


@pytest.fixture(scope="module")
def published(kafka_broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("publish")
    manifest = generate_recording(tmp / "rec", seed=3, duration_s=4.0)
    tag = uuid.uuid4().hex[:8]
    topics = {"MMALIGN_KAFKA_DEADLETTER_TOPIC": f"dlq.{tag}",
              **{f"MMALIGN_KAFKA_TOPIC_{m.upper()}": f"{t}.{tag}"
                 for m, t in MODALITY_TOPICS.items()}}
    for t in topics.values():
        kafka_broker.create_topic(t, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMALIGN_KAFKA_")}
    env.update(topics)
    boot = ["--bootstrap-servers", kafka_broker.bootstrap_servers]
    proc = _mmalign("publish", "--manifest", str(manifest), "--json", *boot, env=env)
    return {"tmp": tmp, "manifest": manifest, "env": env, "boot": boot, "proc": proc,
            "tag": tag}


def test_publish_sends_every_decoded_row_in_bounded_slices(kafka_broker, published):
    proc = published["proc"]
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    from mmalign.schemas.manifest import load_manifest
    m = load_manifest(published["manifest"])
    expected = collections.Counter()
    rows = collections.Counter()
    whole_chunks = collections.Counter()
    for s in m.streams:
        for f in s.paths:
            for out in decode_file(s, m.resolve(f, "f"), session_id=m.session):
                if hasattr(out, "num_records") and out.num_records:
                    pieces = slice_chunk(out, round(DEFAULT_SLICE_S * 1e9),
                                         DEFAULT_SLICE_MAX_BYTES)
                    expected[s.modality] += len(pieces)
                    whole_chunks[s.modality] += 1
                    rows[s.id] += out.num_records
    # the 4 s recording's imu file decodes as one chunk: it must travel as several messages
    assert expected["sensor"] > whole_chunks["sensor"]
    got_rows = collections.Counter()
    eos = collections.Counter()
    last_t: dict[str, int] = {}
    for modality, n in expected.items():
        topic = published["env"][f"MMALIGN_KAFKA_TOPIC_{modality.upper()}"]
        assert report["messages"][topic] == n
        records = _read_all(kafka_broker.bootstrap_servers, topic)
        assert len(records) == n
        for r in records:
            assert r.key == m.session.encode()
            chunk = decode_chunk(r.value)
            header, _ = split(r.value)
            assert chunk.modality == modality
            t = chunk.t_ns()
            assert t.max() - t.min() < DEFAULT_SLICE_S * 1e9
            # prev_t_ns carries the file's running maximum across messages
            if header["chunk_seq"] == 0 and chunk.stream_id not in last_t:
                assert chunk.prev_t_ns is None
            else:
                assert chunk.prev_t_ns == last_t[chunk.stream_id]
            last_t[chunk.stream_id] = max(int(t.max()), last_t.get(chunk.stream_id, t.max()))
            got_rows[chunk.stream_id] += chunk.num_records
            eos[chunk.stream_id] += bool(header.get("eos"))
    assert got_rows == rows
    assert eos == collections.Counter({k: 1 for k in rows})
    assert report["decode_dead"] >= 1


def test_slice_chunk_cuts_by_time_and_bytes_and_keeps_order_history():
    import numpy as np
    import pyarrow as pa

    from mmalign.schemas.chunk import Chunk
    t = np.array([0, 400, 900, 1000, 950, 2500, 2600, 5000], np.int64) * 1_000_000
    data = pa.RecordBatch.from_pydict({"t_ns": t, "pos": np.arange(8, dtype=np.int64),
                                       "x": np.ones(8)})
    c = Chunk("s", "imu", "sensor", 3, "f.csv", data, prev_t_ns=-5)
    parts = slice_chunk(c, 1_000_000_000, 10**9)
    assert [p.data.column("pos").to_pylist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6], [7]]
    assert [p.prev_t_ns for p in parts] == [-5, 900_000_000, 1_000_000_000, 2_600_000_000]
    assert all(p.seq == 3 and p.source_uri == "f.csv" for p in parts)
    small = slice_chunk(c, 10**12, data.nbytes // 4)
    assert [p.num_records for p in small] == [2, 2, 2, 2]
    assert slice_chunk(c, 10**12, 10**9) == [c]


def test_deadletter_inspect_lists_decode_letters_with_connect_headers(kafka_broker, published):
    env, boot = published["env"], published["boot"]
    proc = _mmalign("deadletter", "inspect", "--json", *boot, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["records"] == json.loads(published["proc"].stdout)["decode_dead"]
    assert all(k.startswith("decode/") for k in out["by_reason"])
    raw = _read_all(kafka_broker.bootstrap_servers, env["MMALIGN_KAFKA_DEADLETTER_TOPIC"])
    for m in raw:
        h = dict(m.headers)
        assert h[H + "stage"] == b"decode" and h[H + "exception.class.name"]
        assert h[H + "exception.message"] and h["mmalign.session"]
    text = _mmalign("deadletter", "inspect", *boot, env=env)
    assert text.returncode == 0 and f"{out['records']} dead letters" in text.stdout


def test_replay_skips_letters_that_did_not_come_from_a_topic(published):
    proc = _mmalign("deadletter", "replay", "--json", *published["boot"], env=published["env"])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sent"] == {} and sum(out["skipped"].values()) >= 1


def test_bad_settings_exit_2_and_unreachable_broker_exit_1(published, tmp_path):
    bad = _mmalign("deadletter", "inspect", env={**published["env"], "MMALIGN_KAFKA_NOPE": "1"})
    assert bad.returncode == 2 and "MMALIGN_KAFKA_NOPE" in bad.stderr
    down = _mmalign("deadletter", "inspect", "--bootstrap-servers", "127.0.0.1:9",
                    "--timeout", "1", env=published["env"])
    assert down.returncode == 1 and "Kafka" in down.stderr
    assert "Traceback" not in bad.stderr + down.stderr
