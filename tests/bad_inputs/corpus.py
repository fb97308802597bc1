"""A corpus of broken inputs, built at test time from one small generated recording.

Each ``Case`` copies the base recording (hard links: only the files it breaks are rewritten),
damages it, and says what the README promises for it: exit 2 with one sentence (a manifest,
calibration or path problem), or dead letters with these reasons (bad data: the run goes on).
Nothing binary is committed: every broken file is made here.

``independent_count`` counts the records of a source the way a person would, without the
project's decoders (ffprobe for containers, the RIFF header for WAV, lines and cue blocks for
text formats), so ``records in = aligned + dead`` is checked against a count the decoders did
not make.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

BLOCK = 1024          # audio records are blocks of this many samples (the decoder default)
S = 1_000_000_000


@dataclass
class Case:
    name: str                              # also the session id of its manifest
    category: str
    build: Callable[[Path, dict], None]    # (case folder, manifest dict) -> damage them
    exit: int = 0                          # 2: refused before the run; 1: the run ends with
    #                                        a failure (e.g. a session without ticks); 0: ok
    message: str = ""                      # exit 2: words the one sentence must contain
    reasons: set[str] = field(default_factory=set)   # data: "stage/reason" letters expected
    streams: tuple[str, ...] = ("cam0",)   # streams of the base manifest the case keeps
    args: tuple[str, ...] = ()             # extra CLI arguments (exit-2 cases)
    command: str = "backfill"              # backfill | align-check
    manifest: str = "manifest.yaml"        # the file handed to the command


# ------------------------------------------------------------------ the base recording

def make_base(root: Path) -> Path:
    from mmalign.pipelines.sample_recording import generate_recording
    return generate_recording(root, duration_s=4.0, seed=7, size=(160, 120), fps=20.0,
                              imu_hz=100.0, mic_rate=8000, bad_records=False)


def instantiate(case: Case, base: Path, root: Path) -> Path:
    """The case's folder (a hard-linked copy of the base recording, then damaged); returns
    its manifest path."""
    d = root / case.name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(base.parent, d, copy_function=os.link)
    manifest = yaml.safe_load((d / "manifest.yaml").read_text())
    manifest["session"] = case.name
    manifest["streams"] = [s for s in manifest["streams"] if s["id"] in case.streams]
    pol = manifest["alignment"].get("policies", {})
    manifest["alignment"]["policies"] = {k: v for k, v in pol.items() if k in case.streams}
    if "cam0" not in case.streams:
        manifest["alignment"]["ticks"] = {"rate_hz": 10}
    case.build(d, manifest)
    if not (d / "manifest.yaml.raw").exists():
        (d / "manifest.yaml").unlink()
        (d / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return d / case.manifest


def replace(path: Path, data: bytes) -> None:
    """Rewrite a (hard-linked) file without touching the base copy."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def raw_manifest(d: Path, text: str) -> None:
    """Replace the manifest by raw text (for syntax-level cases)."""
    replace(d / "manifest.yaml", text.encode())
    (d / "manifest.yaml.raw").write_text("")


# ------------------------------------------------------------------ independent counts

def riff_frames(path: Path) -> int | None:
    """Frames a WAV header declares (data chunk size / block align), or None."""
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    i, align, size = 12, None, None
    while i + 8 <= len(data):
        cid, n = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        if cid == b"fmt " and n >= 16:
            align = struct.unpack("<H", data[i + 20:i + 22])[0]
        if cid == b"data":
            size = n
            break
        i += 8 + n + (n & 1)
    if not align or size is None:
        return None
    return size // align


def ffprobe_frames(path: Path, kind: str = "v") -> int | None:
    """Frames (video) or packets (audio) the container's index declares, per ffprobe."""
    p = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{kind}:0",
                        "-show_entries", "stream=nb_frames,codec_name", "-of", "json",
                        str(path)], capture_output=True, text=True)
    try:
        st = json.loads(p.stdout)["streams"][0]
        if kind == "a" and st.get("codec_name") != "aac":
            return None          # AAC: one packet = 1024 samples = one block
        return int(st["nb_frames"])
    except (KeyError, IndexError, ValueError, json.JSONDecodeError):
        return None


