"""Clock estimation on real generated media against the issue's targets.

One recording: shared random impacts rendered into a WAV (read back), an H.264 video and IMU
samples, each device on its own clock (offsets up to +-5 s, drifts up to +-300 ppm between
pairs); plus speech audio against subtitle timings. Targets: offset within 33 ms for
video<->audio and video<->IMU, 10 ms for audio<->IMU, 100 ms for subtitle<->audio; drift within
20 ppm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmalign.schemas.clock import ClockModel
from mmalign.transforms.clock.features import (
    NS,
    audio_bins,
    audio_onset,
    motion_energy,
    motion_part,
    sensor_bins,
    sensor_magnitude,
    speech_activity,
    text_activity,
)
from mmalign.transforms.clock.fit import (
    SyncError,
    coarse_lag,
    compose,
    estimate_clock,
    failed,
    finalize,
    prior_offset_ns,
    ransac_line,
)
from tests.media import (
    Clock,
    decode_grey,
    expected_map,
    make_audio,
    make_cues,
    make_events,
    make_imu,
    make_speech,
    make_video,
)

RATE = 100.0          # feature bins per second, as in test_sync_features.py
CLOCKS = {"audio": Clock(2.0, -150.0), "imu": Clock(-2.9, 145.0), "video": Clock(0.0, 150.0)}
TARGET_MS = {("video", "audio"): 33.0, ("video", "imu"): 33.0, ("imu", "audio"): 10.0,
             ("audio", "video"): 33.0, ("audio", "imu"): 10.0}


def features(tmp, seed: int, clocks: dict, duration_s: float, n_events: int) -> dict:
    ev = make_events(seed, duration_s=duration_s, n=n_events)
    t0, pcm = make_audio(tmp / "a.wav", ev, clocks["audio"], 100.0, duration_s, seed=seed)
    blocks = np.array_split(pcm, np.arange(2048, len(pcm), 2048))
    tb = np.rint((t0 + np.arange(len(blocks)) * 2048 / 16000) * NS).astype(np.int64)
    t_ns, acc = make_imu(ev, clocks["imu"], 100.0, duration_s, seed=seed)
    t_dev = make_video(tmp / "v.mp4", ev, clocks["video"], 100.0, duration_s, seed=seed)
    ts, frames = decode_grey(tmp / "v.mp4")
    return {"audio": audio_onset(audio_bins(tb, blocks, 16000, RATE), RATE),
            "imu": sensor_magnitude(sensor_bins(t_ns, acc, RATE), RATE),
            "video": motion_energy([motion_part(ts + round(t_dev[0] * NS), frames)], RATE)}


def errors(result, dev_feature, dev_clock: Clock, ref_clock: Clock) -> tuple[float, float]:
    """(max time error over the recording in ms, drift error in ppm)."""
    t = dev_feature.times_ns()[::20]
    want = expected_map(dev_clock, ref_clock, t / NS) * NS
    err_ms = float(np.max(np.abs(result.model.to_ref(np.rint(t).astype(np.int64)) - want))) / 1e6
    true_drift = ((1 + dev_clock.drift_ppm * 1e-6) / (1 + ref_clock.drift_ppm * 1e-6) - 1) * 1e6
    return err_ms, result.model.drift_ppm - true_drift


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    return features(tmp_path_factory.mktemp("rec"), 11, CLOCKS, 240.0, 160)


@pytest.mark.parametrize("dev,ref", [("video", "audio"), ("video", "imu"), ("imu", "audio"),
                                     ("audio", "video")])
def test_offset_and_drift_targets_on_a_4_minute_recording(long_recording, dev, ref):
    r = estimate_clock(long_recording[ref], long_recording[dev], stream_id=dev, reference=ref)
    err_ms, drift_err = errors(r, long_recording[dev], CLOCKS[dev], CLOCKS[ref])
    assert err_ms < TARGET_MS[(dev, ref)]
    assert abs(drift_err) < 20.0
    assert r.confidence > 0.8 and r.n_inliers >= 0.9 * 160
    assert r.model.source == "estimated" and not r.fell_back


@pytest.mark.parametrize("seed,clocks", [
    (21, {"audio": Clock(0.0, 0.0), "imu": Clock(4.97, -300.0), "video": Clock(-4.95, 300.0)}),
    (22, {"audio": Clock(-3.3, 280.0), "imu": Clock(1.2, -20.0), "video": Clock(0.8, 10.0)}),
])
def test_offset_targets_on_short_recordings(tmp_path, seed, clocks):
    f = features(tmp_path, seed, clocks, 40.0, 28)
    for dev, ref in [("video", "audio"), ("imu", "audio"), ("audio", "imu")]:
        r = estimate_clock(f[ref], f[dev])
        # 40 s of events timed to +-17 ms (video) or +-2.5 ms (200 Hz IMU) cannot pin the drift
        # to 20 ppm; the 4-minute recording above checks drift
        err_ms, drift_err = errors(r, f[dev], clocks[dev], clocks[ref])
        assert err_ms < TARGET_MS[(dev, ref)], (dev, ref, err_ms)
        assert abs(drift_err) < 150.0
        # offsets beyond the 1 s band were found by the coarse search
        want = (expected_map(clocks[dev], clocks[ref], 120.0) - 120.0) * 1e9
        assert abs(r.coarse_offset_ns - want) < 0.1e9


def test_subtitles_against_speech_within_100_ms(tmp_path):
    audio_c, text_c = Clock(1.5, 120.0), Clock(-3.4, -170.0)
    cues = make_cues(8, 100.0, 120.0)
    t0, pcm = make_speech(tmp_path / "s.wav", cues, audio_c, 100.0, 120.0)
    speech = speech_activity(audio_bins([round(t0 * NS)], [pcm], 16000, RATE), RATE)
    dev = text_c.dev(cues)
    text = text_activity(np.rint(dev[:, 0] * NS).astype(np.int64),
                         np.rint(dev[:, 1] * NS).astype(np.int64), RATE)
    r = estimate_clock(speech, text, stream_id="subs", reference="mic")
    err_ms, drift_err = errors(r, text, text_c, audio_c)
    assert err_ms < 100.0
    assert abs(drift_err) < 100.0
    assert r.features == "text_activity~speech_activity" and r.confidence > 0.6


def test_fastdtw_engine_meets_offset_targets(tmp_path):
    clocks = {"audio": Clock(1.0, 50.0), "imu": Clock(-1.5, -120.0), "video": Clock(2.0, 0.0)}
    f = features(tmp_path, 31, clocks, 20.0, 14)
    for dev, ref in [("video", "audio"), ("imu", "audio")]:
        r = estimate_clock(f[ref], f[dev], engine="fastdtw")
        assert r.engine == "fastdtw"
        assert errors(r, f[dev], clocks[dev], clocks[ref])[0] < TARGET_MS[(dev, ref)]


def test_unrelated_streams_fall_back_to_the_declared_clock(tmp_path):
    a = features(tmp_path, 41, CLOCKS, 30.0, 20)["audio"]
    (tmp_path / "b").mkdir()
    b = features(tmp_path / "b", 42, CLOCKS, 30.0, 20)["imu"]    # different events
    declared = ClockModel.declared(offset_ns=123, drift_ppm=4.0)
    try:
        r = estimate_clock(a, b, stream_id="imu", reference="audio")
    except SyncError as e:                                      # also an honest outcome
        r = failed("imu", "audio", declared, str(e))
    out = finalize(r, ClockModel(), declared, min_confidence=0.5)
    assert out.fell_back and out.reason
    assert out.model.source == "fallback"
    assert (out.model.offset_ns, out.model.drift) == (123, declared.drift)


def test_finalize_composes_with_the_reference_model_when_confident(long_recording):
    r = estimate_clock(long_recording["audio"], long_recording["imu"])
    ref_model = ClockModel(offset_ns=-7_000_000_000, drift=20e-6, anchor_ns=50 * NS,
                           source="declared")
    out = finalize(r, ref_model, ClockModel(), min_confidence=0.5)
    assert not out.fell_back and out.model.source == "estimated"
    t = np.arange(90, 340, 10, dtype=np.int64) * NS
    np.testing.assert_allclose(out.model.to_ref(t), ref_model.to_ref(r.model.to_ref(t)),
                               atol=2)
    d = out.to_dict()
    json.dumps(d)
    assert d["model"]["source"] == "estimated" and d["estimate"]["source"] == "estimated"


def test_compose_and_prior_offset_algebra():
    inner = ClockModel(2_500_000_000, 150e-6, 10 * NS, "estimated")
    outer = ClockModel(-1_000_000_000, -80e-6, 3 * NS, "declared")
    t = np.linspace(0, 1000, 11).astype(np.int64) * NS
    np.testing.assert_allclose(compose(outer, inner).to_ref(t), outer.to_ref(inner.to_ref(t)),
                               atol=2)
    dev = ClockModel.declared(5_000_000_000)
    ref = ClockModel.declared(2_000_000_000)
    assert prior_offset_ns(dev, ref, 10 * NS) == 3_000_000_000


def test_ransac_line_ignores_outliers():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-100, 100, 60))
    y = 0.25 + 120e-6 * x + rng.normal(0, 0.002, 60)
    y[::6] += rng.uniform(-2, 2, 10)                             # 10 wrong matches
    c, s, inl = ransac_line(x, y, tol=0.01)
    assert c == pytest.approx(0.25, abs=0.002) and s == pytest.approx(120e-6, abs=10e-6)
    assert inl.sum() >= 48 and not inl[::6].any()
    with pytest.raises(SyncError, match="at least 3"):
        ransac_line(x[:2], y[:2], tol=0.01)


def test_coarse_lag_finds_shift_and_refuses_out_of_range():
    rng = np.random.default_rng(1)
    base = np.zeros(5000)
    base[rng.choice(5000, 40, replace=False)] = 1.0
    ref, dev = base[300:3300], base[0:3000]                      # ref[k] = dev[k + 300]
    lag, score = coarse_lag(ref, 1000, dev, 1000, -500, 500)
    assert lag == -300 and score > 0.8
    with pytest.raises(SyncError, match="max_offset_s"):
        coarse_lag(ref, 0, dev, 100_000, -10, 10)
