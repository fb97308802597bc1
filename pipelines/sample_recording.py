"""A synthetic multimodal recording with known ground truth: ``generate_recording``.

A hidden world on the true (reference) time axis -- a corner-rich textured plane with moving
objects, impacts ("events") and speech-like tone bursts -- is sampled by six streams, each on
its own device clock ``t_dev = (t_true - offset) / (1 + drift)`` (transforms/clock.py inverted):

    cam0.mp4            H.264 + AAC, the reference clock; jittered VFR pts, dropped frames
    cam1/               PNG sequence + timestamps.txt: the plane seen through homography H
    mic.wav             PCM16 mono microphone
    transcript.srt      subtitle cues timing the speech segments
    imu.csv             t_ns,ax,ay,az,gx,gy,gz: gravity + motion + noise
    manifest.yaml, calibration.yaml, ground_truth.json, README.txt

Every event shows in all streams at once (flash + jolt, click, acceleration spike): that is what
DTW-sync recovers clock models from. ``bad_records`` plants known bad records for the decode and
validate stages; ground_truth.json lists them with the stage that must reject them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
import yaml

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.names import RULE, is_name

GENERATOR_VERSION = 1
STREAM_CLOCKS = ("cam1", "mic", "imu", "transcript")   # cam0 is the reference (identity)
DEFAULT_CLOCKS: dict[str, dict] = {
    "cam1": {"offset_ns": 120_000_000, "drift_ppm": 25.0},
    "mic": {"offset_ns": 350_000_000, "drift_ppm": 40.0},
    "imu": {"offset_ns": -800_000_000, "drift_ppm": -60.0},
    "transcript": {"offset_ns": 500_000_000, "drift_ppm": 0.0},
}
CAM1_FPS = 20.0
CAM0_AUDIO_RATE = 48_000
VIDEO_TIME_BASE = Fraction(1, 90_000)
PTS_STEP = 9                  # pts are multiples of 9/90000 s = 100 us, so t_ns is exact
PTS_STEP_NS = 100_000
IMU_CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")
GRAVITY = 9.81
CAM0_JITTER_S, CAM1_JITTER_S, IMU_JITTER_S = 0.002, 0.001, 0.00002
CLICK_S, SPIKE_S, FLASH_S = 0.15, 0.3, 0.6   # how long an event's trace lasts per modality
MIN_DURATION_S, MAX_DURATION_S = 4.0, 3600.0


# -- parameters ----------------------------------------------------------------------------

def _rng(seed: int, part: str) -> np.random.Generator:
    """One independent generator per part: changing one part never shifts another's numbers."""
    return np.random.default_rng([seed, zlib.crc32(part.encode())])


def clock_models(clocks: dict | None = None) -> dict[str, ClockModel]:
    """Clock model per stream: the defaults, each replaced whole by an entry of ``clocks``."""
    specs = {k: dict(v) for k, v in DEFAULT_CLOCKS.items()}
    for name, spec in (clocks or {}).items():
        if name == "cam0":
            raise ValueError("clocks['cam0']: cam0 is the reference clock (offset 0, drift 0); "
                             "remove it")
        if name not in STREAM_CLOCKS:
            raise ValueError(f"clocks: unknown stream {name!r}; use one of {list(STREAM_CLOCKS)}")
        if not isinstance(spec, dict) or set(spec) - {"offset_ns", "drift_ppm"}:
            raise ValueError(f"clocks[{name!r}] must be a mapping with keys offset_ns and/or "
                             f"drift_ppm, got {spec!r}")
        specs[name] = {"offset_ns": spec.get("offset_ns", 0), "drift_ppm": spec.get("drift_ppm", 0)}
    models = {"cam0": ClockModel.declared(0, 0.0)}
    for name, spec in specs.items():
        off, ppm = spec["offset_ns"], spec["drift_ppm"]
        if isinstance(off, bool) or not isinstance(off, (int, np.integer)) or abs(off) > 60e9:
            raise ValueError(f"clocks[{name!r}].offset_ns must be an integer within +-60 s of "
                             f"nanoseconds, got {off!r}")
        if isinstance(ppm, bool) or not isinstance(ppm, (int, float)) or not abs(ppm) <= 1000:
            raise ValueError(f"clocks[{name!r}].drift_ppm must be a number within +-1000, "
                             f"got {ppm!r}")
        models[name] = ClockModel.declared(int(off), float(ppm))
    return models


def _check_params(duration_s, size, fps, imu_hz, mic_rate, session) -> None:
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration_s={duration_s} must be within "
                         f"[{MIN_DURATION_S}, {MAX_DURATION_S}] s")
    if (len(size) != 2 or any(int(s) != s or s < 64 or s > 4096 or s % 2 for s in size)):
        raise ValueError(f"size={size!r} must be (width, height), even integers in [64, 4096] "
                         f"(H.264 yuv420p needs even sides)")
    if not 5.0 <= fps <= 120.0:
        raise ValueError(f"fps={fps} must be within [5, 120]")
    if not 100.0 <= imu_hz <= 1000.0:
        raise ValueError(f"imu_hz={imu_hz} must be within [100, 1000]")
    if int(mic_rate) != mic_rate or not 8000 <= mic_rate <= 48000:
        raise ValueError(f"mic_rate={mic_rate} must be an integer within [8000, 48000] Hz")
    if not is_name(session):
        raise ValueError(f"session={session!r} is not a valid name; {RULE}")