def data_lines(path: Path, header: bool) -> int | None:
    try:
        lines = [ln for ln in path.read_bytes().splitlines()
                 if ln.strip() and not ln.lstrip().startswith(b"#")]
    except OSError:
        return None
    if header and lines:
        first = lines[0].replace(b",", b" ").split()[0]
        try:
            float(first)
        except ValueError:
            lines = lines[1:]
    return len(lines)


def cue_blocks(path: Path) -> int | None:
    try:
        text = path.read_bytes().replace(b"\r\n", b"\n")
    except OSError:
        return None
    blocks = [b for b in text.split(b"\n\n") if b.strip()]
    if path.suffix == ".vtt":
        blocks = [b for b in blocks if b"-->" in b]
    return len(blocks)


def independent_count(stream: dict, base_dir: Path) -> int:
    """Records of one stream, counted without the project's decoders; a file that declares
    nothing readable counts as one record (the file itself)."""
    total = 0
    for f in stream["files"]:
        path = Path(f if isinstance(f, str) else f["path"])
        path = path if path.is_absolute() else base_dir / path
        n = None
        if not path.is_file():
            n = None
        elif stream["modality"] == "video" and path.suffix in (".txt", ".csv"):
            n = data_lines(path, header=True)
        elif stream["modality"] == "video":
            n = ffprobe_frames(path)
        elif stream["modality"] == "audio" and path.suffix == ".mp4":
            n = ffprobe_frames(path, "a")
        elif stream["modality"] == "audio" and path.suffix == ".wav":
            frames = riff_frames(path)
            n = None if frames is None else math.ceil(frames / BLOCK)
        elif stream["modality"] == "text" and path.suffix in (".srt", ".vtt"):
            n = cue_blocks(path)
        elif stream["modality"] in ("text", "sensor") and path.suffix == ".jsonl":
            n = data_lines(path, header=False)
        elif stream["modality"] == "sensor" and path.suffix == ".csv":
            n = data_lines(path, header=True)
        total += 1 if n is None else n
    return total


# ------------------------------------------------------------------ damage helpers

def stream(m: dict, sid: str) -> dict:
    return next(s for s in m["streams"] if s["id"] == sid)


def cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    replace(path, data[:int(len(data) * fraction)])


def garble(path: Path, start: float, length: int, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * start)
    data[i:i + length] = np.random.default_rng(seed).integers(0, 256, length, np.uint8).tobytes()
    replace(path, bytes(data))


def edit_lines(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    replace(path, ("\n".join(fn(lines)) + "\n").encode())


def float_wav(path: Path, poison: float | None, at: int = 3000, rate: int = 8000) -> None:
    x = (0.1 * np.sin(np.arange(4 * rate) * 0.05)).astype(np.float32)
    if poison is not None:
        x[at:at + 10] = poison
    path.unlink(missing_ok=True)
    sf.write(str(path), x, rate, subtype="FLOAT")


def sensor_rows(path: Path, rows: dict[int, str]) -> None:
    """Replace data rows (0-based, after the header) of a sensor CSV."""
    def fn(lines):
        for i, text in rows.items():
            lines[i + 1] = text
        return lines
    edit_lines(path, fn)


def srt_cue(path: Path, index: int, timing: str | None = None, text: bytes | None = None
            ) -> None:
    raw = path.read_bytes().replace(b"\r\n", b"\n").strip(b"\n").split(b"\n\n")
    lines = raw[index].split(b"\n")
    if timing is not None:
        lines[1] = timing.encode()
    if text is not None:
        lines[2:] = [text]
    raw[index] = b"\n".join(lines)
    replace(path, b"\n\n".join(raw) + b"\n")
