"""No record is lost silently: every decoder, on good and damaged files made at test time.

For each file with a count the format declares, the test counts it itself (its own line and
cue-block counting, Python's ``wave`` for WAV headers, the number of frames/samples it wrote)
and checks: rows yielded + the records of the file's dead letters == that count. Times that do
not fit int64 nanoseconds are one record's ``timestamp_overflow`` letter, never the file's.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import wave
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from apache_beam.metrics.metric import MetricsFilter

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode import sensor as sensor_mod
from mmalign.transforms.decode.audio import decode_audio_file
from mmalign.transforms.decode.base import INT64_MAX, checked_ns, parse_time_ns
from mmalign.transforms.decode.sensor import (
    decode_sensor_csv,
    decode_sensor_jsonl,
    decode_sensor_parquet,
)
from mmalign.transforms.decode.stage import DecodeStreams, decode_file
from mmalign.transforms.decode.text import decode_srt, decode_text_jsonl, decode_vtt
from mmalign.transforms.decode.video import decode_image_sequence, decode_video_container
from tests.media import ffmpeg_testsrc, png_bytes, sox_tone, write_srt

S = 1_000_000_000
YEAR_2500_NS = 16_725_225_600 * S          # 2500-01-01T00:00:00Z: 1.67e19 > int64
YEAR_2200_NS = 7_258_118_400 * S           # 2200-01-01: representable, so decoded


# ---------------------------------------------------------------- helpers (independent counts)

def run(gen) -> tuple[list[Chunk], list[DeadLetter]]:
    out = list(gen)
    assert all(isinstance(o, (Chunk, DeadLetter)) for o in out)
    return ([o for o in out if isinstance(o, Chunk)], [o for o in out if isinstance(o, DeadLetter)])


def accounted(chunks: list[Chunk], dead: list[DeadLetter]) -> int:
    return sum(c.num_records for c in chunks) + sum(d.records for d in dead)


def assert_accounted(gen, declared: int) -> tuple[list[Chunk], list[DeadLetter]]:
    """Decode, then check rows + letters' records == ``declared`` (counted by the test)."""
    chunks, dead = run(gen)
    assert all(d.stage == "decode" and d.records >= 0 for d in dead)
    got = accounted(chunks, dead)
    assert got == declared, (got, declared, [(d.reason, d.records, d.position) for d in dead])
    return chunks, dead


def count_data_lines(path: Path, *, header: bool) -> int:
    """Lines (ended by LF, CRLF or a lone CR) with something on them that are not '#'
    comments, less a header line."""
    lines = [ln for ln in path.read_bytes().splitlines()
             if ln.strip() and not ln.strip().startswith(b"#")]
    return len(lines) - (1 if header and lines else 0)


def count_cue_blocks(path: Path, *, vtt: bool) -> int:
    """Blank-line separated blocks; for WebVTT less the header block and NOTE/STYLE blocks."""
    text = path.read_bytes().replace(b"\r\n", b"\n")
    blocks = [b for b in re.split(rb"\n[ \t]*\n", text) if b.strip()]
    if vtt:
        blocks = [b for b in blocks if not b.lstrip(b"\xef\xbb\xbf").startswith(
            (b"WEBVTT", b"NOTE", b"STYLE", b"REGION"))]
    return len(blocks)


def wav_blocks(path: Path, block: int) -> int:
    """Blocks the WAV header declares, read by Python's own ``wave`` module."""
    with wave.open(str(path)) as w:
        return math.ceil(w.getnframes() / block)


def rows_of(chunks: list[Chunk], col: str = "t_ns") -> list:
    return [v for c in chunks for v in c.data.column(col).to_pylist()]


def cut(path: Path, frac: float, dst: Path | None = None) -> Path:
    data = path.read_bytes()
    dst = dst or path.with_name(f"cut_{path.name}")
    dst.write_bytes(data[: int(len(data) * frac)])
    return dst


