"""MCAP and ROS bag decoders on recordings written here with the same libraries a robot's
recorder uses (mcap + mcap-ros2-support, rosbags' ROS 1 and ROS 2 writers), cross-checked
against independent readers: mcap-ros2-support's own CDR decoder, the ROS 2 bag's SQLite rows
decoded by it, and a ROS 1 bag parsed here record by record."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from rosbags.typesys import Stores, get_typestore

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.mcap import decode_mcap, span_mcap
from mmalign.transforms.decode.rosbag import decode_rosbag
from mmalign.transforms.decode.segments import segment_span
from mmalign.transforms.decode.stage import decode_file

mcap_ros2 = pytest.importorskip("mcap_ros2")
from mcap_ros2._dynamic import generate_dynamic  # noqa: E402
from mcap_ros2.reader import read_ros2_messages  # noqa: E402
from mcap_ros2.writer import Writer as McapRos2Writer  # noqa: E402

TS = get_typestore(Stores.ROS2_HUMBLE)
IMU = "sensor_msgs/msg/Imu"
T0 = 1_700_000_000_123_456_789
N_IMU = 50
IMU_CHANNELS = ["orientation_x", "orientation_y", "orientation_z", "orientation_w",
                "angular_velocity_x", "angular_velocity_y", "angular_velocity_z",
                "linear_acceleration_x", "linear_acceleration_y", "linear_acceleration_z"]


def imu_msg(k: int) -> dict:
    """Sample k of a 100 Hz IMU whose stamps lag its log times by 3 ms."""
    t = T0 + k * 10_000_000
    return {"header": {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "imu"},
            "orientation": {"x": 0.0, "y": 0.0, "z": np.sin(k / 10), "w": np.cos(k / 10)},
            "orientation_covariance": [0.01 * k] * 9,
            "angular_velocity": {"x": 0.1 * k, "y": -0.2 * k, "z": 0.5},
            "angular_velocity_covariance": [0.0] * 9,
            "linear_acceleration": {"x": 0.0, "y": 0.1, "z": 9.81 + k / 1000},
            "linear_acceleration_covariance": [0.0] * 9}


def imu_truth(k: int) -> tuple[int, list[float]]:
    m = imu_msg(k)
    o, a, la = m["orientation"], m["angular_velocity"], m["linear_acceleration"]
    return T0 + k * 10_000_000, [o["x"], o["y"], o["z"], o["w"], a["x"], a["y"], a["z"],
                                 la["x"], la["y"], la["z"]]


def to_ros(msgtype: str, d, store=TS):
    """A plain dict -> the rosbags message object of ``msgtype`` (fields the dict lacks, such
    as a ROS 1 header's seq, are 0)."""
    cls = store.types[msgtype]
    kw = {}
    for name, spec in store.fielddefs[msgtype][1]:
        v = d.get(name, 0)
        if isinstance(v, dict):
            sub = spec[1] if isinstance(spec[1], str) else spec[1][0]
            kw[name] = to_ros(sub, v, store)
        elif isinstance(v, list | bytes):
            kw[name] = np.array(list(v), np.float64 if name.endswith("covariance") else np.uint8)
        else:
            kw[name] = v
    return cls(**kw)


RGB = np.dstack([np.full((24, 32), v, np.uint8) for v in (10, 120, 250)])
RGB[5:10, 3:20] = (200, 30, 60)


def image_msgs(k: int) -> tuple[dict, dict, bytes]:
    t = T0 + k * 33_333_333
    stamp = {"sec": t // 10**9, "nanosec": t % 10**9}
    rgb = np.roll(RGB, k, axis=1)
    raw = {"header": {"stamp": stamp, "frame_id": "cam"}, "height": 24, "width": 32,
           "encoding": "rgb8", "is_bigendian": 0, "step": 32 * 3, "data": rgb.tobytes()}
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    comp = {"header": {"stamp": stamp, "frame_id": "cam"}, "format": "jpeg",
            "data": jpg.tobytes()}
    return raw, comp, jpg.tobytes()


@pytest.fixture(scope="module")
def mcap_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mcap") / "run.mcap"
    with open(path, "wb") as f:
        w = McapRos2Writer(f)
        schemas = {t: w.register_msgdef(t, TS.generate_msgdef(t, ros_version=2)[0])
                   for t in (IMU, "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
                             "std_msgs/msg/Float64")}
        for k in range(N_IMU):
            log = T0 + k * 10_000_000 + 3_000_000
            w.write_message("/imu", schemas[IMU], imu_msg(k), log_time=log, publish_time=log)
            w.write_message("/depth", schemas["std_msgs/msg/Float64"], {"data": 1.5 * k},
                            log_time=log, publish_time=log)
        for k in range(6):
            raw, comp, _ = image_msgs(k)
            log = T0 + k * 33_333_333 + 1_000_000
            w.write_message("/cam/image_raw", schemas["sensor_msgs/msg/Image"], raw,
                            log_time=log, publish_time=log)
            w.write_message("/cam/compressed", schemas["sensor_msgs/msg/CompressedImage"],
                            comp, log_time=log, publish_time=log)
        w.finish()
    return path


def run(gen):
    out = list(gen)
    chunks = [o for o in out if isinstance(o, Chunk)]
    dead = [o for o in out if isinstance(o, DeadLetter)]
    table = pa.Table.from_batches([c.data for c in chunks]) if chunks else None
    return table, chunks, dead


def sensor(path, topic, **opts):
    return run(decode_mcap(str(path), session_id="s", stream_id="imu", modality="sensor",
                           options={"topic": topic, **opts}))


# ---------------------------------------------------------------- MCAP

def test_mcap_imu_matches_the_independent_reader_and_the_truth(mcap_file):
    table, chunks, dead = sensor(mcap_file, "/imu", chunk_rows=16)
    assert dead == [] and len(chunks) == 4
    assert table.column_names == ["t_ns", "pos", *IMU_CHANNELS]
    assert chunks[0].meta["time_source"] == "header.stamp"
    assert chunks[0].meta["msgtype"] == IMU
    # mcap-ros2-support decodes the CDR itself (no rosbags): the same stamps and values
    ref = list(read_ros2_messages(str(mcap_file), topics=["/imu"]))
    assert len(ref) == table.num_rows == N_IMU
    for k, (m, row) in enumerate(zip(ref, table.to_pylist())):
        msg = m.ros_msg
        assert row["t_ns"] == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert row["pos"] == k
        assert row["angular_velocity_y"] == msg.angular_velocity.y
        assert row["linear_acceleration_z"] == msg.linear_acceleration.z
        assert row["orientation_w"] == msg.orientation.w
        t, vals = imu_truth(k)
        assert row["t_ns"] == t and [row[c] for c in IMU_CHANNELS] == vals


def test_mcap_channels_covariances_headerless_topics_and_offsets(mcap_file):
    table, _, dead = sensor(mcap_file, "/imu", channels=["orientation_covariance_4",
                                                         "angular_velocity_x"])
    assert dead == [] and table.column_names == ["t_ns", "pos", "orientation_covariance_4",
                                                 "angular_velocity_x"]
    assert table.column("orientation_covariance_4").to_pylist()[3] == pytest.approx(0.03)
    depth, chunks, dead = sensor(mcap_file, "/depth")
    assert dead == [] and depth.column_names == ["t_ns", "pos", "data"]
    assert chunks[0].meta["time_source"] == "log_time"          # std_msgs/Float64: no header
    assert depth.column("t_ns").to_pylist()[:2] == [T0 + 3_000_000, T0 + 13_000_000]
    shifted, _, _ = run(decode_mcap(str(mcap_file), session_id="s", stream_id="i",
                                    options={"topic": "/imu"}, time_offset_ns=-T0))
    assert shifted.column("t_ns").to_pylist()[:2] == [0, 10_000_000]


def test_mcap_images_as_an_image_sequence(mcap_file):
    stream = Stream(id="cam", modality="video", files=[str(mcap_file)],
                    options={"topic": "/cam/image_raw"})
    table, chunks, dead = run(decode_file(stream, mcap_file, session_id="s"))
    assert dead == [] and table.num_rows == 6
    assert table.column("width").to_pylist() == [32] * 6
    assert table.column("file").null_count == 6 and table.column("pts").null_count == 6
    for k, row in enumerate(table.to_pylist()):
        raw, _, _ = image_msgs(k)
        t = raw["header"]["stamp"]
        assert row["t_ns"] == t["sec"] * 10**9 + t["nanosec"]
        png = cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), np.roll(RGB, k, axis=1))
    stream = Stream(id="cam", modality="video", files=[str(mcap_file)],
                    options={"topic": "/cam/compressed"})
    table, _, dead = run(decode_file(stream, mcap_file, session_id="s"))
    assert dead == []
    assert table.column("image").to_pylist() == [image_msgs(k)[2] for k in range(6)]
    assert table.column("height").to_pylist() == [24] * 6


