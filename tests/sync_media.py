"""Real-like media for the clock-sync tests and benchmarks, made at test time (nothing is
downloaded, no binary is committed):

- speech scenes: paragraphs spoken by espeak-ng (several voices, speeds, pitches) mixed with
  sounds made by sox (plucks, claps, chirps, thumps, whooshes) over a quiet noise floor;
- a separate audio recorder derived from a camera's track: band-limited resampling onto the
  recorder's own clock (rate, drift, offset), a one-pole low-pass (a different microphone)
  and noise (``recorder``);
- subtitles from our own forced alignment of the spoken text (``forced_alignment``: the
  aeneas method, espeak-ng templates aligned to the audio by DTW on MFCCs), cues touching;
- a camera turning smoothly in front of a real photo with a gyro on its own clock
  (``camera_imu``): frames rendered as the homography K R K^-1 of a smooth random rotation,
  encoded to H.264, gyro = the true angular rate in a rotated IMU frame + bias + noise.

Clocks follow tests/media.py ``Clock``: a device with (offset, drift) records reference time
``t_ref = offset + (1 + drift) * t_dev``.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numba
import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

NS = 1_000_000_000

PARAGRAPHS = [
    "The harbour was quiet that morning. A few boats rocked against the pier, and the smell "
    "of salt and diesel hung over the water. Nobody had expected the storm to pass so quickly.",
    "She opened the old notebook and turned the pages slowly. Every line was written in the "
    "same careful hand, with dates in the margin and small drawings of birds between them.",
    "To assemble the shelf, first lay all the panels on the floor. Check that you have eight "
    "screws, four brackets and the small key. Then fix the sides to the base, but do not "
    "tighten them yet.",
    "In the afternoon the market filled with people. Vendors called out their prices, children "
    "ran between the stalls, and somewhere a radio was playing an old song about the sea.",
    "Our measurements show that the temperature rose by two degrees over the last decade. "
    "The effect is strongest in the northern valleys, where the snow now melts three weeks "
    "earlier than it used to.",
    "He waited at the station for almost an hour. The train was late again, and the board "
    "kept changing its mind. When it finally arrived, it was nearly empty.",
    "Good evening, and welcome to the programme. Tonight we talk about bridges: how they are "
    "built, why some of them sway in the wind, and what engineers learned from the ones that "
    "fell.",
    "The recipe is simple. Melt the butter, add the flour, and stir until it smells of "
    "biscuits. Pour in the milk a little at a time, and keep stirring, or it will go lumpy.",
    "At the top of the hill there is a small chapel with a blue door. From there you can see "
    "the whole bay, the lighthouse, and on a clear day the mountains on the other side.",
    "Please remember to switch off your phones. The performance will last about ninety "
    "minutes, with one short interval. Thank you, and enjoy the evening.",
]
VOICES = [("en-us", 165, 45), ("en-gb", 150, 60), ("en-gb-scotland", 175, 40),
          ("en+f3", 160, 70), ("en-029", 145, 50), ("en-us+m3", 185, 35)]

SOUNDS = [  # sox synth effects (duration first)
    "synth 0.35 pluck {f} fade q 0.001 0.35 0.3",
    "synth 0.12 whitenoise fade q 0.002 0.12 0.1",
    "synth 0.6 sine {f}-{g} fade q 0.02 0.6 0.1",
    "synth 0.25 square {f} fade q 0.005 0.25 0.05 vol 0.3",
    "synth 0.8 pinknoise band {f} 300 fade q 0.05 0.8 0.3",
    "synth 0.4 brownnoise fade q 0.001 0.4 0.35",
]


# ---------------------------------------------------------------- tools


def espeak_pcm(text: str, sr: int, voice: str = "en-us", speed: int = 165,
               pitch: int = 50) -> np.ndarray:
    """``text`` spoken by espeak-ng (22.05 kHz), resampled to ``sr``, float32."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                        "-w", str(path), text], check=True, capture_output=True)
        x, r = sf.read(path, dtype="float64")
    g = np.gcd(int(sr), int(r))
    return resample_poly(x, sr // g, r // g).astype(np.float32)


def sox_pcm(effects: str, sr: int) -> np.ndarray:
    """A sound made by ``sox -n`` with these effects (``synth ...``), float32 mono at ``sr``."""
    p = subprocess.run(["sox", "-n", "-r", str(sr), "-c", "1", "-b", "32", "-e", "float",
                        "-t", "raw", "-", *effects.split()], check=True, capture_output=True)
    return np.frombuffer(p.stdout, np.float32).copy()


@dataclass(frozen=True)
class Scene:
    pcm: np.ndarray                 # float32 mono
    sr: int
    speech: list[tuple[float, float, int, tuple]]   # (start s, end s, paragraph, voice)
    sounds: list[tuple[float, str]]          # (start s, sox effects)


def speech_scene(seed: int, duration_s: float, sr: int = 48000,
                 paragraphs: list[int] | None = None, sound_every_s: float = 3.0,
                 floor_db: float = -50.0, lead_s: float = 0.0) -> Scene:
    """Paragraphs spoken one after the other by different voices (pauses of 0.6-2.5 s between
    them, the first after ``lead_s`` + 0.3-1 s), sox sounds at random times (one per
    ``sound_every_s`` on average, over speech or not), and a quiet noise floor,
    ``duration_s`` long; peak 0.7."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    x = np.zeros(n, np.float64)
    order = paragraphs if paragraphs is not None else list(rng.permutation(len(PARAGRAPHS)))
    t = lead_s + rng.uniform(0.3, 1.0)
    speech = []
    for k, p in enumerate(order * 4):
        voice, speed, pitch = VOICES[(seed + k) % len(VOICES)]
        how = (voice, speed + int(rng.integers(-10, 11)), pitch)
        s = espeak_pcm(PARAGRAPHS[p], sr, *how)
        i = int(t * sr)
        if i >= n:
            break
        seg = s[:n - i] * rng.uniform(0.5, 1.0)
        x[i:i + len(seg)] += seg
        speech.append((t, t + len(seg) / sr, int(p), how))
        t += len(s) / sr + rng.uniform(0.6, 2.5)
    sounds = []
    for _ in range(int(duration_s / sound_every_s)):
        at = rng.uniform(0, duration_s - 1.0)
        f, g = int(rng.integers(120, 900)), int(rng.integers(900, 3000))
        fx = SOUNDS[int(rng.integers(len(SOUNDS)))].format(f=f, g=g)
        s = sox_pcm(fx, sr) * rng.uniform(0.2, 0.8)
        i = int(at * sr)
        x[i:i + len(s)] += s[:n - i]
        sounds.append((at, fx))
    floor = sox_pcm(f"synth {duration_s + 0.1:.3f} brownnoise", sr)[:n]
    x += floor * 10 ** (floor_db / 20) / max(np.std(floor), 1e-9)
    x *= 0.7 / np.max(np.abs(x))
    return Scene(x.astype(np.float32), sr, speech, sounds)


# ---------------------------------------------------------------- forced alignment


def split_cues(text: str, max_words: int = 7) -> list[str]:
    """Subtitle-sized pieces of a paragraph: clauses (at . , ; : ! ?), longer ones cut into
    pieces of at most ``max_words`` words."""
    import re
    out = []
    for clause in re.findall(r"[^.,;:!?]+[.,;:!?]?", text):
        words = clause.split()
        while words:
            k = len(words) if len(words) <= max_words else min(max_words, len(words) // 2 + 1)
            out.append(" ".join(words[:k]))
            words = words[k:]
    return [c for c in out if c.strip(" .,;:!?")]


def mfcc(x: np.ndarray, sr: int, hop_s: float = 0.01, win_s: float = 0.025,
         n_mels: int = 40, n_coef: int = 13) -> np.ndarray:
    """MFCCs [frames, n_coef] (frame k centred at k * hop_s s): Hann STFT, mel filterbank,
    log, DCT-II; numpy only."""
    from scipy.fft import dct, rfft
    hop, win = int(round(hop_s * sr)), int(round(win_s * sr))
    nfft = 1 << (win - 1).bit_length()
    pad = np.pad(np.asarray(x, np.float64), (win // 2, win // 2))
    n = 1 + (len(pad) - win) // hop
    frames = np.lib.stride_tricks.as_strided(pad, (n, win), (pad.strides[0] * hop,
                                                             pad.strides[0]))
    spec = np.abs(rfft(frames * np.hanning(win), nfft)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)            # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(60), mel(min(8000, sr / 2)), n_mels + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(nfft, 1 / sr)
    fb = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, c, hi = edges[m:m + 3]
        fb[m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return dct(np.log(spec @ fb.T + 1e-10), norm="ortho", axis=1)[:, :n_coef]


@numba.njit(cache=True)
def _dtw_vec(a, b):
    n, m = a.shape[0], b.shape[0]
    D = np.full((n + 1, m + 1), np.inf)
    D[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d = 0.0
            for k in range(a.shape[1]):
                e = a[i - 1, k] - b[j - 1, k]
                d += e * e
            d = np.sqrt(d)
            D[i, j] = d + min(D[i - 1, j - 1], D[i - 1, j], D[i, j - 1])
    i, j = n, m
    pi, pj = [], []
    while i > 0 and j > 0:
        pi.append(i - 1)
        pj.append(j - 1)
        k = np.argmin(np.array([D[i - 1, j - 1], D[i - 1, j], D[i, j - 1]]))
        if k == 0:
            i, j = i - 1, j - 1
        elif k == 1:
            i -= 1
        else:
            j -= 1
    return np.array(pi[::-1]), np.array(pj[::-1])


def forced_alignment(scene: Scene, max_words: int = 7) -> list[tuple[float, float, str]]:
    """Subtitles of a speech scene from our own forced alignment (the aeneas method): each
    paragraph's cues are spoken one by one by espeak-ng with the paragraph's voice, their
    MFCCs aligned by DTW to the paragraph in the scene, and each cue boundary placed where the
    path sends the template's boundary. Cues touch: every cue ends where the next starts (a
    pause between them, inside a paragraph or between two, goes wherever the alignment puts
    the boundary). Returns (start s, end s, text) on the scene's time."""
    starts, texts = [], []
    end = 0.0
    for t0, t1, p, how in scene.speech:
        cues = split_cues(PARAGRAPHS[p], max_words)
        tpl = [espeak_pcm(c, scene.sr, *how) for c in cues]
        bounds = np.cumsum([0] + [len(x) for x in tpl]) / scene.sr
        a0 = max(0, int((t0 - 0.2) * scene.sr))
        real = scene.pcm[a0:int((t1 + 0.2) * scene.sr)]
        A, B = mfcc(real, scene.sr), mfcc(np.concatenate(tpl), scene.sr)
        mu, sd = A.mean(axis=0), A.std(axis=0) + 1e-9
        pi, pj = _dtw_vec((A - mu) / sd, (B - B.mean(axis=0)) / (B.std(axis=0) + 1e-9))
        for k, c in enumerate(cues):
            j = min(int(round(bounds[k] / 0.01)), pj[-1])
            i = np.median(pi[pj == j]) if np.any(pj == j) else pi[np.searchsorted(pj, j)]
            starts.append(a0 / scene.sr + i * 0.01)
            texts.append(c)
        jl = min(int(round(bounds[-1] / 0.01)), pj[-1])
        end = a0 / scene.sr + float(np.median(pi[pj == jl])) * 0.01
    ends = starts[1:] + [end]
    return [(s, e, t) for s, e, t in zip(starts, ends, texts)]


