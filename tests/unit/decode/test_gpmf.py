"""GPMF decoder on MP4s made here: KLV payloads written by hand (DEVC/STRM with STNM, SIUN,
SCAL, TSMP, ORIN, GYRO/ACCL/GPS5), muxed by the ffmpeg CLI as a ``gpmd`` data track next to an
H.264 video, then read by the decoder and cross-checked against gpmf-parser (py-gpmf-parser,
an independent C reader) and the ground truth the payloads were made from."""

from __future__ import annotations

import fractions
import shutil
import struct
import subprocess
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.gpmf import (
    decode_gpmf,
    fit_rate,
    read_gpmd_track,
    span_gpmf,
)
from mmalign.transforms.decode.segments import segment_span
from mmalign.transforms.decode.stage import decode_file

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

PAYLOAD_S = 1.001                  # a GoPro payload every 1.001 s
TICKS = 90090                      # ... in the 90 kHz track timescale
GYRO_HZ = 200.0 * (1 + 37e-6)      # the IMU clock runs 37 ppm fast of the nominal 200 Hz
GYRO_T0 = 0.0123                   # true time of the first gyro sample
GYRO_SCALE = 939
ACCL_SCALE = 418


# ---------------------------------------------------------------- a GPMF writer

def klv(key: str, typ: str, size: int, repeat: int, data: bytes) -> bytes:
    assert len(data) == size * repeat
    head = key.encode() + bytes([ord(typ) if typ else 0, size]) + struct.pack(">H", repeat)
    return head + data + b"\0" * (-len(data) % 4)


