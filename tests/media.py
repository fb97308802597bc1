"""Media the tests write at test time, in one place: test-pattern videos (ffmpeg), tones (sox),
speech (espeak-ng), PNG bytes and single-image index files, sensor CSVs, SRT subtitles, a
textured scene for registration, and the synthetic sync recording (one set of random events
heard, seen and felt by devices on their own clocks).

Each generator writes exactly what the copies it replaced wrote (same tool arguments, same
bytes), so a test's data did not change when it moved here. Generators used by one test only
stay in that test.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf

NS = 1_000_000_000


# ---------------------------------------------------------------- files from command-line tools

def ffmpeg_testsrc(path: Path, seconds: float, *, pattern: str = "testsrc",
                   size: str = "160x120", rate: int = 25, pix_fmt: str | None = "yuv420p",
                   gop: int | None = None, faststart: bool = False) -> Path:
    """An H.264 file of an ffmpeg lavfi test pattern (``testsrc``, ``testsrc2``, ``smptebars``)
    of ``seconds`` at ``rate`` frames per second; the container follows ``path``'s suffix.
    ``pix_fmt=None`` leaves the choice to ffmpeg (yuv444p for these RGB patterns)."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
           f"{pattern}=size={size}:rate={rate}", "-t", str(seconds), "-c:v", "libx264"]
    if gop is not None:
        cmd += ["-g", str(gop)]
    if pix_fmt is not None:
        cmd += ["-pix_fmt", pix_fmt]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def sox_tone(path: Path, seconds: float, *freqs: int, channels: int = 1,
             rate: int = 16000) -> Path:
    """A 16-bit WAV of sine tones from sox: one frequency per channel (the last one repeats)."""
    sines = [x for f in freqs for x in ("sine", str(f))]
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", str(path),
                    "synth", str(seconds), *sines], check=True)
    return path


def espeak_wav(path: Path, text: str) -> Path:
    """Real speech: ``text`` spoken by espeak-ng into a WAV (22.05 kHz mono)."""
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


# ---------------------------------------------------------------- images

def png_bytes(level: int = 0, width: int = 8, height: int = 8) -> bytes:
    """A PNG (OpenCV's encoder) of a flat colour image, every channel at ``level``."""
    return cv2.imencode(".png", np.full((height, width, 3), level, np.uint8))[1].tobytes()


def one_image_index(folder: Path, times, *, index: str = "index.txt", image: str = "f.png",
                    header: str | None = None) -> Path:
    """An image-sequence index whose lines ``<time> <image>`` all name one black 8x8 PNG in
    ``folder``; ``header``: a first line. Returns the index path."""
    (folder / image).write_bytes(png_bytes())
    path = folder / index
    path.write_text((f"{header}\n" if header is not None else "")
                    + "".join(f"{t} {image}\n" for t in times))
    return path