# ---------------------------------------------------------------- clock resampling


TABLE = 512          # kernel table entries per tap


@numba.njit(cache=True)
def _sinc_at(x, pos, half, table, out):
    n = x.shape[0]
    for j in range(pos.shape[0]):
        p = pos[j]
        k0 = int(np.floor(p))
        acc = 0.0
        for k in range(k0 - half + 1, k0 + half + 1):
            if k < 0 or k >= n:
                continue
            f = (p - k + half) * TABLE
            i = int(f)
            a = f - i
            acc += x[k] * (table[i] * (1.0 - a) + table[i + 1] * a)
        out[j] = acc
    return out


def resample_at(x: np.ndarray, sr_in: float, t_s: np.ndarray, cutoff_hz: float,
                half: int = 32, beta: float = 8.0) -> np.ndarray:
    """Band-limited values of ``x`` (sample k at k / sr_in s) at the times ``t_s`` (s):
    Kaiser-windowed sinc, ``half`` taps either side, low-pass at ``cutoff_hz``."""
    fc = cutoff_hz / sr_in
    u = np.arange(2 * half * TABLE + 2) / TABLE - half
    table = 2 * fc * np.sinc(2 * fc * u) * np.kaiser(2 * half * TABLE + 2, beta)
    pos = np.asarray(t_s, np.float64) * sr_in
    out = np.empty(len(pos), np.float64)
    return _sinc_at(np.asarray(x, np.float64), pos, half, table, out)


