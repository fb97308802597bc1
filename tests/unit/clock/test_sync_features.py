"""Sync features from real media: a WAV written and read back, an H.264 video, IMU samples and
subtitle timings, all rendering the same random events, each on its own device clock.

The synthetic recording (``Clock``, ``make_*``) is in tests/media.py, shared with
test_clock_fit.py and test_sync_stage.py: a device with clock (offset, drift) records true time
``t_true = offset + (1 + drift) * t_dev``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmalign.transforms.clock.features import (
    NS,
    FeatureError,
    as_activity,
    audio_bins,
    audio_onset,
    condition,
    merge_binned,
    motion_energy,
    motion_part,
    peak_hold,
    sensor_bins,
    sensor_magnitude,
    speech_activity,
    text_activity,
)
from tests.media import (
    Clock,
    decode_grey,
    make_audio,
    make_cues,
    make_events,
    make_imu,
    make_speech,
    make_video,
)

RATE = 100.0


def peak_times_s(feature, rel=0.3) -> np.ndarray:
    from scipy.signal import find_peaks

    from mmalign.transforms.clock.fit import refine
    _, land, raw = condition(feature)
    p, _ = find_peaks(land, prominence=rel * min(land.max(), 1.0), distance=10)
    return feature.times_ns(refine(raw, p)) / NS


def nearest_error(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    k = np.clip(np.searchsorted(found, truth), 1, len(found) - 1)
    return np.minimum(np.abs(found[k] - truth), np.abs(found[k - 1] - truth))


# ---------------------------------------------------------------- tests


def test_audio_onset_peaks_at_events_from_real_wav(tmp_path):
    clock = Clock(1.7, 150.0)
    ev = make_events(1)
    t0, pcm = make_audio(tmp_path / "a.wav", ev, clock, 100.0, 40.0)
    blocks = np.array_split(pcm, np.arange(1024, len(pcm), 1024))
    t_blocks = np.rint((t0 + np.arange(len(blocks)) * 1024 / 16000) * NS).astype(np.int64)
    f = audio_onset(audio_bins(t_blocks, blocks, 16000, RATE), RATE)
    assert f.kind == "impulse" and np.all(np.isfinite(f.values))
    found = peak_times_s(f)
    assert len(found) == len(ev)
    err = nearest_error(found, clock.dev(ev))
    assert np.median(err) < 0.002 and err.max() < 0.003


def test_audio_bins_are_additive_over_chunks(tmp_path):
    _, pcm = make_audio(tmp_path / "a.wav", make_events(2), Clock(0, 0), 100.0, 40.0)
    blocks = np.array_split(pcm, np.arange(500, len(pcm), 500))
    t_blocks = np.rint((5.0 + np.arange(len(blocks)) * 500 / 16000) * NS).astype(np.int64)
    whole = audio_bins(t_blocks, blocks, 16000, RATE)
    parts = [audio_bins(t_blocks[i:i + 37], blocks[i:i + 37], 16000, RATE)
             for i in range(0, len(blocks), 37)]
    merged = merge_binned(parts)
    assert merged.start == whole.start
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12)
    np.testing.assert_array_equal(merged.count, whole.count)


def test_video_motion_peaks_between_frames_at_events(tmp_path):
    clock = Clock(-3.2, -250.0)
    ev = make_events(3)
    t_dev = make_video(tmp_path / "v.mp4", ev, clock, 100.0, 40.0)
    ts, frames = decode_grey(tmp_path / "v.mp4")
    assert len(ts) == len(t_dev)
    t_ns = ts + round(t_dev[0] * NS)
    whole = motion_energy([motion_part(t_ns, frames)], RATE)
    cut = [0, 7, 300, 301, 650, len(ts)]
    parts = [motion_part(t_ns[a:b], frames[a:b]) for a, b in itertools.pairwise(cut)]
    chunked = motion_energy(parts, RATE)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-6)
    found = peak_times_s(whole)
    assert len(found) == len(ev)
    err = nearest_error(found, clock.dev(ev))
    assert err.max() < 1 / 30 * 0.5 + 0.002            # half a frame: the change is between


def test_sensor_magnitude_removes_gravity_and_peaks_at_impacts():
    clock = Clock(4.1, 300.0)
    ev = make_events(4)
    t_ns, acc = make_imu(ev, clock, 100.0, 40.0)
    parts = [sensor_bins(t_ns[i:i + 333], acc[i:i + 333], RATE) for i in range(0, len(t_ns), 333)]
    f = sensor_magnitude(merge_binned(parts), RATE)
    quiet = np.median(f.values)
    assert quiet < 0.1                                  # 9.81 m/s^2 of gravity is gone
    found = peak_times_s(f)
    assert len(found) == len(ev)
    err = nearest_error(found, clock.dev(ev))
    assert np.median(err) < 0.002 and err.max() < 0.005


def test_peak_hold_rises_only_at_onsets():
    t = np.arange(0, 400) * 1_000_000                    # 1 kHz
    ring = np.abs(np.cos(2 * np.pi * 18 * t / NS)) * np.exp(-t / NS / 0.035)
    v = np.r_[np.zeros(50), ring[:150], np.zeros(50), 0.5 * ring[:150]]
    h = peak_hold(t, v)
    assert np.all(h >= v * (1 - 1e-12)) and np.all(h[v > 0] > 0)
    rise = np.flatnonzero(np.diff(h) > 1e-9) + 1
    np.testing.assert_array_equal(rise, [50, 250])     # ringing lobes add no rise
    assert np.count_nonzero(np.diff(v) > 1e-12) > 2 * len(rise)


def test_ringing_impacts_are_timed_by_their_first_sample():
    """A spike that rings at 18 Hz (later lobes re-rise) sampled at 200 Hz with random phase:
    its landmark stays within half a sample period of the impact, without the ringing's lag."""
    clock = Clock(0.2, 120.0)
    ev = make_events(8, n=40)
    rng = np.random.default_rng(8)
    t_dev = 99.0 + np.arange(0, 42.0, 0.005) + rng.uniform(0, 2e-5, 8400)
    t_true = clock.true(t_dev)
    acc = np.zeros((len(t_dev), 3))
    acc[:, 2] = 9.81
    for te in ev:
        dt = t_true - te
        on = (dt >= 0) & (dt < 0.3)
        acc[on] += (15.0 * np.exp(-dt[on] / 0.035) * np.cos(2 * np.pi * 18 * dt[on]))[:, None] \
            * np.array([0.3, -0.2, 0.93])
    acc += rng.normal(0, 0.02, acc.shape)
    f = sensor_magnitude(sensor_bins(np.rint(t_dev * NS).astype(np.int64), acc, RATE), RATE)
    found = peak_times_s(f)
    assert len(found) == len(ev)
    err = found[np.argmin(np.abs(found[:, None] - clock.dev(ev)[None, :]), axis=0)] \
        - clock.dev(ev)
    assert abs(np.mean(err)) < 0.001 and np.max(np.abs(err)) < 0.0035