def texture(w: int, h: int, seed: int) -> np.ndarray:
    """A cluttered colour scene: random discs and boxes plus fine blurred noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(int(400 * w * h / 800_000)):
        c = tuple(int(x) for x in rng.integers(0, 256, 3))
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(img, p, int(rng.integers(3, 40)), c, -1)
        else:
            q = (p[0] + int(rng.integers(5, 60)), p[1] + int(rng.integers(5, 60)))
            cv2.rectangle(img, p, q, c, -1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w)).astype(np.float32), (0, 0), 2)
    return np.clip(img + noise[..., None], 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- text files

def sensor_csv(path: Path, t_ns, **channels) -> Path:
    """A sensor CSV: header ``t_ns,<channel>,...``, then one row per time, values as Python
    prints them."""
    rows = zip(t_ns, *channels.values(), strict=True)
    path.write_text(",".join(["t_ns", *channels]) + "\n"
                    + "".join(",".join(f"{v}" for v in row) + "\n" for row in rows))
    return path


def _srt_time(ms: int) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def write_srt(path: Path, cues: list[tuple[int, int, str]]) -> Path:
    """An SRT file of ``(start_ms, end_ms, text)`` cues, numbered from 1, one blank line
    between cues."""
    path.write_text("\n".join(f"{i + 1}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n"
                              for i, (a, b, text) in enumerate(cues)))
    return path


# ---------------------------------------------------------------- the synthetic sync recording
# A device with clock (offset, drift) records true time ``t_true = offset + (1 + drift) * t_dev``.
# The same random events (impacts, speech cues) are rendered into a WAV read back, an H.264 video
# and IMU samples, each on its own device clock (tests/unit/clock/).

@dataclass(frozen=True)
class Clock:
    offset_s: float
    drift_ppm: float

    def true(self, t_dev_s):
        return self.offset_s + (1 + self.drift_ppm * 1e-6) * np.asarray(t_dev_s, np.float64)

    def dev(self, t_true_s):
        return (np.asarray(t_true_s, np.float64) - self.offset_s) / (1 + self.drift_ppm * 1e-6)


def expected_map(dev: Clock, ref: Clock, t_dev_s):
    """Where the stream's device times fall on the reference device's clock."""
    return ref.dev(dev.true(t_dev_s))


def make_events(seed: int, start_s: float = 100.0, duration_s: float = 40.0, n: int = 30,
                min_gap_s: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    free = duration_s - 2.0 - n * min_gap_s
    return start_s + 1.0 + np.sort(rng.uniform(0, free, n)) + np.arange(n) * min_gap_s


def make_audio(path: Path, events: np.ndarray, clock: Clock, start_s: float, duration_s: float,
               sr: int = 16000, seed: int = 0) -> tuple[float, np.ndarray]:
    """Tone-burst clicks at the events, written as 16-bit WAV and read back.
    Returns (device time of sample 0 in s, the PCM read back)."""
    rng = np.random.default_rng(seed)
    t_dev0 = float(np.round(clock.dev(start_s), 3))
    t_true = clock.true(t_dev0 + np.arange(int(duration_s * sr)) / sr)
    x = 0.01 * rng.standard_normal(len(t_true))
    for e in events:
        k = np.searchsorted(t_true, e)
        seg = t_true[k:k + int(0.08 * sr)] - e
        x[k:k + len(seg)] += 0.6 * np.sin(2 * np.pi * 900 * seg) * np.exp(-seg / 0.02)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    pcm, sr_read = sf.read(path, dtype="float32")
    assert sr_read == sr
    return t_dev0, pcm


def make_speech(path: Path, cues_true: np.ndarray, clock: Clock, start_s: float,
                duration_s: float, sr: int = 16000, seed: int = 0) -> tuple[float, np.ndarray]:
    """Syllable-modulated band noise during each (start, end) cue, quiet noise elsewhere."""
    rng = np.random.default_rng(seed)
    t_dev0 = float(np.round(clock.dev(start_s), 3))
    t_true = clock.true(t_dev0 + np.arange(int(duration_s * sr)) / sr)
    x = 0.003 * rng.standard_normal(len(t_true))
    voice = np.convolve(rng.standard_normal(len(t_true)), np.ones(8) / 8, mode="same")
    syll = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t_true)
    on = np.zeros(len(t_true), bool)
    for s, e in cues_true:
        on |= (t_true >= s) & (t_true < e)
    x += np.where(on, 0.5 * voice * syll, 0.0)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    pcm, _ = sf.read(path, dtype="float32")
    return t_dev0, pcm


def make_cues(seed: int, start_s: float, duration_s: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cues, t = [], start_s + 0.5
    while True:
        s = t + rng.uniform(0.4, 1.5)
        e = s + rng.uniform(0.8, 2.5)
        if e > start_s + duration_s - 0.5:
            return np.array(cues)
        cues.append((s, e))
        t = e


def make_imu(events: np.ndarray, clock: Clock, start_s: float, duration_s: float,
             rate: float = 200.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Accelerometer (gravity + noise + decaying impacts) with jittered int64 ns timestamps."""
    rng = np.random.default_rng(seed)
    t_dev = clock.dev(start_s) + np.arange(int(duration_s * rate)) / rate
    t_true = clock.true(t_dev)
    acc = np.tile([0.0, 0.0, 9.81], (len(t_dev), 1)) + 0.03 * rng.standard_normal(
        (len(t_dev), 3))
    acc += 0.2 * np.sin(2 * np.pi * 0.2 * t_true)[:, None]       # slow body motion
    for e in events:
        dt = t_true - e
        m = (dt >= 0) & (dt < 0.1)
        direction = rng.standard_normal(3)
        acc[m] += 4.0 * np.exp(-dt[m] / 0.012)[:, None] * direction / np.linalg.norm(direction)
    t_ns = np.rint(t_dev * NS + rng.normal(0, 3e5, len(t_dev))).astype(np.int64)
    return np.sort(t_ns), acc


def make_video(path: Path, events: np.ndarray, clock: Clock, start_s: float,
               duration_s: float, fps: int = 30, seed: int = 0) -> np.ndarray:
    """H.264 video whose picture switches to a new random pattern at each event. Frame k has
    container time k / fps = device time - t_dev0; returns the device times (s) of frames."""
    rng = np.random.default_rng(seed)
    t_dev0 = float(np.round(clock.dev(start_s), 3))
    t_dev = t_dev0 + np.arange(int(duration_s * fps)) / fps
    state = np.searchsorted(events, clock.true(t_dev), side="right")
    patterns = rng.integers(30, 220, (len(events) + 1, 6, 8)).astype(np.uint8)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = {"crf": "18"}
        for k, s in enumerate(state):
            img = np.kron(patterns[s], np.ones((8, 8), np.uint8))
            frame = av.VideoFrame.from_ndarray(np.dstack([img] * 3), format="rgb24")
            frame.pts = k
            for pkt in vs.encode(frame):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
    return t_dev


def decode_grey(path: Path, width: int = 32, height: int = 24):
    """(frame device times relative to the container start in ns, [k, h, w] grey frames) of a
    ``make_video`` file: the luma plane, area-downscaled."""
    ts, frames = [], []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        for f in c.decode(vs):
            ts.append(round(float(f.pts * vs.time_base) * NS))
            p = f.planes[0]
            y = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
            frames.append(cv2.resize(y, (width, height), interpolation=cv2.INTER_AREA))
    return np.array(ts, np.int64), np.stack(frames)