@dataclass(frozen=True)
class Clock:
    offset_s: float
    drift_ppm: float

    def ref(self, t_dev_s):
        return self.offset_s + (1 + self.drift_ppm * 1e-6) * np.asarray(t_dev_s, np.float64)

    def dev(self, t_ref_s):
        return (np.asarray(t_ref_s, np.float64) - self.offset_s) / (1 + self.drift_ppm * 1e-6)


def recorder(master: np.ndarray, sr_master: int, cam_start_s: float, clock: Clock, sr: int,
             duration_s: float, *, alpha: float = 0.35, noise_db: float = -45.0,
             gain: float = 0.8, seed: int = 0) -> np.ndarray:
    """A separate recorder beside a camera whose track is ``master`` from ``cam_start_s`` on
    (camera time = master time - cam_start_s = the reference clock). Sample m of the recorder
    is at device time m / sr, i.e. at camera time ``clock.ref(m / sr)``: the master is
    resampled there (band-limited), then a one-pole low-pass ``y += alpha * (x - y)``, gain
    and white noise at ``noise_db`` below full scale; float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t_dev = np.arange(int(round(duration_s * sr))) / sr
    t_master = cam_start_s + clock.ref(t_dev)
    if t_master[0] < 0 or t_master[-1] > len(master) / sr_master:
        raise ValueError("the recorder runs outside the master recording")
    y = resample_at(master, sr_master, t_master, 0.45 * min(sr, sr_master))
    y = lfilter([alpha], [1.0, alpha - 1.0], y) * gain
    y += rng.standard_normal(len(y)) * 10 ** (noise_db / 20)
    return np.clip(y, -1, 1).astype(np.float32)


def camera_mp4(path: Path, master: np.ndarray, sr: int, start_s: float, duration_s: float, *,
               size: str = "96x64", fps: int = 25, bitrate: str = "128k") -> Path:
    """A camera file: an H.264 test pattern and the AAC track ``master[start : start + dur]``
    (48 kHz), whose decoded samples start at container time 0."""
    seg = master[int(round(start_s * sr)):int(round((start_s + duration_s) * sr))]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        sf.write(wav, seg, sr, subtype="PCM_16")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc=size={size}:rate={fps}", "-i", str(wav), "-t",
                        f"{duration_s:.3f}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-b:a", bitrate, "-ar", "48000", str(path)],
                       check=True, capture_output=True)
    return path


def decode_track(path: Path) -> tuple[np.ndarray, int, float]:
    """(mono float32 samples, rate, time of the first in s) of a container's audio track, as
    PyAV decodes it (the way transforms/decode/audio.py does)."""
    out = []
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        t0 = None
        for fr in c.decode(st):
            if t0 is None:
                t0 = float((fr.pts or 0) * st.time_base)
            a = fr.to_ndarray()
            out.append(a.mean(axis=0) if a.ndim == 2 and a.shape[0] > 1 else a.reshape(-1))
        sr = st.codec_context.sample_rate
    return np.concatenate(out).astype(np.float32), sr, t0 or 0.0


# ---------------------------------------------------------------- camera and gyro


def _rot(axis_angle: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis_angle, np.float64).reshape(3, 1))[0]


@dataclass(frozen=True)
class Motion:
    """A smooth random camera orientation: Euler angles (yaw, pitch, roll), each a sum of
    sinusoids of 0.08-0.9 Hz with random phases (peak angles ``max_deg``)."""
    freqs: np.ndarray        # [3, k] Hz
    amps: np.ndarray         # [3, k] rad
    phases: np.ndarray       # [3, k]

    @classmethod
    def random(cls, seed: int, max_deg: float = 7.0, k: int = 5) -> Motion:
        rng = np.random.default_rng(seed)
        freqs = rng.uniform(0.08, 0.9, (3, k))
        amps = rng.uniform(0.3, 1.0, (3, k)) / freqs ** 0.5
        amps *= np.deg2rad(max_deg) / amps.sum(axis=1, keepdims=True)
        return cls(freqs, amps, rng.uniform(0, 2 * np.pi, (3, k)))

    def angles(self, t) -> np.ndarray:
        t = np.asarray(t, np.float64)[..., None, None]
        return np.sum(self.amps * np.sin(2 * np.pi * self.freqs * t + self.phases), axis=-1)

    def R(self, t: float) -> np.ndarray:
        """Camera-to-world rotation at true time t."""
        y, p, r = self.angles(t)
        return _rot([0, y, 0]) @ _rot([p, 0, 0]) @ _rot([0, 0, r])

    def omega(self, t: np.ndarray, h: float = 1e-4) -> np.ndarray:
        """Body-frame angular rate (rad/s) at true times ``t``: vee(R^T dR/dt)."""
        out = np.empty((len(t), 3))
        for i, ti in enumerate(np.asarray(t, np.float64)):
            dR = (self.R(ti + h) - self.R(ti - h)) / (2 * h)
            W = self.R(ti).T @ dR
            out[i] = (W[2, 1] - W[1, 2]) / 2, (W[0, 2] - W[2, 0]) / 2, (W[1, 0] - W[0, 1]) / 2
        return out


def render_rotation_video(path: Path, photo: np.ndarray, motion: Motion, fps: float,
                          duration_s: float, size: tuple[int, int] = (320, 240),
                          focal: float = 300.0, photo_focal: float = 480.0) -> np.ndarray:
    """H.264 video of a camera turning (``motion``) in front of ``photo`` (seen at infinity:
    each frame is the homography K_photo R K^-1 of the source), frame k at k / fps s of both
    the camera's clock and true time. Returns the frame times (s)."""
    w, h = size
    K = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]])
    ph, pw = photo.shape[:2]
    Ks = np.array([[photo_focal, 0, (pw - 1) / 2], [0, photo_focal, (ph - 1) / 2], [0, 0, 1]])
    Kinv = np.linalg.inv(K)
    times = np.arange(int(round(duration_s * fps))) / fps
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=round(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "20", "preset": "veryfast"}
        for k, t in enumerate(times):
            M = Ks @ motion.R(t) @ Kinv
            img = cv2.warpPerspective(photo, M, (w, h), flags=cv2.INTER_LINEAR |
                                      cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = k
            for pkt in vs.encode(frame):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
    return times


def gyro_csv(path: Path, motion: Motion, clock: Clock, rate_hz: float, t_dev0: float,
             duration_s: float, *, seed: int = 0, noise: float = 0.01,
             bias_max: float = 0.03) -> np.ndarray:
    """A gyro on its own clock: sample k at device time t_dev0 + k / rate (jittered 0.2 ms),
    i.e. at true time ``clock.ref(t_dev)``; the camera's angular rate in the gyro's frame (a
    random rotation from the camera's axes) + a constant bias + white noise. Columns t_ns, gx,
    gy, gz (rad/s). Returns the mounting rotation."""
    rng = np.random.default_rng(seed)
    mount = _rot(rng.normal(size=3) * 1.2)
    t_dev = t_dev0 + np.arange(int(round(duration_s * rate_hz))) / rate_hz
    t_dev = t_dev + rng.uniform(-2e-4, 2e-4, len(t_dev))
    w = motion.omega(clock.ref(t_dev)) @ mount.T
    w += rng.uniform(-bias_max, bias_max, 3) + rng.normal(0, noise, w.shape)
    t_ns = np.rint(np.sort(t_dev) * NS).astype(np.int64)
    lines = ["t_ns,gx,gy,gz"] + [f"{a},{x:.6f},{y:.6f},{z:.6f}" for a, (x, y, z) in zip(t_ns, w)]
    path.write_text("\n".join(lines) + "\n")
    return mount


# ---------------------------------------------------------------- the sync stage, in process


def features_in_process(manifest, declared: dict | None = None,
                        only: set[str] | None = None) -> dict:
    """The sync features of a manifest's streams ({(stream, rate): family -> Feature}; only
    those in ``only`` when given), made as the backfill makes them (every file decoded and
    validated, the sync stage's partials and features) without starting Beam."""
    from collections import defaultdict

    from mmalign.transforms.clock.sync import chunk_partial, plan_sync, stream_features
    from mmalign.transforms.decode.sources import valid_chunks

    plan = plan_sync(manifest, declared or {})
    parts: dict = defaultdict(list)
    wanted = set(plan.needs) if only is None else set(plan.needs) & set(only)
    for req, good in valid_chunks(manifest, wanted):
        need = plan.needs[req.stream.id]
        for rate in need.families:
            part = chunk_partial(good, need, rate)
            if part is not None:
                parts[(req.stream.id, rate)].append(part)
    feats = {}
    for (sid, rate), ps in parts.items():
        need = plan.needs[sid]
        feats[(sid, rate)] = stream_features(need.modality, rate, need.families[rate], ps)[0]
    return feats


def sync_in_process(manifest, declared: dict | None = None, features: dict | None = None,
                    stats: dict | None = None) -> dict:
    """{stream id: SyncResult} of a manifest's ``sync`` specs, computed as the backfill does
    (``features_in_process``, then the sync stage's estimates) without starting Beam;
    ``features`` (of an earlier call, for the same streams) are reused when given."""
    from mmalign.transforms.clock.sync import plan_sync, sync_session

    plan = plan_sync(manifest, declared or {})
    feats = features if features is not None else features_in_process(manifest, declared)
    return {r.stream_id: r for r in sync_session(plan, feats, stats=stats)}


def recorder_ticks(manifest, stream_id: str, model) -> dict:
    """The alignment of one audio stream on its clock ``model``, as the backfill makes it
    (files decoded and validated, times put on the reference clock by the clock stage's
    ``apply_clock``, the stream's whole extent, the session's fixed-rate ticks over the
    extents of every stream, the audio_window join of transforms/align/join.py) in this
    process and in one piece (tests/unit/align: bucketed = whole). Returns ticks, status
    names, coverage, sample_start/end and the stream's extent (ns, reference clock)."""
    import pyarrow as pa

    from mmalign.schemas.aligned import COVERAGE, SAMPLE_END, SAMPLE_START, STATUS, column
    from mmalign.schemas.clock import ClockModel
    from mmalign.transforms.align.buckets import _with_src
    from mmalign.transforms.align.join import (
        chunk_extent,
        fixed_rate_ticks,
        join_stream,
        plan_from_manifest,
    )
    from mmalign.transforms.clock.apply import apply_clock
    from mmalign.transforms.decode.sources import valid_chunks

    plan = plan_from_manifest(manifest)
    extents: dict[str, tuple[int, int]] = {}
    tables, meta = [], None
    for req, good in valid_chunks(manifest):
        sid = req.stream.id
        good = apply_clock(good, model if sid == stream_id else ClockModel())
        _, (lo, hi) = chunk_extent(good)
        a, b = extents.get(sid, (lo, hi))
        extents[sid] = (min(a, lo), max(b, hi))
        if sid == stream_id:
            tables.append(_with_src(good))                # as the buckets stage ships it
            meta = good.meta
    lo = min(a for a, _ in extents.values())
    hi = max(b for _, b in extents.values())
    ticks = fixed_rate_ticks(lo, hi + 1, plan.rate_hz, lo, hi)
    table = pa.Table.from_batches(tables).combine_chunks().sort_by("t_ns")
    sp = next(p for p in plan.streams if p.stream_id == stream_id)
    cols = join_stream(sp, ticks, table, meta, bounds=extents[stream_id])
    c = lambda f: cols[column(stream_id, f)]              # noqa: E731
    return {"ticks": ticks, "status": np.array(c(STATUS).to_pylist()),
            "coverage": np.asarray(c(COVERAGE).to_numpy(zero_copy_only=False)),
            "sample_start": np.asarray(c(SAMPLE_START).to_numpy(zero_copy_only=False)),
            "sample_end": np.asarray(c(SAMPLE_END).to_numpy(zero_copy_only=False)),
            "extent": extents[stream_id], "window_ns": sp.window_ns,
            "sample_rate": int(meta["sample_rate"])}