def test_mcap_file_letters(mcap_file, tmp_path):
    _, _, dead = sensor(mcap_file, "/nope")
    assert [d.reason for d in dead] == ["missing_topic"] and "/imu" in dead[0].message
    _, _, dead = run(decode_mcap(str(mcap_file), session_id="s", stream_id="i"))
    assert [d.reason for d in dead] == ["missing_topic"] and "options.topic" in dead[0].message
    _, _, dead = sensor(mcap_file, "/cam/image_raw")
    assert [d.reason for d in dead] == ["unsupported_message"]
    _, _, dead = run(decode_mcap(str(mcap_file), session_id="s", stream_id="c",
                                 modality="video", options={"topic": "/imu"}))
    assert [d.reason for d in dead] == ["unsupported_message"]
    _, _, dead = sensor(mcap_file, "/imu", channels=["nope"])
    assert [d.reason for d in dead] == ["missing_channel"]
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + b"\0" * 40)
    _, _, dead = sensor(junk, "/imu")
    assert [d.reason for d in dead] == ["corrupt_file"]


def test_mcap_bad_message_is_a_record_letter_and_the_count_balances(tmp_path):
    path = tmp_path / "bad.mcap"
    from mcap.writer import Writer
    with open(path, "wb") as f:
        w = Writer(f)
        w.start(profile="ros2", library="test")
        sid = w.register_schema(IMU, "ros2msg", TS.generate_msgdef(IMU, ros_version=2)[0]
                                .encode())
        cid = w.register_channel("/imu", "cdr", sid)
        for k in range(5):
            data = TS.serialize_cdr(to_ros(IMU, imu_msg(k)), IMU)
            if k == 2:
                data = data[:20]                          # cut: not a whole Imu
            w.add_message(cid, log_time=T0 + k, data=bytes(data), publish_time=T0 + k)
        w.finish()
    table, _, dead = sensor(path, "/imu")
    assert table.num_rows == 4 and [d.reason for d in dead] == ["bad_message"]
    assert dead[0].position == "msg=2" and dead[0].payload and dead[0].records == 1
    assert table.column("pos").to_pylist() == [0, 1, 3, 4]