def nest(key: str, *children: bytes) -> bytes:
    body = b"".join(children)
    return klv(key, "", 4, len(body) // 4, body)


def text(key: str, s: str) -> bytes:
    return klv(key, "c", 1, len(s), s.encode())


def gyro_truth(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(true times s, raw int16 samples (n, 3)) of the first n gyro samples."""
    k = np.arange(n)
    t = GYRO_T0 + k / GYRO_HZ
    raw = np.column_stack([np.round(3000 * np.sin(2 * np.pi * f * t)) for f in (0.5, 1.3, 2.1)])
    return t, raw.astype(np.int16)


def make_payloads(n_payloads: int, *, gps: bool = False) -> tuple[list[bytes], dict]:
    """GYRO (200 Hz, jittered payload sizes: a payload holds the samples whose true time falls
    in it) and ACCL in payloads 0..n-1, a last payload without GYRO (so every GYRO payload has
    a duration in the MP4); GPS5 at 18 Hz with five SCAL divisors when ``gps``."""
    t_all, raw_all = gyro_truth(int((n_payloads + 1) * PAYLOAD_S * GYRO_HZ) + 10)
    payloads, counts, total = [], [], 0
    acc_total = 0
    for i in range(n_payloads + 1):
        strms = []
        if i < n_payloads:
            lo = int(np.searchsorted(t_all, i * PAYLOAD_S))
            hi = int(np.searchsorted(t_all, (i + 1) * PAYLOAD_S))
            raw = raw_all[lo:hi]
            total += len(raw)
            counts.append(len(raw))
            strms.append(nest("STRM", text("STNM", "Gyroscope"), text("SIUN", "rad/s"),
                              klv("SCAL", "s", 2, 1, struct.pack(">h", GYRO_SCALE)),
                              klv("TSMP", "L", 4, 1, struct.pack(">I", total)),
                              klv("ORIN", "c", 3, 1, b"ZXY"),
                              klv("GYRO", "s", 6, len(raw), raw.astype(">i2").tobytes())))
        acc = (np.arange(30 * 3).reshape(30, 3) + 7 * i).astype(">i2")
        acc_total += 30
        strms.append(nest("STRM", text("STNM", "Accelerometer"), text("SIUN", "m/s2"),
                          klv("SCAL", "s", 2, 1, struct.pack(">h", ACCL_SCALE)),
                          klv("TSMP", "L", 4, 1, struct.pack(">I", acc_total)),
                          klv("ACCL", "s", 6, 30, acc.tobytes())))
        if gps:
            g = np.array([[int(37.5e7) + j, int(-122.2e7) - j, 12345 + j, 1000, 1100]
                          for j in range(18)], ">i4")
            strms.append(nest("STRM", text("STNM", "GPS (Lat., Long., Alt., 2D, 3D speed)"),
                              klv("SCAL", "l", 4, 5, np.array([1e7, 1e7, 1000, 1000, 100],
                                                              ">i4").tobytes()),
                              klv("GPS5", "l", 20, 18, g.tobytes())))
        payloads.append(nest("DEVC", klv("DVID", "L", 4, 1, struct.pack(">I", 1)),
                             text("DVNM", "HERO-test"), *strms))
    return payloads, {"counts": counts, "total": total}


def write_gopro_mp4(path: Path, payloads: list[bytes]) -> Path:
    """An H.264 video + the payloads as a ``gpmd`` track (handler "GoPro MET"), muxed by the
    ffmpeg CLI from an MPEG-TS data stream that PyAV writes with the payload times."""
    ts = path.with_suffix(".ts")
    with av.open(str(ts), "w") as c:
        s = c.add_data_stream(codec_name="bin_data")
        s.time_base = fractions.Fraction(1, 90000)
        for i, body in enumerate(payloads):
            p = av.Packet(body)
            p.stream = s
            p.pts = p.dts = i * TICKS
            p.duration = TICKS
            p.time_base = fractions.Fraction(1, 90000)
            c.mux(p)
    frames = int(len(payloads) * PAYLOAD_S * 30)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc=size=64x48:rate=30", "-i", str(ts),
                    "-map", "0:v", "-map", "1:d", "-frames:v", str(frames),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:d", "copy", "-tag:d", "gpmd",
                    str(path)], check=True)
    ts.unlink()
    return path


@pytest.fixture(scope="module")
def gopro(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpmf")
    payloads, info = make_payloads(6, gps=True)
    return write_gopro_mp4(tmp / "GX010001.MP4", payloads), info


def run(gen):
    out = list(gen)
    chunks = [o for o in out if isinstance(o, Chunk)]
    dead = [o for o in out if isinstance(o, DeadLetter)]
    table = pa.Table.from_batches([c.data for c in chunks]) if chunks else None
    return table, chunks, dead


def gpmf_parser_reference(path: Path, fourcc: str):
    """gpmf-parser's own reading: (rate, first sample time, scaled values)."""
    pgfp = pytest.importorskip("py_gpmf_parser")
    h = pgfp.OpenMP4Source(str(path), pgfp.MOV_GPMF_TRAK_TYPE, pgfp.MOV_GPMF_TRAK_SUBTYPE, 0)
    try:
        rate, first, _ = pgfp.GetGPMFSampleRate(h, pgfp.Str2FourCC(fourcc), 0)
    finally:
        pgfp.CloseSource(h)
    ex = pgfp.GoProTelemetryExtractor(str(path))
    ex.open_source()
    try:
        values, _ = ex.extract_data(fourcc)        # its times spread payloads evenly: unused
    finally:
        ex.close_source()
    return rate, first, values


# ---------------------------------------------------------------- tests

def test_the_file_is_a_gopro_style_mp4(gopro):
    path, _ = gopro
    with av.open(str(path)) as c:
        data = [s for s in c.streams if s.type == "data"]
        assert len(c.streams.video) == 1 and len(data) == 1
        assert data[0].metadata.get("handler_name") == "GoPro MET"
    track = read_gpmd_track(str(path))
    assert len(track.offsets) == 7 and track.timescale == 90000
    assert np.allclose(track.t_in[:6], np.arange(6) * PAYLOAD_S)
    assert np.allclose(track.t_out[:6], np.arange(1, 7) * PAYLOAD_S)


def test_gyro_matches_gpmf_parser_and_the_truth(gopro):
    path, info = gopro
    table, chunks, dead = run(decode_gpmf(str(path), session_id="s", stream_id="gyro"))
    assert dead == []
    assert table.num_rows == info["total"] == sum(info["counts"])
    assert table.column_names == ["t_ns", "pos", "z", "x", "y"]       # ORIN "ZXY"
    assert table.column("pos").to_pylist() == list(range(info["total"]))
    t = table.column("t_ns").to_numpy()
    vals = np.column_stack([table.column(c).to_numpy() for c in ("z", "x", "y")])

    # gpmf-parser: the same line of best fit and the same scaled values
    rate, first, ref_vals = gpmf_parser_reference(path, "GYRO")
    assert chunks[0].meta["sample_rate_hz"] == pytest.approx(rate, rel=1e-12)
    assert chunks[0].meta["first_sample_s"] == pytest.approx(first, abs=1e-9)
    want_t = first + np.arange(info["total"]) / rate
    assert np.abs(t - want_t * 1e9).max() < 2           # ns: double rounding only
    assert np.array_equal(vals, ref_vals)

    # the truth the payloads were made from: values are raw / SCAL; times follow the sample
    # clock as a line (the error is one constant within a sample period: the fit's known
    # half-sample quantization, count after a payload ~ rate * t + 1/2, plus the phase of the
    # first sample), where spreading each payload evenly over its duration jitters by ms
    t_true, raw = gyro_truth(info["total"])
    assert np.array_equal(vals, raw / GYRO_SCALE)
    err = t / 1e9 - t_true
    assert np.abs(err).max() < 1 / 200 and err.std() < 3e-4
    even = np.concatenate([i * PAYLOAD_S + np.arange(n) * PAYLOAD_S / n
                           for i, n in enumerate(info["counts"])])
    assert (even - t_true).std() > 1e-3 and np.abs(even - t_true).max() > 1e-2


def test_accl_and_gps5_streams_and_channel_choice(gopro):
    path, _ = gopro
    table, _, dead = run(decode_gpmf(str(path), session_id="s", stream_id="a",
                                     options={"gpmf_stream": "ACCL", "channels": ["y", "x"]}))
    assert dead == [] and table.column_names == ["t_ns", "pos", "y", "x"]
    assert table.num_rows == 7 * 30
    _, _, ref = gpmf_parser_reference(path, "ACCL")
    assert np.array_equal(table.column("x").to_numpy(), ref[:, 0])
    assert np.array_equal(table.column("y").to_numpy(), ref[:, 1])
    gps, _, dead = run(decode_gpmf(str(path), session_id="s", stream_id="gps",
                                   options={"gpmf_stream": "GPS5"}))
    assert dead == []
    assert gps.column_names == ["t_ns", "pos", "lat", "lon", "alt", "speed_2d", "speed_3d"]
    assert gps.column("lat")[1].as_py() == pytest.approx(37.5 + 1e-7)
    assert gps.column("alt")[0].as_py() == pytest.approx(12.345)
    _, _, ref = gpmf_parser_reference(path, "GPS5")
    got = np.column_stack([gps.column(c).to_numpy() for c in gps.column_names[2:]])
    assert np.allclose(got, ref, rtol=0, atol=1e-12)


def test_dispatch_probe_and_time_offset(gopro):
    path, info = gopro
    stream = Stream(id="gyro", modality="sensor", files=[str(path)], format="gpmf")
    table, _, dead = run(decode_file(stream, path, session_id="s", time_offset_ns=5 * 10**9))
    assert dead == [] and table.num_rows == info["total"]
    plain, _, _ = run(decode_gpmf(str(path), session_id="s", stream_id="g"))
    assert (table.column("t_ns").to_numpy() - plain.column("t_ns").to_numpy() == 5 * 10**9).all()
    # a sensor stream's .mp4 is GPMF without a format
    stream2 = Stream(id="gyro", modality="sensor", files=[str(path)])
    assert run(decode_file(stream2, path, session_id="s"))[0].num_rows == info["total"]
    span = segment_span(stream, path)
    t = plain.column("t_ns").to_numpy()
    assert span == span_gpmf(str(path)) and span[0] == t[0]
    assert span[1] == t[-1] + int(np.median(np.diff(t)))


def test_no_track_and_missing_stream_are_file_letters(gopro, tmp_path):
    plain = tmp_path / "plain.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=10", "-frames:v", "5", str(plain)], check=True)
    _, _, dead = run(decode_gpmf(str(plain), session_id="s", stream_id="g"))
    assert [d.reason for d in dead] == ["no_gpmf_track"] and dead[0].position == "file"
    path, _ = gopro
    _, chunks, dead = run(decode_gpmf(str(path), session_id="s", stream_id="g",
                                      options={"gpmf_stream": "MAGN"}))
    assert chunks == [] and [d.reason for d in dead] == ["missing_gpmf_stream"]
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0\0\0\x10ftypisom" + b"x" * 100)
    _, _, dead = run(decode_gpmf(str(junk), session_id="s", stream_id="g"))
    assert [d.reason for d in dead] == ["corrupt_file"]
    _, _, dead = run(decode_gpmf(str(tmp_path / "nope.mp4"), session_id="s", stream_id="g"))
    assert [d.reason for d in dead] == ["missing_file"]


