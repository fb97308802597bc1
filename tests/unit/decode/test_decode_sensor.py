"""Sensor decoders (CSV, Parquet, JSONL) on real files, the dispatcher, and the Beam shell."""

from __future__ import annotations

import math
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.sensor import (
    decode_sensor_csv,
    decode_sensor_jsonl,
    decode_sensor_parquet,
)
from mmalign.transforms.decode.stage import DecodeStreams, decode_file


def run(gen) -> tuple[pa.Table, list[Chunk], list[DeadLetter]]:
    out = list(gen)
    chunks = [o for o in out if isinstance(o, Chunk)]
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert len(chunks) + len(dead) == len(out)
    table = pa.Table.from_batches([c.data for c in chunks]) if chunks else None
    return table, chunks, dead


CSV = b"""# imu export
t_ns,ax,ay,label
1000,0.5,1.5,a

2000,abc,2.5,b
3000,NaN,3.5,c
4000,inf,,d
5000,1,2
6x00,1,2,e
7000,-1e-3,4,"quoted, label"
"""


def test_csv_bad_row_nan_row_and_field_counts(tmp_path):
    p = tmp_path / "imu.csv"
    p.write_bytes(CSV)
    t, chunks, dead = run(decode_sensor_csv(str(p), session_id="s", stream_id="imu"))
    assert t.schema.names == ["t_ns", "pos", "ax", "ay"]          # label is not numeric
    assert t.column("pos").to_pylist() == [0, 2, 3, 6]
    assert t.column("t_ns").to_pylist() == [1000, 3000, 4000, 7000]
    ax, ay = t.column("ax").to_pylist(), t.column("ay").to_pylist()
    assert ax[0] == 0.5 and math.isnan(ax[1]) and ax[2] == math.inf and ax[3] == -1e-3
    assert ay[:2] == [1.5, 3.5] and math.isnan(ay[2])
    assert [(d.reason, d.position) for d in dead] == [
        ("wrong_field_count", "row=4"), ("non_numeric", "row=1"), ("bad_timestamp", "row=5")]
    assert dead[1].payload == b"2000,abc,2.5,b" and dead[1].payload_format == "csv-row"
    assert dead[0].payload == b"5000,1,2"
    assert "'ax'" in dead[1].message and str(p) in dead[1].message
    assert chunks[0].meta["channels"] == ["ax", "ay"]


def test_csv_unbalanced_quote_does_not_swallow_later_rows(tmp_path):
    p = tmp_path / "q.csv"
    p.write_bytes(b't,x,label\n1,0.5,"a\n2,"7\n3,1.5,c\n')
    t, _, dead = run(decode_sensor_csv(str(p), session_id="s", stream_id="imu"))
    # every line is a row or a dead letter: nothing is merged into a neighbour
    assert sorted(t.column("pos").to_pylist() + [int(d.position[4:]) for d in dead]) == [0, 1, 2]
    assert t.column("t_ns").to_pylist()[-1] == 3 and t.column("x").to_pylist()[-1] == 1.5


def test_csv_10k_rows_chunks_and_prev_t_ns(tmp_path):
    n = 10_000
    t_ns = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000
    x = np.random.default_rng(0).normal(size=n)
    lines = ["t_ns,x"] + [f"{a},{b!r}" for a, b in zip(t_ns.tolist(), x.tolist(), strict=True)]
    lines[5001] = f"{t_ns[5000]},oops"                     # row 5000 is bad
    p = tmp_path / "big.csv"
    p.write_text("\n".join(lines) + "\n")
    t, chunks, dead = run(decode_sensor_csv(str(p), session_id="s", stream_id="imu"))
    assert [c.num_records for c in chunks] == [4096, 4095, 1808]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert chunks[0].prev_t_ns is None
    assert [c.prev_t_ns for c in chunks[1:]] == [int(t_ns[4095]), int(t_ns[8191])]
    keep = np.arange(n) != 5000
    assert t.column("t_ns").to_numpy().tolist() == t_ns[keep].tolist()
    assert t.column("pos").to_numpy().tolist() == np.arange(n)[keep].tolist()
    assert np.array_equal(t.column("x").to_numpy(), x[keep])           # repr round-trips
    assert [(d.reason, d.position) for d in dead] == [("non_numeric", "row=5000")]


