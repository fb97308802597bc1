"""DTW-sync on real-like material (issues 19 and 15), through the backfill's sync kernels in
this process (tests/sync_media.py ``sync_in_process``: files decoded and validated, the sync
stage's features and estimates; no Beam).

Issue 19, a separate audio recorder beside a camera: the camera's AAC track is >= 60 s of
espeak-ng speech with sox sounds (tests/sync_media.py ``speech_scene``); each recorder is
derived from the same scene, resampled band-limited onto its own clock (44.1 or 48 kHz, drift
-200..+200 ppm, started -3..+2.5 s from the camera), through a one-pole low-pass (another
microphone) and with noise. All recorders of a clip length are streams of one manifest, so
the camera's features are made once. Every (drift, offset) pair is a case, the two sample
rates alternating so that each drift and each offset meets both rates. Targets: offset error
(largest over the recorder's span) < 1 ms, drift error < 5 ppm (60 s) / < 20 ppm (12 s clip),
no fallback, and every interior tick of the recorder ``ok`` with coverage 1 (not
``partial_window``: the window and its coverage are measured on the same clock).

Issue 15, the hard pairs: subtitles from our own forced alignment (cues touching) against
real speech on another clock (offsets and rate ratios 1, 1.001, 25/23.976, 0.96), and a camera
turning smoothly in front of a real photo (opencv-doc) against a gyro on its own clock (rotated
axes, bias, noise, drift up to 2000 ppm). The thresholds are the issue's targets; the errors
measured by benchmarks/bench_sync_real.py (README "Clock sync (DTW)") are well inside them.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import yaml

from mmalign.schemas.manifest import load_manifest
from mmalign.transforms.clock.features import NS
from tests.media import write_srt
from tests.opencv_doc_data import opencv_doc_data
from tests.sync_media import (
    Clock,
    Motion,
    camera_mp4,
    features_in_process,
    forced_alignment,
    gyro_csv,
    recorder,
    recorder_ticks,
    render_rotation_video,
    speech_scene,
    sync_in_process,
)

pytestmark = pytest.mark.slow

CAM_START_S = 3.2          # where the camera's track starts in the scene
DRIFTS = (-200.0, -50.0, 80.0, 200.0)
OFFSETS = (-3.0, 0.4, 2.5)
# (rate, drift ppm, offset s, low-pass alpha, noise dBFS): every drift x offset, the rates
# alternating (each drift and each offset at both rates), filters and noise varied
CASES = [(44100 if (i + j) % 2 else 48000, d, o, (0.15, 0.3, 0.5, 0.7)[(i + 2 * j) % 4],
          (-55.0, -45.0, -35.0)[(i + j) % 3])
         for i, d in enumerate(DRIFTS) for j, o in enumerate(OFFSETS)]


def case_id(c) -> str:
    return f"{c[0] // 100 / 10:g}kHz{c[1]:+.0f}ppm{c[2]:+.1f}s"


def write_manifest(folder, name: str, streams: list[dict]):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"session": name, "streams": streams,
                                    "alignment": {"ticks": {"rate_hz": 10}}}))
    return load_manifest(path)


def recorder_session(folder, scene, cam_s: float, rec_s: float, cases, name: str):
    """One manifest: the camera (``cam_s`` of the scene from CAM_START_S) and a recorder
    per case (``rec_s`` long), all synced to the camera's audio; their SyncResults."""
    camera_mp4(folder / f"{name}.mp4", scene.pcm, scene.sr, CAM_START_S, cam_s)
    streams = [{"id": "cam_audio", "modality": "audio", "files": [f"{name}.mp4"]}]
    for k, (sr, ppm, off, alpha, noise_db) in enumerate(cases):
        y = recorder(scene.pcm, scene.sr, CAM_START_S, Clock(off, ppm), sr, rec_s,
                     alpha=alpha, noise_db=noise_db, seed=k)
        sf.write(folder / f"{name}_rec{k}.wav", y, sr, subtype="PCM_16")
        streams.append({"id": f"rec{k}", "modality": "audio", "files": [f"{name}_rec{k}.wav"],
                        "sync": {"reference": "cam_audio"}})
    man = write_manifest(folder, name, streams)
    return man, sync_in_process(man, features=features_in_process(man))


@pytest.fixture(scope="module")
def scene():
    return speech_scene(1, 80.0)            # 48 kHz, speech and sox sounds, peak 0.7


@pytest.fixture(scope="module")
def long_session(scene, tmp_path_factory):
    return recorder_session(tmp_path_factory.mktemp("rec60"), scene, 72.0, 64.0, CASES, "r60")


