"""Randomly damaged files (fixed seeds) through every decoder: nothing raises, no decoder
bug (``decoder_error``), and where the test can count the records itself (CSV and JSONL
lines) rows + letters' records equal that count; for the others, equal the count the decoder
declares in its letters. Each damage found a bug once (a bare CR shifting CSV rows, a NUL in
an index filename, a video stream without a codec)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.transforms.decode.audio import decode_audio_file
from mmalign.transforms.decode.sensor import (
    decode_sensor_csv,
    decode_sensor_jsonl,
    decode_sensor_parquet,
)
from mmalign.transforms.decode.text import decode_srt, decode_text_jsonl, decode_vtt
from mmalign.transforms.decode.video import decode_image_sequence, decode_video_container
from tests.media import ffmpeg_testsrc, one_image_index, sensor_csv

pytestmark = pytest.mark.timeout(300)


def lines(path: Path, header: bool) -> int:
    n = [ln for ln in path.read_bytes().splitlines()
         if ln.strip() and not ln.strip().startswith(b"#")]
    if header and n:
        try:
            float(n[0].split(b",")[0].strip())
        except ValueError:
            n = n[1:]
    return len(n)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, tuple[Path, object, object]]:
    d = tmp_path_factory.mktemp("seeds")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (20000, 2))
    sf.write(d / "s.wav", x, 16000, subtype="PCM_16")
    sf.write(d / "s.flac", x, 16000, subtype="PCM_16")
    ffmpeg_testsrc(d / "s.mp4", 1, size="64x48", pix_fmt=None, faststart=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(d / "s.mp4"), "-c", "copy",
                    str(d / "s.mkv")], check=True)
    one_image_index(d, [f"{i}.{i:09d}" for i in range(40)], index="s.txt", image="img.png",
                    header="timestamp filename")
    (d / "s.srt").write_text("".join(
        f"{i + 1}\n00:00:{i:02d},000 --> 00:00:{i:02d},500\ncue {i}\n\n" for i in range(30)))
    (d / "s.vtt").write_text("WEBVTT\n\n" + "".join(
        f"00:00:{i:02d}.000 --> 00:00:{i:02d}.500\ncue {i}\n\n" for i in range(30)))
    (d / "t.jsonl").write_text("".join(
        json.dumps({"start": i, "end": i + 0.5, "text": f"w{i}"}) + "\n" for i in range(40)))
    sensor_csv(d / "s.csv", [i * 1000 for i in range(300)], a=range(300),
               b=[-i for i in range(300)])
    (d / "s.jsonl").write_text("".join(json.dumps({"t_ns": i * 1000, "a": i}) + "\n"
                                       for i in range(100)))
    pq.write_table(pa.table({"t_ns": list(range(0, 100_000, 1000)), "a": [1.0] * 100}),
                   d / "s.parquet", row_group_size=30)
    return {
        "s.wav": (d / "s.wav", decode_audio_file, None),
        "s.flac": (d / "s.flac", decode_audio_file, None),
        "s.mp4": (d / "s.mp4", decode_video_container, None),
        "s.mkv": (d / "s.mkv", decode_video_container, None),
        "s.txt": (d / "s.txt", decode_image_sequence, None),
        "s.srt": (d / "s.srt", decode_srt, None),
        "s.vtt": (d / "s.vtt", decode_vtt, None),
        "t.jsonl": (d / "t.jsonl", decode_text_jsonl, lambda p: lines(p, header=False)),
        "s.csv": (d / "s.csv", decode_sensor_csv, lambda p: lines(p, header=True)),
        "s.jsonl": (d / "s.jsonl", decode_sensor_jsonl, lambda p: lines(p, header=False)),
        "s.parquet": (d / "s.parquet", decode_sensor_parquet, None),
    }


INSERTS = [b"\n", b"\n\n", b"#", b'"', b"\xff", b"1e30", b"99999999999", b"-->", b",", b"\r",
           b"\x00" * 9, b"[" * 50, b"9" * 30]


def damage(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    op = rng.choice(["cut", "flip", "insert", "delete", "repeat"])
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data)) if data else 0
        if op == "cut":
            return bytes(data[:i])
        if op == "flip":
            n = rng.randint(1, 20)
            data[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
        elif op == "insert":
            data[i:i] = rng.choice(INSERTS)
        elif op == "delete":
            del data[i:i + rng.randint(1, 50)]
        else:
            data[i:i] = data[max(0, i - 100):i]
    return bytes(data)


@pytest.mark.parametrize("name", ["s.wav", "s.flac", "s.mp4", "s.mkv", "s.txt", "s.srt",
                                  "s.vtt", "t.jsonl", "s.csv", "s.jsonl", "s.parquet"])
def test_damaged_files_never_break_a_decoder(seeds, name, tmp_path):
    path, decode, count = seeds[name]
    rng = random.Random(name)
    for k in range(12):
        p = tmp_path / f"{k}{path.suffix}"
        p.write_bytes(damage(path.read_bytes(), rng))
        out = list(decode(str(p), session_id="s", stream_id="x"))
        rows = sum(o.num_records for o in out if isinstance(o, Chunk))
        dead = [o for o in out if isinstance(o, DeadLetter)]
        assert len(dead) + sum(isinstance(o, Chunk) for o in out) == len(out)
        assert not [d.message for d in dead if d.reason == "decoder_error"], k
        got = rows + sum(d.records for d in dead)
        if count is not None:
            assert got == count(p), (k, [(d.reason, d.records) for d in dead])
        declared = {int(d.attrs["declared"]) for d in dead if "declared" in d.attrs}
        assert declared <= {got}, (k, declared, got)