# -- the hidden world ----------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """The scene on the true time axis: times in seconds (float64), geometry in plane pixels."""
    t0_s: float                 # first true instant every stream covers
    duration_s: float
    events_s: np.ndarray        # impact times
    strength: np.ndarray        # impact strengths in [0.6, 1]
    accel_dir: np.ndarray       # (n_events, 3) unit vectors of the acceleration spike
    gyro_dir: np.ndarray        # (n_events, 3) unit vectors of the gyro spike
    speech_s: np.ndarray        # (n_segments, 2) true [start, end]
    speech_f0: np.ndarray       # pitch per segment, Hz
    texture: np.ndarray         # the plane, BGR uint8
    view0: tuple[int, int]      # cam0 sees texture[y0:y0+h, x0:x0+w]; this is (x0, y0)
    size: tuple[int, int]       # (w, h) of both cameras
    objects: np.ndarray         # (k, 8): cx, cy, ax, ay, fx, fy, phase, radius
    colors: np.ndarray          # (k, 3) BGR
    plane_to_cam1: np.ndarray   # 3x3 homography, plane pixel -> cam1 pixel

    @property
    def cam0_to_cam1(self) -> np.ndarray:
        x0, y0 = self.view0
        h = self.plane_to_cam1 @ np.array([[1.0, 0, x0], [0, 1, y0], [0, 0, 1]])
        return h / h[2, 2]