def test_a_corrupt_payload_is_a_letter_and_later_samples_keep_their_times(gopro, tmp_path):
    path, info = gopro
    bad = tmp_path / "bad.mp4"
    data = bytearray(path.read_bytes())
    track = read_gpmd_track(str(path))
    off = int(track.offsets[2])
    data[off:off + 4] = b"\x01\x02\x03\x04"           # payload 2's DEVC key
    bad.write_bytes(bytes(data))
    table, _, dead = run(decode_gpmf(str(bad), session_id="s", stream_id="g"))
    good, _, _ = run(decode_gpmf(str(path), session_id="s", stream_id="g"))
    reasons = [d.reason for d in dead]
    assert reasons == ["corrupt_payload", "truncated"]
    assert dead[0].position == "payload=2"
    # accounting: rows + letters' records = the samples the file's TSMP declares
    assert table.num_rows + sum(d.records for d in dead) == info["total"]
    assert dead[1].records == info["counts"][2] - 1
    # TSMP places the samples after the gap: same positions and (nearly) the same times
    lost = set(range(sum(info["counts"][:2]), sum(info["counts"][:3])))
    keep = [p not in lost for p in good.column("pos").to_pylist()]
    assert table.column("pos").to_pylist() == good.filter(pa.array(keep)).column(
        "pos").to_pylist()
    dt = table.column("t_ns").to_numpy() - good.filter(pa.array(keep)).column("t_ns").to_numpy()
    assert np.abs(dt).max() < 1e6


def test_fit_rate_is_the_least_squares_line():
    t_out = np.array([1.0, 2.0, 3.0, 4.0])
    cum = np.array([199, 401, 600, 799])
    rate, intercept = fit_rate(cum, t_out)
    slope, icpt = np.polyfit(t_out, cum, 1)
    assert rate == pytest.approx(slope) and intercept == pytest.approx(icpt)