def test_csv_euroc_header_seconds_and_options(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("#timestamp [s],w_x [rad s^-1],w_y [rad s^-1]\n"
                 "1403636579.763555584,0.1,0.2\n1403636579.768555584,0.3,0.4\n")
    t, _, dead = run(decode_sensor_csv(str(p), session_id="s", stream_id="imu",
                                       options={"time_unit": "s", "channels": ["w_y [rad s^-1]"]}))
    assert dead == []
    assert t.column("t_ns").to_pylist() == [1403636579763555584, 1403636579768555584]
    assert t.schema.names == ["t_ns", "pos", "w_y [rad s^-1]"]
    for opts, reason in (({"time_column": "when"}, "missing_time_column"),
                         ({"channels": ["nope"]}, "missing_channel")):
        _, chunks, dead = run(decode_sensor_csv(str(p), session_id="s", stream_id="imu",
                                                options=opts))
        assert chunks == [] and [(d.reason, d.position) for d in dead] == [(reason, "file")]


def test_parquet_timestamps_nulls_and_batches(tmp_path):
    n = 5000
    ts = pa.array(np.datetime64("2024-01-01T00:00:00", "us") + np.arange(n) * 1000,
                  pa.timestamp("us", tz="UTC"))
    ts = pa.array([None if i == 10 else v for i, v in enumerate(ts.to_pylist())],
                  pa.timestamp("us", tz="UTC"))
    table = pa.table({"timestamp": ts, "gx": pa.array(np.arange(n), pa.int32()),
                      "gy": pa.array([None if i == 3 else 0.5 for i in range(n)], pa.float64()),
                      "note": pa.array(["x"] * n)})
    p = tmp_path / "gyro.parquet"
    pq.write_table(table, p, row_group_size=1500)
    t, chunks, dead = run(decode_sensor_parquet(str(p), session_id="s", stream_id="gyro",
                                                options={"chunk_rows": 2048}))
    assert t.schema.names == ["t_ns", "pos", "gx", "gy"]
    assert t.num_rows == n - 1 and len(chunks) >= 3
    base = int(np.datetime64("2024-01-01T00:00:00", "ns").astype(np.int64))
    pos = t.column("pos").to_numpy()
    assert np.array_equal(t.column("t_ns").to_numpy(), base + pos * 1_000_000)
    assert 10 not in pos.tolist() and math.isnan(t.column("gy")[3].as_py())
    assert [(d.reason, d.position) for d in dead] == [("bad_timestamp", "row=10")]
    assert [c.prev_t_ns for c in chunks[1:]] == [int(c.t_ns().max()) for c in chunks[:-1]]


def test_parquet_integer_time_with_unit_and_corrupt_file(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"time": [1, 2, 3], "v": [1.0, 2.0, 3.0]}), p)
    t, _, dead = run(decode_sensor_parquet(str(p), session_id="s", stream_id="x",
                                           options={"time_unit": "ms"}))
    assert dead == [] and t.column("t_ns").to_pylist() == [1_000_000, 2_000_000, 3_000_000]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + b"\x00" * 100)
    _, chunks, dead = run(decode_sensor_parquet(str(bad), session_id="s", stream_id="x"))
    assert chunks == [] and [d.reason for d in dead] == ["corrupt_file"]


def test_jsonl_sensor(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"timestamp": 1.000000001, "a": 1, "b": 2.5, "tag": "x"}\n'
                  b'{"timestamp": 2, "a": null, "b": NaN}\n'
                  b'\n'
                  b'{"timestamp": 3, "a": "high", "b": 1}\n'
                  b'{"timestamp": 4, "a": 1, "b": 1\n'
                  b'{"a": 1, "b": 1}\n'
                  b'{"timestamp": 6, "b": 7}\n')
    t, _chunks, dead = run(decode_sensor_jsonl(str(p), session_id="s", stream_id="x",
                                              options={"time_unit": "s"}))
    assert t.schema.names == ["t_ns", "pos", "a", "b"]
    assert t.column("t_ns").to_pylist() == [1_000_000_001, 2 * 10**9, 6 * 10**9]
    assert t.column("pos").to_pylist() == [0, 1, 5]
    a = t.column("a").to_pylist()
    assert a[0] == 1.0 and math.isnan(a[1]) and math.isnan(a[2])
    assert [(d.reason, d.position, d.payload_format) for d in dead] == [
        ("non_numeric", "row=2", "jsonl-row"), ("bad_json", "row=3", "jsonl-row"),
        ("bad_timestamp", "row=4", "jsonl-row")]
    assert dead[0].payload == b'{"timestamp": 3, "a": "high", "b": 1}'