def _texture(rng: np.random.Generator, width: int, height: int, scale: float) -> np.ndarray:
    """Multi-scale noise plus many hard-edged shapes: rich in corners for feature matching."""
    img = np.full((height, width, 3), 128.0, np.float32)
    for cell, amp in ((48, 90.0), (12, 50.0), (4, 18.0)):
        cell = max(2, int(cell * scale))
        small = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        img += amp * (cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) - 0.5)
    img = np.clip(img, 0, 255).astype(np.uint8)
    area = width * height / (320 * 240)
    for _ in range(int(50 * area)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        dx, dy = rng.integers(4, int(30 * scale) + 5, size=2)
        cv2.rectangle(img, (int(x), int(y)), (int(x + dx), int(y + dy)),
                      rng.integers(0, 256, 3).tolist(), -1)
    for _ in range(int(25 * area)):
        pts = (rng.random((3, 2)) * 40 * scale + rng.random(2) * (width, height)).astype(np.int32)
        cv2.fillConvexPoly(img, pts, rng.integers(0, 256, 3).tolist())
    for _ in range(int(12 * area)):
        x, y = int(rng.integers(0, width - 24)), int(rng.integers(0, height - 24))
        sq = int(rng.integers(3, 7))
        yy, xx = np.mgrid[0:4 * sq, 0:4 * sq]
        board = (((yy // sq) + (xx // sq)) % 2 * 255).astype(np.uint8)[..., None]
        img[y:y + 4 * sq, x:x + 4 * sq] = board[: height - y, : width - x]
    return img


def _events(rng: np.random.Generator, t0: float, dur: float) -> np.ndarray:
    """Impact times, ~1.4 per second, at least 0.45 s apart, 0.5 s clear of both ends."""
    out, t = [], t0 + 0.5 + rng.uniform(0.0, 0.3)
    while t < t0 + dur - 0.5:
        out.append(round(t * 1e9) / 1e9)
        t += rng.uniform(0.45, 0.95)
    return np.array(out)


def _speech(rng: np.random.Generator, t0: float, dur: float, clock: ClockModel) -> np.ndarray:
    """Speech segments of 0.4-2 s; their transcript-clock times are whole ms (SRT resolution)."""
    segs, t = [], t0 + 0.3 + rng.uniform(0.0, 0.4)
    while True:
        d = rng.uniform(0.4, 2.0)
        if t + d > t0 + dur - 0.3:
            break
        segs.append((t, t + d))
        t += d + rng.uniform(0.6, 1.6)
    true_ns = np.rint(np.array(segs) * 1e9).astype(np.int64)
    dev_ms = np.rint(clock.to_dev(true_ns) / 1e6).astype(np.int64)
    return clock.to_ref(dev_ms * 1_000_000) / 1e9


def make_world(seed: int, t0_s: float, duration_s: float, size: tuple[int, int],
               transcript_clock: ClockModel) -> World:
    w, h = size
    scale = min(w, h) / 240.0
    mx, my = w // 4, h // 4
    ev = _rng(seed, "events")
    events = _events(ev, t0_s, duration_s)
    n = len(events)

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    strength = ev.uniform(0.6, 1.0, n)
    # impacts push mostly along gravity (a knock on a table), so |a| spikes clearly too
    vertical = np.column_stack([np.zeros((n, 2)), 2.0 * ev.choice([-1.0, 1.0], n)])
    accel_dir = unit(ev.normal(size=(n, 3)) + vertical)
    gyro_dir = unit(ev.normal(size=(n, 3)))
    sp = _rng(seed, "speech")
    speech = _speech(sp, t0_s, duration_s, transcript_clock)
    f0 = sp.uniform(110.0, 230.0, len(speech))

    tx = _rng(seed, "texture")
    texture = _texture(tx, w + 2 * mx, h + 2 * my, scale)
    k = 4
    ob = _rng(seed, "objects")
    objects = np.column_stack([
        mx + ob.uniform(0.3, 0.7, k) * w, my + ob.uniform(0.3, 0.7, k) * h,
        ob.uniform(0.1, 0.25, k) * w, ob.uniform(0.1, 0.25, k) * h,
        ob.uniform(0.05, 0.3, k), ob.uniform(0.05, 0.3, k), ob.uniform(0, 2 * np.pi, k),
        ob.uniform(8, 18, k) * scale])
    colors = np.array([[40, 40, 230], [230, 60, 40], [40, 220, 40], [20, 220, 240]])

    g = _rng(seed, "geometry")
    corners0 = np.array([[mx, my], [mx + w - 1, my], [mx + w - 1, my + h - 1], [mx, my + h - 1]],
                        np.float64)
    angle = np.deg2rad(g.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = corners0.mean(axis=0)
    quad = (corners0 - centre) @ rot.T * g.uniform(0.85, 1.05) + centre
    quad += g.uniform(-0.06, 0.06, 2) * (w, h) + g.uniform(-0.07, 0.07, (4, 2)) * min(w, h)
    quad = np.clip(quad, 2, (w + 2 * mx - 3, h + 2 * my - 3))
    rect = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    plane_to_cam1 = cv2.getPerspectiveTransform(quad.astype(np.float32), rect.astype(np.float32))
    return World(t0_s=t0_s, duration_s=duration_s, events_s=events, strength=strength,
                 accel_dir=accel_dir, gyro_dir=gyro_dir, speech_s=speech, speech_f0=f0,
                 texture=texture, view0=(mx, my), size=(w, h), objects=objects, colors=colors,
                 plane_to_cam1=plane_to_cam1.astype(np.float64))


def render_plane(world: World, t_s: float) -> np.ndarray:
    """The plane at true time ``t_s``: texture, moving objects, and at events a jolt + flash."""
    canvas = world.texture.copy()
    dt = t_s - world.events_s
    on = (dt >= 0) & (dt < FLASH_S)
    d, g = dt[on], world.strength[on]
    flash = float(np.sum(g * np.exp(-d / 0.07)))
    jolt = np.sum((g * np.exp(-d / 0.12) * np.cos(2 * np.pi * 7 * d))[:, None]
                  * world.accel_dir[on, :2], axis=0) if on.any() else np.zeros(2)
    scale = world.size[1] / 240.0
    for i, (cx, cy, ax, ay, fx, fy, ph, r) in enumerate(world.objects):
        x = cx + ax * np.sin(2 * np.pi * fx * t_s + ph) + 30 * scale * jolt[0] * (i + 1) / 2
        y = cy + ay * np.sin(2 * np.pi * fy * t_s + 2 * ph) + 30 * scale * jolt[1] * (i + 1) / 2
        color = world.colors[i % len(world.colors)].tolist()
        if i % 2 == 0:
            cv2.circle(canvas, (round(x * 16), round(y * 16)), round(r * 16), color, -1,
                       cv2.LINE_AA, shift=4)
        else:
            box = cv2.boxPoints(((x, y), (2 * r, 2 * r), np.rad2deg(t_s * (1 + fx))))
            cv2.fillConvexPoly(canvas, np.rint(box * 16).astype(np.int32), color,
                               cv2.LINE_AA, shift=4)
    if flash > 0:
        v = min(255.0, 110.0 * flash)
        canvas = cv2.add(canvas, np.full_like(canvas, round(v)))
    return canvas


def cam0_view(world: World, plane: np.ndarray) -> np.ndarray:
    x0, y0 = world.view0
    w, h = world.size
    return np.ascontiguousarray(plane[y0:y0 + h, x0:x0 + w])


def cam1_view(world: World, plane: np.ndarray) -> np.ndarray:
    return cv2.warpPerspective(plane, world.plane_to_cam1, world.size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)


def world_audio(world: World, t_s: np.ndarray) -> np.ndarray:
    """The sound at true times ``t_s`` (sorted seconds): clicks at events, voiced bursts."""
    out = np.zeros(t_s.shape, np.float64)
    for te, g in zip(world.events_s, world.strength):
        i0, i1 = np.searchsorted(t_s, (te, te + CLICK_S))
        dt = t_s[i0:i1] - te
        out[i0:i1] += g * (0.5 * np.exp(-dt / 0.012) * (0.6 * np.sin(2 * np.pi * 1700 * dt)
                                                        + 0.4 * np.sin(2 * np.pi * 3100 * dt))
                           + 0.3 * np.exp(-dt / 0.03) * np.sin(2 * np.pi * 180 * dt))
    w_vib = 2 * np.pi * 1.3
    for (s, e), f0 in zip(world.speech_s, world.speech_f0):
        i0, i1 = np.searchsorted(t_s, (s, e))
        dt = t_s[i0:i1] - s
        phase = 2 * np.pi * f0 * (dt - 0.06 / w_vib * (np.cos(w_vib * dt) - 1))  # f0 +-6 %
        tone = (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * np.sin(3 * phase)
                + 0.2 * np.sin(4 * phase)) / 2.0
        syllables = 0.3 + 0.7 * (0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * dt))
        fade = np.clip(np.minimum(dt, (e - s) - dt) / 0.015, 0, 1)
        out[i0:i1] += 0.3 * tone * syllables * fade
    return out


def world_imu(world: World, t_s: np.ndarray) -> np.ndarray:
    """(n, 6) ax, ay, az [m/s^2], gx, gy, gz [rad/s] at true times ``t_s`` (sorted), noiseless."""
    tau = 2 * np.pi
    out = np.column_stack([
        0.3 * np.sin(tau * 0.23 * t_s), 0.25 * np.sin(tau * 0.31 * t_s + 1),
        GRAVITY + 0.15 * np.sin(tau * 0.17 * t_s + 2),
        0.05 * np.sin(tau * 0.19 * t_s), 0.04 * np.sin(tau * 0.27 * t_s + 1),
        0.03 * np.sin(tau * 0.13 * t_s + 2)])
    for te, g, a, r in zip(world.events_s, world.strength, world.accel_dir, world.gyro_dir):
        i0, i1 = np.searchsorted(t_s, (te, te + SPIKE_S))
        dt = t_s[i0:i1] - te
        shape = g * np.exp(-dt / 0.035) * np.cos(tau * 18 * dt)
        out[i0:i1, :3] += 15.0 * shape[:, None] * a
        out[i0:i1, 3:] += 3.0 * shape[:, None] * r
    return out


def _true_s(clock: ClockModel, t_dev_ns: np.ndarray) -> np.ndarray:
    """Exact float seconds of ClockModel.to_ref for fractional device times (audio samples)."""
    t = np.asarray(t_dev_ns, np.float64)
    return (t + clock.offset_ns + clock.drift * (t - clock.anchor_ns)) / 1e9


# -- the writers ---------------------------------------------------------------------------

def _columns(**cols) -> dict:
    return {k: [v.item() if hasattr(v, "item") else v for v in vals] for k, vals in cols.items()}


DEFAULT_START_TIME = "2026-01-01T09:00:00.000000Z"   # cam0.mp4's creation_time


def _write_cam0(path: Path, world: World, fps: float, rng: np.random.Generator,
                start_time: str | None = None) -> tuple[dict, dict]:
    n_slots = round(world.duration_s * fps)
    lead = CAM0_JITTER_S
    ticks = np.rint((world.t0_s + lead + np.arange(n_slots) / fps
                     + rng.uniform(-CAM0_JITTER_S, CAM0_JITTER_S, n_slots)) * 1e4).astype(np.int64)
    n_drop = max(1, round(world.duration_s / 4))
    bounds = np.linspace(3, n_slots - 3, n_drop + 1).astype(int)
    dropped = [int(rng.integers(a + 1, b - 1)) for a, b in itertools.pairwise(bounds)]
    kept = np.setdiff1d(np.arange(n_slots), dropped)
    pts = ticks[kept] * PTS_STEP
    t_ns = ticks[kept] * PTS_STEP_NS

    w, h = world.size
    rate = CAM0_AUDIO_RATE
    a_start = round(world.t0_s * rate)          # t0 is whole ms: exact ns
    n_audio = round(world.duration_s * rate)
    t_audio = (a_start + np.arange(n_audio)) / rate
    audio = 0.9 * world_audio(world, t_audio) + 0.003 * rng.standard_normal(n_audio)
    audio = np.clip(audio, -1, 1).astype(np.float32)

    with av.open(str(path), "w", format="mp4", options={"movie_timescale": "90000"}) as out:
        if start_time:          # what cameras write: the recording's wall-clock start
            out.metadata["creation_time"] = start_time
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={
            "bf": "0", "crf": "18", "preset": "veryfast", "g": str(int(2 * fps)),
            "threads": "1"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = VIDEO_TIME_BASE
        vs.codec_context.time_base = VIDEO_TIME_BASE
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "mono"
        aus.time_base = Fraction(1, rate)
        for p, t in zip(pts, t_ns):
            frame = av.VideoFrame.from_ndarray(cam0_view(world, render_plane(world, t / 1e9)),
                                               format="bgr24")
            frame.pts, frame.time_base = int(p), VIDEO_TIME_BASE
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        for i in range(0, n_audio, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, i:i + 1024]),
                                            format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, a_start + i, Fraction(1, rate)
            for pkt in aus.encode(af):
                out.mux(pkt)
        for pkt in aus.encode(None):
            out.mux(pkt)

    video = {
        "modality": "video", "file": path.name, "nominal_rate_hz": fps,
        "time_base": f"{VIDEO_TIME_BASE.numerator}/{VIDEO_TIME_BASE.denominator}",
        "codec": "h264", "size": list(world.size), "n_frames": len(kept),
        "dropped_slots": sorted(dropped),
        "frames": _columns(pos=np.arange(len(kept)), slot=kept, pts=pts, t_dev_ns=t_ns,
                           t_true_ns=t_ns)}
    audio_gt = {
        "modality": "audio", "file": path.name, "codec": "aac", "sample_rate": rate,
        "first_sample_pts": a_start, "first_sample_t_dev_ns": a_start * 1_000_000_000 // rate,
        "first_sample_t_true_ns": a_start * 1_000_000_000 // rate, "n_samples": n_audio,
        "note": "decoded AAC starts with the encoder's priming samples before first_sample_pts; "
                "decoded sample at pts p is the source sample at pts p"}
    return video, audio_gt


def _write_cam1(folder: Path, world: World, clock: ClockModel, rng: np.random.Generator,
                bad: bool) -> tuple[dict, list[dict]]:
    folder.mkdir(parents=True, exist_ok=True)
    n = int(world.duration_s * CAM1_FPS)
    dev0 = int(clock.to_dev([round(world.t0_s * 1e9)])[0])
    t_dev = dev0 + np.rint(CAM1_JITTER_S * 1e9 + np.arange(n) * 1e9 / CAM1_FPS
                           + rng.uniform(-CAM1_JITTER_S, CAM1_JITTER_S, n) * 1e9).astype(np.int64)
    t_true = clock.to_ref(t_dev)
    corrupt = int(n // 2 + rng.integers(-3, 4)) if bad else -1

    def png(k: int) -> bytes:
        ok, buf = cv2.imencode(".png", cam1_view(world, render_plane(world, t_true[k] / 1e9)),
                               [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode cam1 frame {k} as PNG")
        return buf.tobytes()

    lines, bad_records = [], []
    with ThreadPoolExecutor(max_workers=2) as pool:   # OpenCV releases the GIL; order kept
        images = list(pool.map(png, range(n)))
    for k, data in enumerate(images):
        name = f"{k:06d}.png"
        if k == corrupt:
            data = data[: len(data) // 3]
            bad_records.append({"stream": "cam1", "position": f"frame={k}", "stage": "decode",
                                "reason": "corrupt_image",
                                "detail": f"cam1/{name} is truncated to a third of its bytes"})
        (folder / name).write_bytes(data)
        lines.append(f"{t_dev[k]} {name}\n")
    (folder / "timestamps.txt").write_text("".join(lines), encoding="ascii")
    good = np.arange(n) != corrupt
    gt = {"modality": "video", "file": "cam1/timestamps.txt", "nominal_rate_hz": CAM1_FPS,
          "size": list(world.size), "n_frames": int(good.sum()),
          "homography_from": "cam0",
          "frames": _columns(pos=np.flatnonzero(good), t_dev_ns=t_dev[good],
                             t_true_ns=t_true[good])}
    return gt, bad_records


def _write_mic(path: Path, world: World, clock: ClockModel, rate: int,
               rng: np.random.Generator) -> dict:
    dev0 = int(clock.to_dev([round(world.t0_s * 1e9)])[0])
    n = round(world.duration_s * rate)
    t_dev = dev0 + np.arange(n) * (1e9 / rate)
    x = 0.8 * world_audio(world, _true_s(clock, t_dev)) + 0.004 * rng.standard_normal(n)
    pcm = np.rint(np.clip(x, -1, 1) * 32767).astype(np.int16)
    sf.write(str(path), pcm, rate, subtype="PCM_16", format="WAV")
    return {"modality": "audio", "file": path.name, "codec": "pcm_s16le", "sample_rate": rate,
            "first_sample_t_dev_ns": dev0,
            "first_sample_t_true_ns": int(clock.to_ref([dev0])[0]), "n_samples": n,
            "note": "the WAV has no timestamps: its first sample's device time is the manifest's "
                    "options.start_ns"}


def _fmt_row(t: int, v: np.ndarray) -> str:
    return f"{t}," + ",".join(f"{x:.6f}" for x in v) + "\n"


def _write_imu(path: Path, world: World, clock: ClockModel, hz: float,
               rng: np.random.Generator, bad: bool) -> tuple[dict, list[dict]]:
    n = int(world.duration_s * hz)
    period = 1e9 / hz
    dev0 = int(clock.to_dev([round(world.t0_s * 1e9)])[0])
    t_dev = dev0 + np.rint(IMU_JITTER_S * 1e9 + np.arange(n) * period
                           + rng.uniform(-IMU_JITTER_S, IMU_JITTER_S, n) * 1e9).astype(np.int64)
    t_true = clock.to_ref(t_dev)
    vals = world_imu(world, t_true / 1e9)
    vals += rng.normal(0, 1, vals.shape) * np.array([0.02, 0.02, 0.02, 0.005, 0.005, 0.005])

    # planted rows, at 20/40/60/80 % of the file: (sample index, kind)
    plan = dict(zip((int(n * f) for f in (0.2, 0.4, 0.6, 0.8)),
                    ("nan", "duplicate", "out_of_order", "non_numeric"))) if bad else {}
    lines, pos_valid, bad_records = ["t_ns," + ",".join(IMU_CHANNELS) + "\n"], [], []
    keep = np.ones(n, bool)

    def plant(stage, reason, detail):
        bad_records.append({"stream": "imu", "position": f"row={len(lines) - 1}", "stage": stage,
                            "reason": reason, "detail": detail})

    for k in range(n):
        kind = plan.get(k)
        if kind == "nan":
            v = vals[k].copy()
            v[1] = np.nan
            plant("validate", "non_finite", "ay is NaN")
            lines.append(_fmt_row(t_dev[k], v))
            keep[k] = False
            continue
        if kind == "non_numeric":
            plant("decode", "non_numeric", "gx is the text 'ERR'")
            cells = _fmt_row(t_dev[k], vals[k]).rstrip("\n").split(",")
            cells[4] = "ERR"
            lines.append(",".join(cells) + "\n")
            keep[k] = False
            continue
        pos_valid.append(len(lines) - 1)
        lines.append(_fmt_row(t_dev[k], vals[k]))
        if kind == "duplicate":
            plant("validate", "duplicate_timestamp", "copy of the previous row")
            lines.append(_fmt_row(t_dev[k], vals[k]))
        elif kind == "out_of_order":
            t_bad = int(t_dev[k] - period // 2)
            plant("validate", "out_of_order",
                  f"t_ns {t_bad} is half a period before the previous row's")
            lines.append(_fmt_row(t_bad, vals[k]))
    path.write_text("".join(lines), encoding="ascii")
    gt = {"modality": "sensor", "file": path.name, "nominal_rate_hz": hz,
          "channels": list(IMU_CHANNELS), "units": "m/s^2 (a*), rad/s (g*)",
          "rows": _columns(pos=pos_valid, t_dev_ns=t_dev[keep], t_true_ns=t_true[keep])}
    return gt, bad_records


def _srt_time(ns: int) -> str:
    ms = ns // 1_000_000
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _write_transcript(path: Path, world: World, clock: ClockModel,
                      bad: bool) -> tuple[dict, list[dict]]:
    true_ns = np.rint(world.speech_s * 1e9).astype(np.int64)
    dev_ms = np.rint(clock.to_dev(true_ns) / 1e6).astype(np.int64)
    # cue = (start_ms, end_ms, text bytes, bad kind or None); speech cues first
    cues = [(int(s), int(e), f"segment {i + 1}".encode(), None)
            for i, (s, e) in enumerate(dev_ms)]
    if bad:
        end_ms = int(np.rint(clock.to_dev([round((world.t0_s + world.duration_s) * 1e9)])[0]
                             / 1e6))
        gaps = list(zip(dev_ms[:, 1], list(dev_ms[1:, 0]) + [end_ms]))
        slots = {(len(gaps) - 1) // 3: [], (2 * (len(gaps) - 1)) // 3: []}
        kinds = ["invalid_utf8", "end_before_start"]
        if len(slots) == 1:
            slots[next(iter(slots))] = kinds
        else:
            for lst, kind in zip(slots.values(), kinds):
                lst.append(kind)
        for g, lst in slots.items():
            a, b = int(gaps[g][0]), int(gaps[g][1])
            for j, kind in enumerate(lst):
                start = a + (b - a) * (j + 1) // (len(lst) + 1)
                if kind == "invalid_utf8":
                    cues.append((start, start + 100, b"caf\xe9 au lait \xff", kind))
                else:
                    cues.append((start, start - 250, b"applause", kind))
    cues.sort(key=lambda c: c[0])
    body, valid, bad_records = [], [], []
    for pos, (s, e, text, kind) in enumerate(cues):
        body.append(f"{pos + 1}\n{_srt_time(s * 1_000_000)} --> {_srt_time(e * 1_000_000)}\n"
                    .encode() + text + b"\n\n")
        if kind is None:
            valid.append((pos, s * 1_000_000, e * 1_000_000, text.decode()))
        elif kind == "invalid_utf8":
            bad_records.append({"stream": "transcript", "position": f"cue={pos}",
                                "stage": "decode", "reason": "invalid_utf8",
                                "detail": "cue text is Latin-1 bytes, not UTF-8"})
        else:
            bad_records.append({"stream": "transcript", "position": f"cue={pos}",
                                "stage": "validate", "reason": "end_before_start",
                                "detail": "cue ends 250 ms before it starts"})
    path.write_bytes(b"".join(body))
    t_dev = np.array([v[1] for v in valid], np.int64)
    t_end = np.array([v[2] for v in valid], np.int64)
    gt = {"modality": "text", "file": path.name, "kind": "segment",
          "cues": _columns(pos=[v[0] for v in valid], t_dev_ns=t_dev, t_end_dev_ns=t_end,
                           t_true_ns=clock.to_ref(t_dev), t_end_true_ns=clock.to_ref(t_end),
                           text=[v[3] for v in valid])}
    return gt, bad_records


# -- manifest, calibration, ground truth ---------------------------------------------------

def _manifest(session: str, mic_start_ns: int, imu_hz: float,
              declare_clocks: bool) -> dict:
    streams = [
        {"id": "cam0", "modality": "video", "files": ["cam0.mp4"]},
        {"id": "cam0_audio", "modality": "audio", "files": ["cam0.mp4"], "clock": "cam0"},
        {"id": "cam1", "modality": "video", "files": ["cam1/timestamps.txt"]},
        {"id": "mic", "modality": "audio", "files": ["mic.wav"],
         "options": {"start_ns": mic_start_ns}},
        {"id": "transcript", "modality": "text", "files": ["transcript.srt"]},
        {"id": "imu", "modality": "sensor", "files": ["imu.csv"],
         "options": {"time_column": "t_ns", "time_unit": "ns", "channels": list(IMU_CHANNELS)}},
    ]
    if not declare_clocks:   # the pipeline must estimate these clocks from the signals
        sync = {"cam1": {"reference": "cam0"},
                "mic": {"reference": "cam0_audio"},
                "imu": {"reference": "cam0_audio", "channels": ["ax", "ay", "az"]},
                "transcript": {"reference": "cam0_audio"}}
        for s in streams:
            if s["id"] in sync:
                s["sync"] = {"method": "dtw", **sync[s["id"]]}
    return {
        "session": session,
        "calibration": "calibration.yaml",
        "streams": streams,
        "alignment": {
            "ticks": {"anchor": "cam0"},
            "bucket_s": 4.0,
            "policies": {
                "cam1": {"policy": "nearest", "tolerance_ms": round(500.0 / CAM1_FPS, 3)},
                "imu": {"policy": "interpolate", "max_gap_ms": round(4 * 1000.0 / imu_hz, 3)},
                "mic": {"policy": "audio_window", "window_ms": 200.0},
                "cam0_audio": {"policy": "audio_window", "window_ms": 200.0},
                "transcript": {"policy": "text_overlap"},
            },
        },
    }


def _json(obj, indent: int = 0) -> str:
    """Indented JSON with lists of scalars kept on one line (readable, still plain JSON)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}  {json.dumps(k)}: {_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and obj and any(isinstance(x, (dict, list)) for x in obj):
        return "[\n" + ",\n".join(f"{pad}  {_json(x, indent + 1)}" for x in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


README = """\
Synthetic recording {session} made by mmalign pipelines/sample_recording.py (seed {seed}).

A hidden scene on a true time axis -- a textured plane with moving objects, {n_events} impacts
and {n_speech} speech-like tone bursts -- recorded by six streams, each on its own clock
(t_dev = (t_true - offset) / (1 + drift)). Each impact shows in every stream at once: a flash
and jolt in the video, a click in the audio, an acceleration/gyro spike in the IMU.

  cam0.mp4            H.264 {w}x{h} ~{fps:g} fps (jittered pts, dropped frames) + AAC audio
                      (stream cam0_audio); cam0 is the reference clock
  cam1/               PNG frames + timestamps.txt ("<t_ns> <file>"), ~{cam1_fps:g} fps; the same
                      plane seen through homography H (cam0 pixel -> cam1 pixel)
  mic.wav             {mic_rate} Hz mono PCM16 microphone; first sample at device time
                      options.start_ns of the manifest
  transcript.srt      one cue per speech segment ("segment N"), hand-made subtitles clock
  imu.csv             t_ns,ax,ay,az,gx,gy,gz at {imu_hz:g} Hz
  manifest.yaml       the streams and how to align them (ticks = cam0 frames)
  calibration.yaml    {clock_note}
  ground_truth.json   true clocks, every valid sample's device and true time, events, H,
                      dropped frames and {n_bad} planted bad records with the stage that
                      must reject each
"""


def generate_recording(out_dir: str | Path, *, seed: int = 0, duration_s: float = 12.0,
                       size: tuple[int, int] = (320, 240), fps: float = 30.0,
                       imu_hz: float = 200.0, mic_rate: int = 16000,
                       clocks: dict | None = None, declare_clocks: bool = True,
                       bad_records: bool = True, session: str = "demo-001",
                       registration: bool = False, sync: dict | None = None,
                       start_time: str | None = DEFAULT_START_TIME) -> Path:
    """Write a recording with known ground truth into ``out_dir``; returns the manifest path.
    ``start_time`` (ISO 8601, UTC) is written as cam0.mp4's ``creation_time``, as cameras do:
    the session's wall-clock start (None: no tag).
    ``registration`` adds a ``registration:`` section (cam1 onto cam0) to the manifest.
    ``sync`` ({stream: {field: value}}, with ``declare_clocks=False``) overrides fields of the
    manifest's DTW-sync specs, e.g. ``{"cam1": {"reference": "cam0_audio"}}``."""
    _check_params(duration_s, tuple(size), fps, imu_hz, mic_rate, session)
    size = (int(size[0]), int(size[1]))
    models = clock_models(clocks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the first true instant at which every device clock reads >= 0, in whole ms
    t0_ms = max(0, max(-(-m.offset_ns // 1_000_000) for m in models.values()))
    world = make_world(seed, t0_ms / 1000.0, float(duration_s), size, models["transcript"])

    cam0, cam0_audio = _write_cam0(out / "cam0.mp4", world, fps, _rng(seed, "cam0"), start_time)
    cam1, bad_cam1 = _write_cam1(out / "cam1", world, models["cam1"], _rng(seed, "cam1"),
                                 bad_records)
    mic = _write_mic(out / "mic.wav", world, models["mic"], int(mic_rate), _rng(seed, "mic"))
    text, bad_text = _write_transcript(out / "transcript.srt", world, models["transcript"],
                                       bad_records)
    imu, bad_imu = _write_imu(out / "imu.csv", world, models["imu"], imu_hz, _rng(seed, "imu"),
                              bad_records)
    streams = {"cam0": cam0, "cam0_audio": cam0_audio, "cam1": cam1, "mic": mic,
               "transcript": text, "imu": imu}
    for sid, gt in streams.items():
        m = models["cam0" if sid == "cam0_audio" else sid]
        gt["clock"] = {"domain": "cam0" if sid == "cam0_audio" else sid,
                       "offset_ns": m.offset_ns, "drift_ppm": round(m.drift_ppm, 9),
                       "anchor_ns": 0}

    calib = {"clocks": {sid: {"offset_ns": models[sid].offset_ns,
                              "drift_ppm": round(models[sid].drift_ppm, 9)}
                        for sid in STREAM_CLOCKS}
             if declare_clocks else {}}
    (out / "calibration.yaml").write_text(
        "# clock models: t_ref = t_dev + offset + drift * t_dev (cam0 is the reference)\n"
        + yaml.safe_dump(calib, sort_keys=False), encoding="utf-8")
    manifest = _manifest(session, mic["first_sample_t_dev_ns"], imu_hz, declare_clocks)
    if registration:
        manifest["registration"] = {"reference": "cam0", "cameras": ["cam1"]}
    for s in manifest["streams"]:
        s.get("sync", {}).update((sync or {}).get(s["id"], {}))
    unknown = set(sync or {}) - {s["id"] for s in manifest["streams"] if "sync" in s}
    if unknown:
        raise ValueError(f"sync: streams {sorted(unknown)} have no sync spec (only "
                         f"{list(STREAM_CLOCKS)} do, with declare_clocks=False)")
    manifest_path = out / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")

    bad = bad_cam1 + bad_text + bad_imu
    truth = {
        "generator": {"module": "mmalign.pipelines.sample_recording", "version": GENERATOR_VERSION,
                      "params": {"seed": seed, "duration_s": float(duration_s),
                                 "size": list(size), "fps": fps, "imu_hz": imu_hz,
                                 "mic_rate": int(mic_rate), "declare_clocks": declare_clocks,
                                 "bad_records": bad_records, "session": session,
                                 "cam1_fps": CAM1_FPS, "cam0_audio_rate": CAM0_AUDIO_RATE,
                                 "clocks": {sid: {"offset_ns": models[sid].offset_ns,
                                                  "drift_ppm": round(models[sid].drift_ppm, 9)}
                                            for sid in STREAM_CLOCKS}}},
        "clock_formula": "t_true = t_dev + offset_ns + drift_ppm * 1e-6 * (t_dev - anchor_ns)",
        "true_start_ns": t0_ms * 1_000_000,
        "true_end_ns": t0_ms * 1_000_000 + round(duration_s * 1e9),
        "events_true_ns": [round(t * 1e9) for t in world.events_s],
        "event_strength": [round(float(g), 6) for g in world.strength],
        "speech_true_ns": [[round(s * 1e9), round(e * 1e9)] for s, e in world.speech_s],
        "homography_cam0_to_cam1": [[float(x) for x in row] for row in world.cam0_to_cam1],
        "streams": streams,
        "bad_records": bad,
    }
    (out / "ground_truth.json").write_text(_json(truth) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(README.format(
        session=session, seed=seed, n_events=len(world.events_s), n_speech=len(world.speech_s),
        w=size[0], h=size[1], fps=fps, cam1_fps=CAM1_FPS, mic_rate=mic_rate, imu_hz=imu_hz,
        n_bad=len(bad), clock_note="true clock offset/drift per stream" if declare_clocks else
        "no clocks: the manifest asks for DTW-sync instead"), encoding="utf-8")
    return manifest_path


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """The generator's options (all but the output folder), for its command lines:
    ``mmalign generate`` and ``python -m mmalign.pipelines.sample_recording``."""
    p.add_argument("--duration", type=float, default=12.0, help="seconds, 4 to 3600 (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--session", default="demo-001")
    p.add_argument("--undeclared-clocks", action="store_true",
                   help="leave clocks out of the calibration; the manifest asks for DTW-sync")
    p.add_argument("--no-bad-records", action="store_true", help="plant no bad records")
    p.add_argument("--registration", action="store_true",
                   help="add a registration section (cam1 onto cam0) to the manifest")
    p.add_argument("--start-time", default=DEFAULT_START_TIME,
                   help="the camera's creation_time: the session's wall-clock start (UTC)")


def generate_from_args(out_dir: str | Path, ns: argparse.Namespace) -> Path:
    """``generate_recording`` with the options of ``add_generate_arguments``."""
    return generate_recording(out_dir, seed=ns.seed, duration_s=ns.duration,
                              declare_clocks=not ns.undeclared_clocks,
                              bad_records=not ns.no_bad_records, session=ns.session,
                              registration=ns.registration, start_time=ns.start_time)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Write a synthetic multimodal recording with known ground truth "
                    "(manifest.yaml, media, ground_truth.json).")
    p.add_argument("out_dir")
    add_generate_arguments(p)
    a = p.parse_args(argv)
    try:
        path = generate_from_args(a.out_dir, a)
    except ValueError as e:
        p.error(str(e))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