def test_text_activity_covers_cues_with_fractional_edges():
    s = np.array([1_000_000_000, 1_002_000_000, 3_000_000_000], np.int64)
    e = np.array([1_503_000_000, 1_200_000_000, 3_100_000_000], np.int64)   # 2nd inside 1st
    f = text_activity(s, e, RATE)
    t = f.times_ns()
    on = f.values > 0.5
    assert f.kind == "level"
    assert np.all(on[(t > 1.006e9) & (t < 1.498e9)]) and not on[(t > 1.51e9) & (t < 2.99e9)].any()
    assert np.sum(f.values) * 10e6 == pytest.approx(0.503e9 + 0.1e9, rel=1e-9)
    edge = np.flatnonzero(np.isclose(t, 1.5e9))[0]      # bin [1.495, 1.505) s: 0.8 covered
    assert f.values[edge] == pytest.approx(0.8)


def test_speech_activity_follows_cues(tmp_path):
    clock = Clock(0.0, 0.0)
    cues = make_cues(5, 100.0, 40.0)
    t0, pcm = make_speech(tmp_path / "s.wav", cues, clock, 100.0, 40.0)
    f = speech_activity(audio_bins([int(t0 * NS)], [pcm], 16000, RATE), RATE)
    truth = text_activity((cues[:, 0] * NS).astype(np.int64), (cues[:, 1] * NS).astype(np.int64),
                          RATE)
    b = np.zeros(len(f.values), bool)                  # the truth on f's grid
    k = np.arange(truth.start, truth.start + len(truth.values)) - f.start
    ok = (k >= 0) & (k < len(b))
    b[k[ok]] = truth.values[ok] > 0.5
    a = f.values > 0.5
    assert np.mean(a == b) > 0.97
    edges = np.flatnonzero(np.diff(a.astype(int)))
    true_edges = np.flatnonzero(np.diff(b.astype(int)))
    assert len(edges) == len(true_edges)
    assert np.max(np.abs(edges - true_edges)) <= 8      # within 80 ms


def test_activity_and_conditioning_are_scale_free():
    rng = np.random.default_rng(0)
    from mmalign.transforms.clock.features import Feature
    v = np.abs(rng.normal(0, 0.01, 2000))
    v[[300, 900, 1500]] = [5.0, 1.0, 3.0]
    f = Feature(v * 1000, 10, RATE, "impulse", "x")
    dtw_in, _land, _ = condition(f)
    assert dtw_in.min() >= 0 and dtw_in.max() <= 1
    np.testing.assert_allclose(condition(Feature(v, 10, RATE, "impulse", "x"))[0], dtw_in)
    act = as_activity(Feature(np.r_[np.zeros(500), np.ones(500)] * 7, 0, RATE, "impulse", "y"))
    assert act.kind == "level" and set(np.unique(act.values)) == {0.0, 1.0}