# ---------------------------------------------------------------- dispatch and Beam

def stream(sid: str, modality: str, files: list[str], fmt: str | None = None, **options):
    return Stream(id=sid, modality=modality, files=files, format=fmt, options=options)


def test_decode_file_dispatch_and_file_errors(tmp_path):
    p = tmp_path / "imu.csv"
    p.write_bytes(CSV)
    _, chunks, dead = run(decode_file(stream("imu", "sensor", [str(p)]), p, session_id="s"))
    assert sum(c.num_records for c in chunks) == 4 and len(dead) == 3
    _, chunks, dead = run(decode_file(stream("imu", "sensor", [str(p)], "xlsx"), p,
                                      session_id="s"))
    assert chunks == [] and [d.reason for d in dead] == ["unknown_format"]
    assert "csv" in dead[0].message
    _, chunks, dead = run(decode_file(stream("imu", "sensor", [str(p)], chunk_rows=0), p,
                                      session_id="s"))
    assert chunks == [] and [d.reason for d in dead] == ["bad_options"]
    assert "chunk_rows" in dead[0].message
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nhi\n")
    _, chunks, dead = run(decode_file(stream("sub", "text", [str(srt)]), srt, session_id="s"))
    assert dead == [] and chunks[0].data.column("text").to_pylist() == ["hi"]


def test_decode_streams_on_direct_runner(tmp_path):
    csv_path = tmp_path / "imu.csv"
    csv_path.write_bytes(CSV)
    srt = tmp_path / "a.srt"
    srt.write_bytes(b"1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\nbroken\n")
    weird = tmp_path / "a.xyz"
    weird.write_text("?")
    elements = [("s1", stream("imu", "sensor", [str(csv_path)]), str(csv_path)),
                ("s1", stream("sub", "text", [str(srt)]), str(srt)),
                ("s1", stream("other", "sensor", [str(weird)]), str(weird)),
                ("s1", stream("gone", "sensor", ["x.csv"]), str(tmp_path / "x.csv"))]
    p = beam.Pipeline("DirectRunner")
    out = p | beam.Create(elements) | DecodeStreams(run_id="r1")
    assert_that(out.main | "rows" >> beam.Map(lambda c: (c.stream_id, c.num_records)),
                equal_to([("imu", 4), ("sub", 1)]), label="chunks")
    assert_that(out.dead | "why" >> beam.Map(lambda d: (d.stream_id, d.reason, d.position,
                                                       d.run_id)),
                equal_to([("imu", "wrong_field_count", "row=4", "r1"),
                          ("imu", "non_numeric", "row=1", "r1"),
                          ("imu", "bad_timestamp", "row=5", "r1"),
                          ("sub", "bad_timing", "cue=1", "r1"),
                          ("other", "unknown_format", "file", "r1"),
                          ("gone", "missing_file", "file", "r1")]), label="dead")
    result = p.run()
    result.wait_until_finish()
    counters = {m.key.metric.name: m.committed
                for m in result.metrics().query(MetricsFilter().with_namespace("decode"))[
                    "counters"]}
    assert counters == {"sensor.records": 4, "sensor.dead": 5, "text.records": 1,
                        "text.dead": 1}


def test_directory_instead_of_file(tmp_path):
    folder = Path(tmp_path / "imu.csv")
    folder.mkdir()
    _, chunks, dead = run(decode_file(stream("imu", "sensor", [str(folder)]), folder,
                                      session_id="s"))
    assert chunks == [] and [d.reason for d in dead] == ["not_a_file"]