def test_mcap_probe(mcap_file):
    stream = Stream(id="imu", modality="sensor", files=[str(mcap_file)],
                    options={"topic": "/imu"})
    span = segment_span(stream, mcap_file)
    assert span == span_mcap(str(mcap_file), "sensor", {"topic": "/imu"})
    assert span == (T0, T0 + (N_IMU - 1) * 10_000_000 + 10_000_000)


# ---------------------------------------------------------------- ROS 2 bag (sqlite3)

def write_ros2_bag(folder: Path) -> Path:
    from rosbags.rosbag2 import Writer
    with Writer(folder, version=9) as w:
        imu = w.add_connection("/imu", IMU, typestore=TS)
        cam = w.add_connection("/cam", "sensor_msgs/msg/CompressedImage", typestore=TS)
        for k in range(N_IMU):
            w.write(imu, T0 + k * 10_000_000 + 3_000_000,
                    TS.serialize_cdr(to_ros(IMU, imu_msg(k)), IMU))
        for k in range(3):
            _, comp, _ = image_msgs(k)
            w.write(cam, T0 + k * 33_333_333,
                    TS.serialize_cdr(to_ros("sensor_msgs/msg/CompressedImage", comp),
                                     "sensor_msgs/msg/CompressedImage"))
    return folder


def test_ros2_bag_matches_its_sqlite_rows(tmp_path):
    folder = write_ros2_bag(tmp_path / "bag2")
    db3 = next(folder.glob("*.db3"))
    for path in (folder / "metadata.yaml", db3):
        stream = Stream(id="imu", modality="sensor", files=[str(path)], format="rosbag",
                        options={"topic": "/imu"})
        table, _, dead = run(decode_file(stream, path, session_id="s"))
        assert dead == [] and table.num_rows == N_IMU
        assert table.column_names == ["t_ns", "pos", *IMU_CHANNELS]
    # independent: the .db3's rows, decoded by mcap-ros2-support's CDR decoder
    decoders = generate_dynamic(IMU, TS.generate_msgdef(IMU, ros_version=2)[0])
    with sqlite3.connect(db3) as db:
        rows = db.execute("SELECT m.data FROM messages m JOIN topics t ON m.topic_id = t.id "
                          "WHERE t.name = '/imu' ORDER BY m.timestamp").fetchall()
    ref = [decoders[IMU](bytes(r[0])) for r in rows]
    assert len(ref) == N_IMU
    for row, msg in zip(table.to_pylist(), ref):
        assert row["t_ns"] == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert row["angular_velocity_x"] == msg.angular_velocity.x
        assert row["orientation_z"] == msg.orientation.z
    cam = Stream(id="cam", modality="video", files=[str(db3)], format="db3",
                 options={"topic": "/cam"})
    table, _, dead = run(decode_file(cam, db3, session_id="s"))
    assert dead == [] and table.column("image").to_pylist() == [image_msgs(k)[2]
                                                                for k in range(3)]