SHORT = CASES[::2]          # 6 of the 12: both rates, every drift, every offset


@pytest.fixture(scope="module")
def short_session(scene, tmp_path_factory):
    return recorder_session(tmp_path_factory.mktemp("rec12"), scene, 12.0, 12.0, SHORT,
                            "r12")


def errors(result, clock: Clock, seconds: float) -> tuple[float, float]:
    """(largest |offset error| over the recorder's span in ms, drift error in ppm)."""
    t = np.linspace(0.0, seconds, 200)
    got = result.model.to_ref(np.rint(t * NS).astype(np.int64)) / NS
    return (float(np.max(np.abs(got - clock.ref(t)))) * 1e3,
            result.model.drift_ppm - clock.drift_ppm)


@pytest.mark.parametrize("k", range(len(CASES)), ids=[case_id(c) for c in CASES])
def test_recorder_60_s_sub_millisecond(long_session, k):
    _, res = long_session
    sr, ppm, off, _, _ = CASES[k]
    r = res[f"rec{k}"]
    assert not r.fell_back and not r.reason and not r.warnings, r.reason
    off_ms, drift_ppm = errors(r, Clock(off, ppm), 64.0)
    assert off_ms < 1.0, (off_ms, drift_ppm)
    assert abs(drift_ppm) < 5.0, (off_ms, drift_ppm)


@pytest.mark.parametrize("k", range(len(SHORT)), ids=[case_id(c) for c in SHORT])
def test_recorder_12_s_clip(short_session, k):
    _, res = short_session
    sr, ppm, off, _, _ = SHORT[k]
    r = res[f"rec{k}"]
    assert not r.fell_back and not r.reason, r.reason
    off_ms, drift_ppm = errors(r, Clock(off, ppm), 12.0)
    assert off_ms < 1.0, (off_ms, drift_ppm)
    assert abs(drift_ppm) < 20.0, (off_ms, drift_ppm)