def test_bad_feature_inputs_raise_feature_error():
    with pytest.raises(FeatureError, match="NaN"):
        sensor_bins(np.array([0, 1]), np.array([[0.0], [np.nan]]), RATE)
    with pytest.raises(FeatureError, match="no samples"):
        merge_binned([])
    with pytest.raises(FeatureError, match="ends before"):
        text_activity([5], [4], RATE)
    with pytest.raises(FeatureError, match="implausible"):
        sensor_bins(np.array([0, 10**18]), np.zeros((2, 1)), RATE)
    with pytest.raises(FeatureError, match="frames"):
        motion_energy([], RATE)


# ---------------------------------------------------------------- time conventions


def test_voice_activity_edges_are_not_late():
    """Bursts of noise at known times over a quiet floor: the voice-activity marks are not
    shifted (the mean of the rises' and the falls' median errors; each edge alone is off by up
    to half a grid bin the other way round, since the bin astride it counts as loud: a width,
    not a shift). An even moving average (scipy centres it half a step before the sample) and
    grid bins centred half a fine bin early made every edge ~5.5 ms late at 100 Hz (subtitles
    were fitted ~13 ms late against real speech)."""
    from mmalign.transforms.clock.features import audio_signals
    sr, rng = 16000, np.random.default_rng(0)
    x = rng.normal(0, 10 ** (-55 / 20), sr * 120)
    on, t = [], 1.0
    while t < 115:
        ia, ib = int(t * sr), int((t + rng.uniform(0.4, 3.0)) * sr)
        x[ia:ib] += rng.normal(0, 0.1, ib - ia)
        on.append((ia / sr, ib / sr))
        t = ib / sr + rng.uniform(0.2, 1.5)
    f = audio_signals(audio_bins([0], [x], sr, RATE), RATE)["speech_activity"]
    marks = (f.start + f.marks) / RATE
    shift = []
    for sign, true in ((1, np.array([o[0] for o in on])), (-1, np.array([o[1] for o in on]))):
        got = marks[f.mark_sign == sign]
        assert len(got) == len(true)
        d = got[np.abs(got[None, :] - true[:, None]).argmin(axis=1)] - true
        assert np.max(np.abs(d)) < 0.5 / RATE + 2e-3           # each edge within half a bin
        shift.append(np.median(d))
    assert abs(np.mean(shift)) < 1e-3, shift


@pytest.mark.parametrize("start", [-23, -15, 0, 5, 7, 123])
def test_coarsen_centres_grid_bins_on_the_grid(start):
    """Grid bin g holds the fine bins within [g - 1/2, g + 1/2) grid steps, the two astride its
    edges split half and half: mass is kept, a fine bin lands within half a grid step of its
    time, and over every phase the displacement averages to zero (whole fine bins
    g*FINE - FINE/2 .. g*FINE + FINE/2 - 1 put it half a fine bin early)."""
    from mmalign.transforms.clock.features import FINE, Binned, coarsen
    rng = np.random.default_rng(start + 100)
    count = rng.integers(1, 5, 37).astype(float)
    g = coarsen(Binned(start, np.column_stack([count * 2.0]), count))
    assert g.count.sum() == pytest.approx(count.sum())
    np.testing.assert_allclose(g.sums[:, 0], 2.0 * g.count)
    shift = []
    for k in range(start, start + 4 * FINE):          # one fine bin at a time, every phase
        d = coarsen(Binned(k, np.ones((1, 1)), np.ones(1)))
        at = np.sum((d.start + np.arange(len(d.count))) * d.count) / d.count.sum()
        assert abs(at - k / FINE) <= 0.5 + 1e-9
        shift.append(at - k / FINE)
    assert np.mean(shift) == pytest.approx(0.0, abs=1e-9)


def test_highpass_near_the_ends_does_not_depend_on_the_last_sample():
    """The moving average near a stream's ends is taken over the samples that exist: the
    high-passed end of a cut signal follows the same signal high-passed with samples beyond
    the cut (padding with the edge sample weighed it up to half the window)."""
    from mmalign.transforms.clock.features import HIGHPASS_S, highpass
    t = np.arange(0, 60, 1 / RATE)
    rng = np.random.default_rng(3)
    v = sum(rng.uniform(0.5, 1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
            for f in rng.uniform(0.3, 0.9, 5)) + 0.4           # + a bias
    cut = int(40.3 * RATE)                 # ends at a large value
    full, short = highpass(v, RATE), highpass(v[:cut], RATE)
    tail = slice(cut - int(HIGHPASS_S / 2 * RATE), cut)
    err = np.abs(short[tail] - full[tail])
    assert err.max() < 0.25 * np.std(full), (err.max(), np.std(full))
