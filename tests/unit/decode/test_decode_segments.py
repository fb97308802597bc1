"""Multi-file streams: files that each restart at time 0 become consecutive segments.

Real files made at test time (ffmpeg MP4/MKV, sox WAV, CSV, SRT, image index), probed with
``segment_span``, shifted by ``segment_offsets`` and decoded with those offsets: times strictly
increase across files, and at each seam the next file starts exactly one frame / sample /
period after the previous one's last (no gap, no overlap). A declared start wins.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.base import INT64_MAX
from mmalign.transforms.decode.segments import (
    offsets_from_spans,
    segment_offsets,
    segment_span,
)
from mmalign.transforms.decode.stage import DecodeRequest, DecodeStreams, decode_file
from tests.media import ffmpeg_testsrc, one_image_index, sensor_csv, sox_tone, write_srt

S = 1_000_000_000
MS = 1_000_000


def decode_all(stream: Stream, paths: list[Path], offsets: list[int]
               ) -> tuple[list[list[int]], list[DeadLetter]]:
    """Per file, its decoded t_ns in order; and all letters."""
    times, dead = [], []
    for p, off in zip(paths, offsets, strict=True):
        t = []
        for out in decode_file(stream, p, session_id="s", time_offset_ns=off):
            if isinstance(out, Chunk):
                t += out.data.column("t_ns").to_pylist()
            else:
                dead.append(out)
        times.append(t)
    return times, dead


def assert_seamless(times: list[list[int]], step: int) -> None:
    flat = [t for ts in times for t in ts]
    assert all(b > a for a, b in zip(flat, flat[1:], strict=False)), "not strictly increasing"
    for a, b in zip(times, times[1:], strict=False):
        assert b[0] - a[-1] == step, (a[-1], b[0])


# ---------------------------------------------------------------- video

@pytest.fixture(scope="module")
def mp4s(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cam")
    return [ffmpeg_testsrc(d / "part1.mp4", 2, pattern="testsrc"),
            ffmpeg_testsrc(d / "part2.mp4", 1.2, pattern="testsrc2"),
            ffmpeg_testsrc(d / "part3.mp4", 0.4, pattern="testsrc")]


def test_mp4_parts_that_restart_at_zero(mp4s):
    cam = Stream(id="cam", modality="video", files=[str(p) for p in mp4s])
    assert [segment_span(cam, p) for p in mp4s] == [(0, 2 * S), (0, 1200 * MS), (0, 400 * MS)]
    # as they are, the second file's frames repeat the first's times
    times, dead = decode_all(cam, mp4s, [0, 0, 0])
    assert dead == [] and times[1][:3] == times[0][:3]
    offsets = segment_offsets(cam, mp4s, [None, None, None])
    assert offsets == [0, 2 * S, 3200 * MS]
    times, dead = decode_all(cam, mp4s, offsets)
    assert dead == [] and [len(t) for t in times] == [50, 30, 10]
    assert_seamless(times, 40 * MS)                           # one frame at 25 fps
    assert times[2][-1] == 3200 * MS + 360 * MS


def test_mkv_parts_probe_their_packets(tmp_path, mp4s):
    mkvs = []
    for i, p in enumerate(mp4s[:2]):
        q = tmp_path / f"p{i}.mkv"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(p), "-c", "copy", str(q)],
                       check=True)
        mkvs.append(q)
    cam = Stream(id="cam", modality="video", files=[str(p) for p in mkvs])
    assert segment_span(cam, mkvs[0]) == (0, 2 * S)          # last pts + its duration
    offsets = segment_offsets(cam, mkvs, [None, None])
    times, dead = decode_all(cam, mkvs, offsets)
    assert dead == [] and offsets == [0, 2 * S]
    assert_seamless(times, 40 * MS)


def test_a_declared_start_wins(mp4s):
    cam = Stream(id="cam", modality="video", files=[str(p) for p in mp4s])
    offsets = segment_offsets(cam, mp4s, [None, 10 * S, None])
    assert offsets == [0, 10 * S, 11200 * MS]
    offsets = segment_offsets(cam, mp4s, [5 * S, None, 1 * S])   # even going back in time
    assert offsets == [5 * S, 7 * S, 1 * S]
    times, _ = decode_all(cam, mp4s, offsets)
    assert times[0][0] == 5 * S and times[1][0] == 7 * S and times[2][0] == 1 * S
    with pytest.raises(ValueError, match="3 files but 2 starts"):
        segment_offsets(cam, mp4s, [None, None])
    # by default the starts are the stream's own ({path, start_ns} items in the manifest)
    declared = Stream(id="cam", modality="video",
                      files=[str(mp4s[0]), {"path": str(mp4s[1]), "start_ns": 10 * S},
                             str(mp4s[2])])
    assert segment_offsets(declared, mp4s) == [0, 10 * S, 11200 * MS]


# ---------------------------------------------------------------- audio

def test_wav_parts(tmp_path):
    wavs = [sox_tone(tmp_path / "a.wav", 1.0, 440), sox_tone(tmp_path / "b.wav", 0.7, 660),
            sox_tone(tmp_path / "c.wav", 0.3, 880)]
    mic = Stream(id="mic", modality="audio", files=[str(p) for p in wavs],
                 options={"block_samples": 1000})
    assert segment_span(mic, wavs[0]) == (0, 1 * S)           # 16000 samples at 16 kHz
    offsets = segment_offsets(mic, wavs, [None] * 3)
    assert offsets == [0, 1 * S, 1700 * MS]
    times, dead = decode_all(mic, wavs, offsets)
    assert dead == [] and [len(t) for t in times] == [16, 12, 5]
    # a.wav's last block is samples 15000..15999: b.wav starts at what would be sample 16000;
    # b.wav's last block holds samples 11000..11199 (200): c.wav starts 200 samples later
    assert_seamless(times[:2], 1000 * S // 16000)
    assert times[2][0] - times[1][-1] == 200 * S // 16000
    assert_seamless(times[1:], 200 * S // 16000)
    # with start_ns, every file's own times start there; the offsets still chain them
    mic2 = Stream(id="mic", modality="audio", files=[str(p) for p in wavs],
                  options={"start_ns": 7 * S})
    assert segment_offsets(mic2, wavs, [None] * 3) == [0, 1 * S, 1700 * MS]


def test_audio_track_parts(tmp_path):
    parts = []
    for i in range(2):
        p = tmp_path / f"t{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=48000", "-t", "1", "-c:a", "pcm_s16le",
                        "-f", "mov", str(p)], check=True)
        parts.append(p)
    mic = Stream(id="mic", modality="audio", format="audio_track",
                 files=[str(p) for p in parts])
    assert segment_span(mic, parts[0]) == (0, 1 * S)
    offsets = segment_offsets(mic, parts, [None, None])
    times, dead = decode_all(mic, parts, offsets)
    assert dead == [] and offsets == [0, 1 * S]
    assert times[1][0] == 1 * S and times[0][-1] < 1 * S


# ---------------------------------------------------------------- sensor, text, images

def imu(path: Path, n: int, t0_ms: int = 0, period_ms: int = 10) -> Path:
    return sensor_csv(path, [(t0_ms + i * period_ms) * MS for i in range(n)], x=range(n))


def test_csv_parts(tmp_path):
    csvs = [imu(tmp_path / "a.csv", 100), imu(tmp_path / "b.csv", 50),
            imu(tmp_path / "c.csv", 20, t0_ms=5000)]             # c already starts later
    s = Stream(id="imu", modality="sensor", files=[str(p) for p in csvs])
    assert segment_span(s, csvs[0]) == (0, 1 * S)             # 990 ms + the 10 ms period
    offsets = segment_offsets(s, csvs, [None] * 3)
    assert offsets == [0, 1 * S, 0]
    times, dead = decode_all(s, csvs, offsets)
    assert dead == [] and times[1][0] == 1 * S and times[2][0] == 5 * S
    assert_seamless(times[:2], 10 * MS)
    # a missing middle file keeps offset 0 and the next one continues from the last good end
    gone = tmp_path / "gone.csv"
    assert segment_offsets(s, [csvs[0], gone, csvs[1]], [None] * 3) == [0, 0, 1 * S]


def test_offsets_that_overflow_are_record_letters(tmp_path):
    p = imu(tmp_path / "a.csv", 10)
    s = Stream(id="imu", modality="sensor", files=[str(p)])
    (times,), dead = decode_all(s, [p], [INT64_MAX - 45 * MS])
    assert times == [INT64_MAX - 45 * MS + k * 10 * MS for k in range(5)]
    assert [(d.reason, d.position) for d in dead] == [
        ("timestamp_overflow", f"row={k}") for k in range(5, 10)]


def test_srt_parts_chain_on_the_last_cue_end(tmp_path):
    a, b = tmp_path / "a.srt", tmp_path / "b.srt"
    write_srt(a, [(1000, 2000, "x"), (3000, 4500, "y")])
    write_srt(b, [(500, 1000, "z")])
    s = Stream(id="sub", modality="text", files=[str(a), str(b)])
    assert segment_span(s, a) == (1 * S, 4500 * MS)
    assert segment_offsets(s, [a, b], [None, None]) == [0, 4 * S]
    chunks = [o for o in decode_file(s, b, session_id="s", time_offset_ns=4 * S)]
    assert chunks[0].data.column("t_ns").to_pylist() == [4500 * MS]
    assert chunks[0].data.column("t_end_ns").to_pylist() == [5 * S]


def test_image_index_parts(tmp_path):
    idx = []
    for k in range(2):
        d = tmp_path / f"seq{k}"
        d.mkdir()
        idx.append(one_image_index(d, [i * 33_333_333 for i in range(30)]))
    s = Stream(id="cam", modality="video", format="image_sequence",
               files=[str(p) for p in idx])
    assert segment_span(s, idx[0]) == (0, 30 * 33_333_333)
    offsets = segment_offsets(s, idx, [None, None])
    times, dead = decode_all(s, idx, offsets)
    assert dead == [] and offsets == [0, 30 * 33_333_333]
    assert_seamless(times, 33_333_333)


def test_offset_rules_on_spans():
    assert offsets_from_spans([(0, 10), (0, 5), (20, 30), (25, 40)], [None] * 4) == \
        [0, 10, 0, 5]
    assert offsets_from_spans([(100, 110), None, (0, 5)], [None, None, None]) == [0, 0, 110]
    assert offsets_from_spans([(3, 10), (0, 5)], [0, 7]) == [-3, 7]
    assert offsets_from_spans([None, (0, 5)], [50, None]) == [50, 0]


# ---------------------------------------------------------------- the Beam element

def test_decode_streams_takes_requests_and_old_tuples(tmp_path):
    csvs = [imu(tmp_path / "a.csv", 100), imu(tmp_path / "b.csv", 50)]
    s = Stream(id="imu", modality="sensor", files=[str(p) for p in csvs])
    offsets = segment_offsets(s, csvs, [None, None])
    elements = [DecodeRequest("s1", s, str(csvs[1]), roots=(str(tmp_path),),
                              time_offset_ns=offsets[1]),
                ("s1", s, str(csvs[0]))]
    p = beam.Pipeline("DirectRunner")
    out = p | beam.Create(elements) | DecodeStreams(run_id="r")
    assert_that(out.main | beam.Map(lambda c: (c.source_uri, int(c.t_ns().min()),
                                                 int(c.t_ns().max()))),
                equal_to([(str(csvs[0]), 0, 990 * MS), (str(csvs[1]), 1 * S, 1490 * MS)]))
    p.run().wait_until_finish()