@pytest.mark.parametrize("k", range(len(CASES)), ids=[case_id(c) for c in CASES])
def test_recorder_interior_ticks_are_ok(long_session, k):
    """The recorder aligned on its estimated clock (audio_window, 200 ms): every tick whose
    window lies inside the recorder's extent is ``ok`` with coverage 1 and holds the window's
    length of device samples; ticks beyond it are out_of_range, the two at the edges partial."""
    man, res = long_session
    sr, ppm, off, _, _ = CASES[k]
    a = recorder_ticks(man, f"rec{k}", res[f"rec{k}"].model)
    t, st, w = a["ticks"], a["status"], a["window_ns"]
    lo, hi = a["extent"]
    inside = (t - w // 2 >= lo) & (t - w // 2 + w <= hi)
    assert inside.sum() > 500
    assert set(st[inside]) == {"ok"}, {s: int(np.sum(st[inside] == s)) for s in set(st)}
    assert np.all(a["coverage"][inside] == 1.0)
    n = a["sample_end"][inside] - a["sample_start"][inside]
    want = w / NS * sr / (1 + ppm * 1e-6)
    assert np.all(np.abs(n - want) <= 1.0), (n.min(), n.max(), want)
    outside = (t - w // 2 + w <= lo) | (t - w // 2 >= hi)
    assert set(st[outside]) <= {"out_of_range"}
    assert set(st[~inside & ~outside]) <= {"partial_window"}


# ---------------------------------------------------------------- issue 15: subtitles, camera

# (rate ratio t_audio / t_subtitle, offset s): frame-rate conversions and a crystal
SUB_CASES = [(25 / 23.976, -3.4), (0.96, 4.1), (1.001, -1.7), (1.0, 2.6)]


@pytest.fixture(scope="module")
def subtitle_session(tmp_path_factory):
    """150 s of speech (16 kHz, 6 s of room tone first) and, per case, the subtitles of our
    forced alignment (touching cues) put on another clock; one manifest, all synced to the
    audio. Returns ({stream: SyncResult}, true cue starts, {stream: subtitle cue starts}).
    On 90 s of this scene (46 cues) the 25/23.976 case meets a rival fit (boundaries put
    mid-pause, 140 ms off) scoring 0.83 of the right one's and falls back (README)."""
    folder = tmp_path_factory.mktemp("subs")
    scene = speech_scene(3, 150.0, sr=16000, sound_every_s=15.0, floor_db=-55.0, lead_s=6.0)
    sf.write(folder / "speech.wav", scene.pcm, 16000, subtype="PCM_16")
    cues = forced_alignment(scene)
    assert all(a[1] == b[0] for a, b in zip(cues, cues[1:]))         # they touch
    streams = [{"id": "audio", "modality": "audio", "files": ["speech.wav"]}]
    truth, starts = {}, {}
    for k, (ratio, off) in enumerate(SUB_CASES):
        sub = [((a - off) / ratio, (b - off) / ratio, txt) for a, b, txt in cues]
        keep = [i for i, c in enumerate(sub) if c[0] >= 0]
        write_srt(folder / f"subs{k}.srt", [(round(sub[i][0] * 1000), round(sub[i][1] * 1000),
                                              sub[i][2]) for i in keep])
        streams.append({"id": f"subs{k}", "modality": "text", "files": [f"subs{k}.srt"],
                        "sync": {"reference": "audio"}})
        truth[f"subs{k}"] = np.array([cues[i][0] for i in keep])
        starts[f"subs{k}"] = np.array([round(sub[i][0] * 1000) for i in keep], np.int64)
    man = write_manifest(folder, "subs", streams)
    return sync_in_process(man), truth, starts


@pytest.mark.parametrize("k", range(len(SUB_CASES)),
                         ids=[f"ratio{r:.4f}{o:+.1f}s" for r, o in SUB_CASES])
def test_touching_subtitles_against_real_speech(subtitle_session, k):
    """Measured (benchmarks/bench_sync_real.py, 200 s): median cue error 1.4-3.9 ms at every
    ratio (here 5-7 ms); the issue's target is 50 ms."""
    res, truth, starts = subtitle_session
    r = res[f"subs{k}"]
    assert not r.fell_back, r.reason
    got = r.model.to_ref(starts[f"subs{k}"] * 1_000_000) / NS
    err = np.abs(got - truth[f"subs{k}"]) * 1e3
    assert np.median(err) < 50.0, (np.median(err), r.model)
    assert np.percentile(err, 90) < 150.0, np.percentile(err, 90)
    ratio = SUB_CASES[k][0]
    assert abs(r.model.drift_ppm - (ratio - 1) * 1e6) < 1000.0     # 1 ms per second


GYRO_CLOCKS = [Clock(-2.7, 2000.0), Clock(2.9, -2000.0), Clock(0.6, -700.0)]
FPS, CAM_S = 30.0, 40.0


@pytest.fixture(scope="module")
def gyro_session(tmp_path_factory):
    """A camera turning smoothly in front of a real photo (no impacts), 40 s at 30 fps, and
    a gyro per clock (200 Hz, its axes rotated from the camera's, bias, noise) synced to it."""
    import cv2
    folder = tmp_path_factory.mktemp("gyro")
    photo = cv2.imread(str(opencv_doc_data() / "graf1.png"))
    mot = Motion.random(5)
    render_rotation_video(folder / "rot.mp4", photo, mot, FPS, CAM_S)
    streams = [{"id": "cam", "modality": "video", "files": ["rot.mp4"]}]
    for k, clk in enumerate(GYRO_CLOCKS):
        gyro_csv(folder / f"gyro{k}.csv", mot, clk, 200.0, clk.dev(-4.0), CAM_S + 8.0, seed=k)
        streams.append({"id": f"imu{k}", "modality": "sensor", "files": [f"gyro{k}.csv"],
                        "options": {"time_column": "t_ns", "time_unit": "ns"},
                        "sync": {"reference": "cam"}})
    return sync_in_process(write_manifest(folder, "gyro", streams))


@pytest.mark.parametrize("k", range(len(GYRO_CLOCKS)),
                         ids=[f"{c.offset_s:+.1f}s{c.drift_ppm:+.0f}ppm" for c in GYRO_CLOCKS])
def test_smooth_camera_motion_against_a_gyro(gyro_session, k):
    """The issue's targets: offset within one frame, drift within 50 ppm (measured by
    benchmarks/bench_sync_real.py on a 60 s take, 8 gyros, and here: README "Clock sync")."""
    r = gyro_session[f"imu{k}"]
    clk = GYRO_CLOCKS[k]
    assert not r.fell_back, r.reason
    t = clk.dev(np.linspace(0.5, CAM_S - 0.5, 80))
    got = r.model.to_ref(np.rint(t * NS).astype(np.int64)) / NS
    err_ms = float(np.max(np.abs(got - clk.ref(t)))) * 1e3
    assert err_ms < 1e3 / FPS, err_ms
    assert abs(r.model.drift_ppm - clk.drift_ppm) < 50.0, r.model.drift_ppm