def smash(path: Path, at: float, n: int, dst: Path | None = None, byte: int = 0xFF) -> Path:
    """A copy with ``n`` bytes at fraction ``at`` of the file overwritten."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i:i + n] = bytes([byte]) * len(data[i:i + n])
    dst = dst or path.with_name(f"smashed_{path.name}")
    dst.write_bytes(bytes(data))
    return dst


KW = {"session_id": "s", "stream_id": "x"}


# ---------------------------------------------------------------- one int64 check

def test_checked_ns_is_the_one_int64_rule():
    assert checked_ns(INT64_MAX) == INT64_MAX
    assert checked_ns(INT64_MAX - 5, 5) == INT64_MAX
    with pytest.raises(ValueError, match="int64"):
        checked_ns(INT64_MAX, 1)
    with pytest.raises(ValueError, match="int64"):
        parse_time_ns("1e30", None)
    with pytest.raises(ValueError, match="int64"):
        parse_time_ns("1e999999999", None)            # never expanded into a huge int
    assert parse_time_ns(str(YEAR_2200_NS), "ns") == YEAR_2200_NS


# ---------------------------------------------------------------- audio

@pytest.fixture(scope="module")
def sox_wav(tmp_path_factory) -> Path:
    return sox_tone(tmp_path_factory.mktemp("a") / "tone.wav", 1.3, 440, 660, channels=2)


def test_wav_cut_at_half_is_a_truncated_letter_for_the_lost_blocks(sox_wav, tmp_path):
    declared = wav_blocks(sox_wav, 1024)                         # 20800 frames -> 21 blocks
    chunks, dead = assert_accounted(decode_audio_file(str(sox_wav), **KW), declared)
    assert dead == []
    half = cut(sox_wav, 0.5, tmp_path / "half.wav")
    # libsndfile alone reads the half as a whole, shorter file: the header says otherwise
    assert sf.info(str(half)).frames < 20800 // 2 + 10
    chunks, dead = assert_accounted(decode_audio_file(str(half), **KW), declared)
    assert [(d.reason, d.error_class, d.position) for d in dead] == [
        ("truncated", "TruncatedSource", "file")]
    d = dead[0]
    assert d.records == declared - sum(c.num_records for c in chunks) > 0
    assert d.attrs["declared"] == str(declared) and d.attrs["declared_samples"] == "20800"
    assert int(d.attrs["decoded"]) == sum(c.num_records for c in chunks)
    assert str(half) in d.message and str(declared) in d.message and "WAV header" in d.message


@pytest.mark.parametrize("block", [1024, 4000])
def test_wav_cut_anywhere_accounts_for_every_block(sox_wav, tmp_path, block):
    declared = wav_blocks(sox_wav, block)
    for frac in (0.02, 0.3, 0.77, 0.999):
        p = cut(sox_wav, frac, tmp_path / f"c{frac}.wav")
        assert_accounted(decode_audio_file(str(p), **KW, block_samples=block), declared)


def test_flac_cut_and_smashed(tmp_path):
    n = 5 * 16000 + 123
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (n, 2))
    p = tmp_path / "a.flac"
    sf.write(p, x, 16000, subtype="PCM_16")
    declared = math.ceil(n / 1024)
    assert_accounted(decode_audio_file(str(p), **KW), declared)
    chunks, dead = assert_accounted(decode_audio_file(str(cut(p, 0.5)), **KW), declared)
    # the samples before the cut are kept (read again block by block after the error)
    assert sum(c.num_records for c in chunks) >= declared // 3
    assert [d.reason for d in dead] in (["corrupt_samples"], ["truncated"])
    assert_accounted(decode_audio_file(str(smash(p, 0.4, 3000)), **KW), declared)


def test_wav_with_a_cut_header_is_one_file_letter(sox_wav, tmp_path):
    for n in (3, 20, 41):                        # in RIFF, in fmt, in the data chunk header
        p = tmp_path / f"h{n}.wav"
        p.write_bytes(sox_wav.read_bytes()[:n])
        chunks, dead = run(decode_audio_file(str(p), **KW))
        assert chunks == [] and len(dead) == 1 and dead[0].records == 1
        assert dead[0].reason == ("corrupt_file" if n == 3 else "truncated"), dead[0].message


# ---------------------------------------------------------------- video

@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    return ffmpeg_testsrc(tmp_path_factory.mktemp("v") / "clip.mp4", 2, gop=10, faststart=True)


def corrupt_packets(src: Path, dst: Path, numbers: list[int]) -> None:
    import av
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        pk = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    for n in numbers:
        pos, size = pk[n]
        data[pos:pos + size] = b"\xff" * size
    dst.write_bytes(bytes(data))


def test_container_frames_are_all_accounted_for(mp4, tmp_path):
    assert_accounted(decode_video_container(str(mp4), **KW), 50)
    chunks, dead = assert_accounted(decode_video_container(str(cut(mp4, 0.5)), **KW), 50)
    assert 5 <= sum(c.num_records for c in chunks) < 50
    assert "truncated" in [d.reason for d in dead]
    tr = next(d for d in dead if d.reason == "truncated")
    assert tr.attrs["declared"] == "50" and "sample table" in tr.message
    bad = tmp_path / "bad.mp4"
    corrupt_packets(mp4, bad, [13, 27, 28])
    chunks, dead = assert_accounted(decode_video_container(str(bad), **KW), 50)
    assert {d.reason for d in dead} <= {"corrupt_frame", "frame_lost"}
    assert sum(c.num_records for c in chunks) >= 30


def test_container_times_outside_int64_are_frame_letters(mp4):
    # frame k is at k * 40 ms; an offset puts frames 25.. past int64
    offset = INT64_MAX - 25 * 40_000_000 + 1
    chunks, dead = assert_accounted(decode_video_container(str(mp4), **KW,
                                                           time_offset_ns=offset), 50)
    assert rows_of(chunks, "pos") == list(range(25))
    assert [(d.reason, d.position) for d in dead] == [
        ("timestamp_overflow", f"frame={k}") for k in range(25, 50)]
    assert all(d.error_class == "TimestampOverflow" and d.attrs["pts"] for d in dead)


def test_container_pts_past_int64_ns_in_the_file_itself(mp4, tmp_path):
    # Matroska stores ms: pts 9223372035000 + 40 k ms fits int64 as ms, not as ns after
    # 9223372036.854 s, so frames 47..49 have no int64 time
    late = tmp_path / "late.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), "-c", "copy",
                    "-output_ts_offset", "9223372035", str(late)], check=True)
    chunks, dead = assert_accounted(decode_video_container(str(late), **KW), 50)
    assert rows_of(chunks)[0] == 9_223_372_035 * S and len(rows_of(chunks)) == 47
    assert [(d.reason, d.position) for d in dead] == [
        ("timestamp_overflow", f"frame={k}") for k in (47, 48, 49)]


def png(i: int) -> bytes:
    return png_bytes(20 * i % 255, width=32, height=24)


def test_image_index_with_absurd_times_and_damage(tmp_path):
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    (tmp_path / "3.png").write_bytes(png(3)[:40])                     # cut short
    index = tmp_path / "index.txt"
    index.write_bytes(b"# cam0\n"
                      b"timestamp filename\n"
                      b"1.0 0.png\n"
                      b"1e30 1.png\n"                 # 1e30 s
                      b"\n"
                      b"2.0 2.png\n"
                      b"9e30 2.png\n"                 # 9e30 with time_unit ns below: still out
                      b"3.0 3.png\n"
                      b"nope 4.png\n"
                      b"7258118400 5.png\n")          # year 2200 (seconds): decoded
    declared = count_data_lines(index, header=True)
    assert declared == 7
    chunks, dead = assert_accounted(decode_image_sequence(str(index), **KW), declared)
    assert rows_of(chunks) == [1 * S, 2 * S, 7258118400]                 # integer: ns
    assert rows_of(chunks, "pos") == [0, 2, 6]
    assert [(d.reason, d.position) for d in dead] == [
        ("timestamp_overflow", "frame=1"), ("timestamp_overflow", "frame=3"),
        ("corrupt_image", "frame=4"), ("bad_timestamp", "frame=5")]
    assert dead[0].payload == b"1e30 1.png" and dead[0].payload_format == "index-line"
    assert dead[0].error_class == "TimestampOverflow" and str(index) in dead[0].message
    chunks, dead = run(decode_image_sequence(str(index), **KW, options={"time_unit": "s"}))
    assert rows_of(chunks) == [1 * S, 2 * S, YEAR_2200_NS]            # 2200 is not judged here
    assert_accounted(decode_image_sequence(str(cut(index, 0.5)), **KW),
                     count_data_lines(cut(index, 0.5), header=True))


# ---------------------------------------------------------------- text

SRT = (b"1\n00:00:01,000 --> 00:00:02,000\nfirst\n\n"
       b"2\n99999999999:00:00,000 --> 99999999999:00:01,000\nhour 99999999999\n\n"
       b"3\n00:00:03,000 --> 00:00:04,000\nthird\n\n"
       b"4\n00:00:05,000 -> broken\nbad timing\n\n"
       b"5\n" + b"9" * 5000 + b":00:00,000 --> 00:00:09,000\nhuge hour\n\n"
       b"6\n2562047:47:16,854 --> 2562047:47:16,855\nlast ns of int64, then one past\n\n"
       b"7\n00:00:07,000 --> 00:00:08,000\nseventh\n")


def test_srt_cue_times_outside_int64_are_cue_letters(tmp_path):
    p = tmp_path / "a.srt"
    p.write_bytes(SRT)
    declared = count_cue_blocks(p, vtt=False)
    chunks, dead = assert_accounted(decode_srt(str(p), **KW), declared)
    assert rows_of(chunks, "text") == ["first", "third", "seventh"]
    assert [(d.reason, d.position) for d in dead] == [
        ("timestamp_overflow", "cue=1"), ("bad_timing", "cue=3"),
        ("timestamp_overflow", "cue=4"), ("timestamp_overflow", "cue=5")]
    assert dead[0].payload.startswith(b"2\n99999999999:00:00,000") and \
        dead[0].payload_format == "srt-cue"
    for frac in (0.3, 0.5, 0.9):
        q = cut(p, frac, tmp_path / f"c{frac}.srt")
        assert_accounted(decode_srt(str(q), **KW), count_cue_blocks(q, vtt=False))
    q = smash(p, 0.5, 30, tmp_path / "s.srt", byte=0xFE)
    assert_accounted(decode_srt(str(q), **KW), count_cue_blocks(q, vtt=False))


def test_vtt_cue_at_hour_99999999999(tmp_path):
    p = tmp_path / "a.vtt"
    p.write_bytes(b"WEBVTT\n\nNOTE hi\n\n00:01.000 --> 00:02.000\na\n\n"
                  b"99999999999:00:00.000 --> 99999999999:00:01.000\nb\n\n"
                  b"00:03.000 --> 00:04.000\nc\n")
    chunks, dead = assert_accounted(decode_vtt(str(p), **KW), count_cue_blocks(p, vtt=True))
    assert rows_of(chunks, "text") == ["a", "c"]
    assert [(d.reason, d.position, d.payload_format) for d in dead] == [
        ("timestamp_overflow", "cue=1", "vtt-cue")]


def test_text_jsonl_absurd_times(tmp_path):
    p = tmp_path / "w.jsonl"
    lines = [{"start": 1, "end": 2, "text": "a"},
             {"start_ns": 10**20, "end_ns": 10**20 + 5, "text": "1e20 ns"},
             {"start": 1e30, "end": 2e30, "text": "1e30 s"},
             {"start": 3, "end": 4, "text": "b"},
             {"start_ns": YEAR_2200_NS, "end_ns": YEAR_2200_NS + 1, "text": "2200"}]
    body = "\n".join(json.dumps(x) for x in lines).encode()
    body += b'\n{"start": 1' + b"0" * 5000 + b', "end": 1, "text": "5000 digits"}'
    body += b"\n" + b"[" * 100_000 + b"\n\n"
    body += b'{"start": 5, "end": 6, "text": "c"}\n'
    p.write_bytes(body)
    chunks, dead = assert_accounted(decode_text_jsonl(str(p), **KW),
                                    count_data_lines(p, header=False))
    assert rows_of(chunks, "text") == ["a", "b", "2200", "c"]
    assert [(d.reason, d.position) for d in dead] == [
        ("timestamp_overflow", "cue=1"), ("timestamp_overflow", "cue=2"),
        ("bad_json", "cue=5"), ("bad_json", "cue=6")]
    assert json.loads(dead[0].payload)["text"] == "1e20 ns"
    q = cut(p, 0.5, tmp_path / "half.jsonl")
    assert_accounted(decode_text_jsonl(str(q), **KW), count_data_lines(q, header=False))


# ---------------------------------------------------------------- sensor

def imu_csv(n: int = 2000, bad: dict[int, str] | None = None) -> bytes:
    lines = ["# imu", "t_ns,ax,ay"]
    for i in range(n):
        t = str(1_700_000_000 * S + i * 5_000_000)
        lines.append(f"{bad.get(i, t) if bad else t},{i * 0.5},{-i}")
    return ("\n".join(lines) + "\n").encode()


def test_csv_year_2500_in_ns_is_a_row_letter(tmp_path):
    p = tmp_path / "imu.csv"
    p.write_bytes(imu_csv(3000, {7: str(YEAR_2500_NS), 1200: str(YEAR_2200_NS), 2999: "99" * 20}))
    declared = count_data_lines(p, header=True)
    chunks, dead = assert_accounted(decode_sensor_csv(str(p), **KW,
                                                      options={"chunk_rows": 1000}), declared)
    assert [(d.reason, d.position) for d in dead] == [("timestamp_overflow", "row=7"),
                                                      ("timestamp_overflow", "row=2999")]
    assert dead[0].payload == f"{YEAR_2500_NS},3.5,-7".encode()
    assert dead[0].payload_format == "csv-row" and dead[0].error_class == "TimestampOverflow"
    t = rows_of(chunks)
    assert len(t) == 2998 and YEAR_2200_NS in t
    # seconds that overflow once scaled by time_unit
    q = tmp_path / "s.csv"
    q.write_text("t,x\n1.5,1\n16725225600,2\n2.5,3\n9223372036,4\n")
    chunks, dead = assert_accounted(decode_sensor_csv(str(q), **KW, options={"time_unit": "s"}),
                                    4)
    assert rows_of(chunks) == [1_500_000_000, 2_500_000_000, 9_223_372_036 * S]
    assert [(d.reason, d.position) for d in dead] == [("timestamp_overflow", "row=1")]


def test_csv_cut_and_smashed(tmp_path):
    p = tmp_path / "imu.csv"
    p.write_bytes(imu_csv(5000))
    for frac in (0.1, 0.5, 0.93):
        q = cut(p, frac, tmp_path / f"c{frac}.csv")
        assert_accounted(decode_sensor_csv(str(q), **KW), count_data_lines(q, header=True))
    for at, byte in ((0.3, 0xFF), (0.6, ord("\n")), (0.7, ord('"')), (0.8, ord("#"))):
        q = smash(p, at, 25, tmp_path / f"s{at}.csv", byte=byte)
        chunks, dead = assert_accounted(decode_sensor_csv(str(q), **KW),
                                        count_data_lines(q, header=True))
        assert sum(c.num_records for c in chunks) > 4000
        if byte == 0xFF:            # once the whole file's decoder_error: now one row's letter
            assert [d.reason for d in dead] == ["invalid_utf8"]
            assert b"\xff" * 25 in dead[0].payload


def test_csv_bare_cr_ends_a_line_and_never_shifts_values(tmp_path):
    """A lone CR ends a line (as for Arrow's reader and ``splitlines``): the halves are rows
    or letters of their own, and every decoded row keeps its own values. (Counting lines at
    LF only once let Arrow's extra row shift every later row's values by one.)"""
    lines = [f"{i * 1000},{i},{-i}".encode() for i in range(300)]
    lines[264] = b"264000\r,264,-264"          # "264000" (2 fields short) + ",264,-264"
    lines[110] = b"110000,1\r10,-110"
    lines[46] = b"46000,46,-4\x00\x00\x006"
    lines[50] = b"50000,50,-50\r"               # CR then LF: one line end
    p = tmp_path / "cr.csv"
    p.write_bytes(b"t_ns,a,b\r\n" + b"\n".join(lines) + b"\r")
    declared = count_data_lines(p, header=True)
    assert declared == 302
    for chunk_rows in (4096, 7):
        chunks, dead = assert_accounted(decode_sensor_csv(
            str(p), **KW, options={"chunk_rows": chunk_rows}), declared)
        assert sorted((d.reason, d.position) for d in dead) == [
            ("bad_timestamp", "row=266"), ("non_numeric", "row=46"),
            ("wrong_field_count", "row=110"), ("wrong_field_count", "row=111"),
            ("wrong_field_count", "row=265")]
        t, a = rows_of(chunks), rows_of(chunks, "a")
        assert len(t) == 297 and a == [v / 1000 for v in t]


def test_csv_without_line_ends_is_read_in_linear_time(tmp_path):
    p = tmp_path / "one.csv"
    p.write_bytes(b"t_ns,a\r" + b"\r".join(b"%d,%d" % (i, i) for i in range(400_000)))
    chunks, dead = assert_accounted(decode_sensor_csv(str(p), **KW), 400_000)
    assert dead == [] and rows_of(chunks)[-1] == 399_999


def test_sensor_jsonl_year_2500(tmp_path):
    p = tmp_path / "s.jsonl"
    rows = [{"t_ns": 1000, "a": 1}, {"t_ns": YEAR_2500_NS, "a": 2},
            {"t_ns": 3000, "a": 3}, {"t_ns": YEAR_2200_NS, "a": 4}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"t_ns\": 5000, \"a\": 5}\n")
    chunks, dead = assert_accounted(decode_sensor_jsonl(str(p), **KW),
                                    count_data_lines(p, header=False))
    assert rows_of(chunks) == [1000, 3000, YEAR_2200_NS, 5000]
    assert [(d.reason, d.position, d.payload_format) for d in dead] == [
        ("timestamp_overflow", "row=1", "jsonl-row")]
    assert json.loads(dead[0].payload)["t_ns"] == YEAR_2500_NS
    q = tmp_path / "sec.jsonl"
    q.write_text('{"time": 1.5, "a": 1}\n{"time": 16725225600, "a": 2}\n{"time": 1e30, "a": 3}\n')
    chunks, dead = assert_accounted(decode_sensor_jsonl(str(q), **KW,
                                                        options={"time_unit": "s"}), 3)
    assert rows_of(chunks) == [1_500_000_000]
    assert [d.reason for d in dead] == ["timestamp_overflow"] * 2


def test_parquet_times_outside_int64_and_footer_count(tmp_path):
    p = tmp_path / "s.parquet"
    us = pa.array([1_000, YEAR_2500_NS // 1000, 3_000, None], pa.timestamp("us"))
    pq.write_table(pa.table({"timestamp": us, "v": [1.0, 2.0, 3.0, 4.0]}), p)
    chunks, dead = assert_accounted(decode_sensor_parquet(str(p), **KW), 4)
    assert rows_of(chunks) == [1_000_000, 3_000_000]
    assert [(d.reason, d.position) for d in dead] == [("timestamp_overflow", "row=1"),
                                                      ("bad_timestamp", "row=3")]
    q = tmp_path / "i.parquet"
    pq.write_table(pa.table({"t": pa.array([1, 2**62, 3], pa.int64()),
                             "u": pa.array([1, 2**63 + 7, 3], pa.uint64()),
                             "v": [1.0, 2.0, 3.0]}), q)
    for col, unit in (("t", "ms"), ("u", "ns")):
        chunks, dead = assert_accounted(decode_sensor_parquet(
            str(q), **KW, options={"time_column": col, "time_unit": unit,
                                   "channels": ["v"]}), 3)
        assert rows_of(chunks, "pos") == [0, 2]
        assert [d.reason for d in dead] == ["timestamp_overflow"]


# ---------------------------------------------------------------- letters that end a file

def test_file_level_letter_stands_for_every_row(tmp_path):
    p = tmp_path / "imu.csv"
    p.write_bytes(imu_csv(300))
    chunks, dead = assert_accounted(decode_sensor_csv(str(p), **KW,
                                                      options={"time_column": "when"}), 300)
    assert chunks == [] and [(d.reason, d.records) for d in dead] == [
        ("missing_time_column", 300)]
    v = tmp_path / "novtt.vtt"
    v.write_text("00:01.000 --> 00:02.000\na\n\n00:03.000 --> 00:04.000\nb\n")
    chunks, dead = assert_accounted(decode_vtt(str(v), **KW), 2)
    assert [(d.reason, d.records) for d in dead] == [("not_webvtt", 2)]


def test_an_oversize_file_stands_for_what_its_header_declares(sox_wav, mp4, tmp_path):
    """Oversize files are not read, but a header or footer is: the letter carries its count;
    line-based files are not counted (that would mean reading them) and stand for 1."""
    pq_path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"t_ns": list(range(70)), "v": [1.0] * 70}), pq_path)
    csv_path = tmp_path / "s.csv"
    csv_path.write_bytes(imu_csv(80))
    small = {"max_bytes": 100}
    for gen, records in ((decode_audio_file(str(sox_wav), **KW, options=small),
                          wav_blocks(sox_wav, 1024)),
                         (decode_video_container(str(mp4), **KW, options=small), 50),
                         (decode_sensor_parquet(str(pq_path), **KW, options=small), 70),
                         (decode_sensor_csv(str(csv_path), **KW, options=small), 1)):
        chunks, dead = run(gen)
        assert chunks == [] and [(d.reason, d.records) for d in dead] == [("oversize", records)]


def test_a_decoder_crash_is_one_letter_for_what_it_lost(tmp_path, monkeypatch):
    p = tmp_path / "imu.csv"
    p.write_bytes(imu_csv(3000))
    real = sensor_mod.parse_numbers
    calls = {"n": 0}

    def flaky(strings):
        calls["n"] += 1
        if calls["n"] > 4:          # 2 calls find the channels, 2 parse them: the 2nd block
            raise RuntimeError("boom")
        return real(strings)

    monkeypatch.setattr(sensor_mod, "parse_numbers", flaky)
    chunks, dead = assert_accounted(decode_sensor_csv(str(p), **KW,
                                                      options={"chunk_rows": 1000}), 3000)
    assert sum(c.num_records for c in chunks) == 1000
    assert [(d.reason, d.error_class, d.records) for d in dead] == [
        ("decoder_error", "RuntimeError", 2000)]
    assert "boom" in dead[0].message and dead[0].attrs["declared"] == "3000"


# ---------------------------------------------------------------- the stage's counters

def test_stage_counters_add_letter_records(sox_wav, tmp_path):
    half = cut(sox_wav, 0.5, tmp_path / "half.wav")
    csv_path = tmp_path / "imu.csv"
    csv_path.write_bytes(imu_csv(100, {5: str(YEAR_2500_NS)}))
    elements = [("s", Stream(id="mic", modality="audio", files=[str(half)]), str(half)),
                ("s", Stream(id="imu", modality="sensor", files=[str(csv_path)]),
                 str(csv_path))]
    p = beam.Pipeline("DirectRunner")
    _ = p | beam.Create(elements) | DecodeStreams(run_id="r")
    result = p.run()
    result.wait_until_finish()
    c = {m.key.metric.name: m.committed
         for m in result.metrics().query(MetricsFilter().with_namespace("decode"))["counters"]}
    assert c["audio.records"] + c["audio.dead"] == wav_blocks(sox_wav, 1024)
    assert c["audio.dead"] > 0
    assert (c["sensor.records"], c["sensor.dead"]) == (99, 1)


def test_decode_file_passes_offsets_and_letters_keep_device_times(tmp_path):
    p = write_srt(tmp_path / "a.srt", [(1000, 2000, "hi")])
    s = Stream(id="sub", modality="text", files=[str(p)])
    chunks, dead = run(decode_file(s, p, session_id="s", time_offset_ns=5 * S))
    assert dead == [] and rows_of(chunks) == [6 * S] and rows_of(chunks, "t_end_ns") == [7 * S]
    assert chunks[0].meta["time_offset_ns"] == 5 * S
    chunks, dead = run(decode_file(s, p, session_id="s", time_offset_ns=INT64_MAX - S))
    assert chunks == [] and [d.reason for d in dead] == ["timestamp_overflow"]