def test_ros2_bag_storage_outside_the_roots_is_not_read(tmp_path):
    folder = write_ros2_bag(tmp_path / "bag2")
    meta = folder / "metadata.yaml"
    db3 = next(folder.glob("*.db3"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    db3.rename(outside / db3.name)
    meta.write_text(meta.read_text().replace(db3.name, f"../elsewhere/{db3.name}"))
    _, _, dead = run(decode_rosbag(str(meta), session_id="s", stream_id="i",
                                   options={"topic": "/imu"}, roots=(str(folder),)))
    assert [d.reason for d in dead] == ["path_outside_roots"]


# ---------------------------------------------------------------- ROS 1 bag

def read_bag1(path: Path, topic: str) -> list[bytes]:
    """A ROS 1 bag (format 2.0, uncompressed chunks) parsed here: the raw messages of
    ``topic`` in file order."""
    buf = path.read_bytes()
    assert buf.startswith(b"#ROSBAG V2.0\n")

    def records(data: bytes, at: int):
        while at < len(data):
            hlen = struct.unpack_from("<I", data, at)[0]
            fields, p = {}, at + 4
            while p < at + 4 + hlen:
                flen = struct.unpack_from("<I", data, p)[0]
                name, _, value = data[p + 4:p + 4 + flen].partition(b"=")
                fields[name.decode()] = value
                p += 4 + flen
            dlen = struct.unpack_from("<I", data, p)[0]
            yield fields, data[p + 4:p + 4 + dlen]
            at = p + 4 + dlen

    conns, out = {}, []
    for fields, data in records(buf, 13):
        if fields["op"] == b"\x05":                       # chunk
            assert fields["compression"] == b"none"
            for f2, d2 in records(data, 0):
                if f2["op"] == b"\x07":                   # connection
                    conns[f2["conn"]] = f2["topic"].decode()
                elif f2["op"] == b"\x02" and conns.get(f2["conn"]) == topic:
                    out.append(d2)
    return out


def test_ros1_bag_matches_a_record_by_record_parse(tmp_path):
    from rosbags.rosbag1 import Writer
    ts1 = get_typestore(Stores.ROS1_NOETIC)             # ROS 1 types: the header has a seq
    path = tmp_path / "run.bag"
    with Writer(path) as w:
        conn = w.add_connection("/imu", IMU, typestore=ts1)
        for k in range(N_IMU):
            w.write(conn, T0 + k * 10_000_000 + 3_000_000,
                    ts1.serialize_ros1(to_ros(IMU, imu_msg(k), ts1), IMU))
    stream = Stream(id="imu", modality="sensor", files=[str(path)], options={"topic": "/imu"})
    table, _, dead = run(decode_file(stream, path, session_id="s"))
    assert dead == [] and table.num_rows == N_IMU
    raw = read_bag1(path, "/imu")
    assert len(raw) == N_IMU
    for row, data in zip(table.to_pylist(), raw):
        # ROS 1 Imu: Header (seq u32, stamp secs u32 nsecs u32, frame_id string), then
        # orientation 4 x f64, 9 x f64, angular_velocity 3 x f64, 9 x f64, linear_acc 3 x f64
        _, secs, nsecs, flen = struct.unpack_from("<IIII", data, 0)
        at = 16 + flen
        q = struct.unpack_from("<4d", data, at)
        w_ = struct.unpack_from("<3d", data, at + 32 + 72)
        a = struct.unpack_from("<3d", data, at + 32 + 72 + 24 + 72)
        assert row["t_ns"] == secs * 10**9 + nsecs
        assert [row[c] for c in IMU_CHANNELS] == [*q, *w_, *a]
    _, _, dead = run(decode_rosbag(str(path), session_id="s", stream_id="i",
                                   options={"topic": "/none"}))
    assert [d.reason for d in dead] == ["missing_topic"]
