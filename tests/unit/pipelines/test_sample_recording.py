"""The sample-recording generator: real files that decode, with the ground truth they claim."""

from __future__ import annotations

import csv
import json
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from mmalign.pipelines.sample_recording import STREAM_CLOCKS, generate_recording
from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.manifest import load_manifest

FILES = ("cam0.mp4", "mic.wav", "imu.csv", "transcript.srt", "manifest.yaml",
         "calibration.yaml", "ground_truth.json", "README.txt", "cam1/timestamps.txt")


def _load(manifest: Path) -> tuple[Path, dict]:
    return manifest.parent, json.loads((manifest.parent / "ground_truth.json").read_text())


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return _load(generate_recording(tmp_path_factory.mktemp("rec") / "demo"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """No declared clocks, no bad records, a mic that started before the reference clock."""
    return _load(generate_recording(
        tmp_path_factory.mktemp("plain") / "r", seed=3, duration_s=5.0, declare_clocks=False,
        bad_records=False, clocks={"mic": {"offset_ns": -1_250_000_000, "drift_ppm": -150.0}},
        size=(256, 192), session="plain-3"))


def _model(gt: dict, stream: str) -> ClockModel:
    c = gt["streams"][stream]["clock"]
    return ClockModel.declared(c["offset_ns"], c["drift_ppm"], c["anchor_ns"])


def _decode_video(path: Path) -> tuple[list[int], list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return [f.pts for f in frames], [f.to_ndarray(format="bgr24") for f in frames], s


def _decode_audio_track(path: Path) -> tuple[int, int, np.ndarray, str]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        frames = list(c.decode(s))
        pcm = np.concatenate([f.to_ndarray().reshape(len(f.layout.channels), -1).mean(0)
                              for f in frames])
        return frames[0].pts, s.rate, pcm, s.codec_context.name


def _click_contrast(x: np.ndarray, rate: int, at: np.ndarray) -> np.ndarray:
    """Per sample index in ``at``: high-band RMS just after / just before (clicks are > 1 kHz)."""
    hp = sosfiltfilt(butter(4, 1200, "highpass", fs=rate, output="sos"), x)
    w = int(0.02 * rate)
    out = []
    for i in np.rint(at).astype(int):
        after = hp[max(i, 0):max(i + w, 0)]
        before = hp[max(i - 3 * w, 0):max(i - w, 0)]
        if len(after) < w or len(before) < 2 * w:
            continue
        out.append(np.sqrt(np.mean(after ** 2)) / (np.sqrt(np.mean(before ** 2)) + 1e-9))
    return np.array(out)


# -- files, manifest, calibration ----------------------------------------------------------

def test_all_files_written_and_manifest_loads(rec):
    d, gt = rec
    for f in FILES:
        assert (d / f).is_file(), f
    m = load_manifest(d / "manifest.yaml")
    assert m.session == "demo-001"
    assert [s.id for s in m.streams] == ["cam0", "cam0_audio", "cam1", "mic", "transcript", "imu"]
    assert [s.modality for s in m.streams] == ["video", "audio", "video", "audio", "text",
                                               "sensor"]
    for s in m.streams:
        for f in s.paths:
            assert m.resolve(f).is_file()
    assert m.stream("cam0_audio").clock_domain == "cam0"
    assert m.alignment.ticks.anchor == "cam0" and m.alignment.bucket_s == 4.0
    assert m.policy_for(m.stream("cam1")).policy == "nearest"
    assert m.policy_for(m.stream("cam1")).tolerance_ms == pytest.approx(25.0)
    assert m.policy_for(m.stream("imu")).policy == "interpolate"
    assert m.policy_for(m.stream("imu")).max_gap_ms == pytest.approx(20.0)
    assert m.policy_for(m.stream("mic")).window_ms == 200.0
    assert m.policy_for(m.stream("cam0_audio")).policy == "audio_window"
    assert m.policy_for(m.stream("transcript")).policy == "text_overlap"
    assert m.stream("mic").options["start_ns"] == gt["streams"]["mic"]["first_sample_t_dev_ns"]
    assert all(s.sync is None for s in m.streams)
    # a 12 s recording spans several alignment buckets
    assert (gt["true_end_ns"] - gt["true_start_ns"]) / 1e9 / m.alignment.bucket_s >= 3


def test_calibration_holds_the_true_clocks(rec):
    d, gt = rec
    m = load_manifest(d / "manifest.yaml")
    cal = load_calibration(m.resolve(m.calibration, "calibration"))
    assert cal.clock("cam0").is_identity
    expected = {"cam1": (120_000_000, 25.0), "mic": (350_000_000, 40.0),
                "imu": (-800_000_000, -60.0), "transcript": (500_000_000, 0.0)}
    for sid in STREAM_CLOCKS:
        model = cal.clock(m.stream(sid).clock_domain)
        assert (model.offset_ns, model.drift_ppm) == pytest.approx(expected[sid])
        # the ground truth's device and true times are related by exactly this model
        s = gt["streams"][sid]
        cols = s.get("frames") or s.get("rows") or s.get("cues")
        if cols is None:    # audio: the first sample
            assert model.to_ref([s["first_sample_t_dev_ns"]])[0] == s["first_sample_t_true_ns"]
        else:
            assert np.array_equal(model.to_ref(cols["t_dev_ns"]), cols["t_true_ns"])
            assert min(cols["t_dev_ns"]) >= 0


def test_events_and_speech_are_clear(rec):
    _, gt = rec
    ev = np.array(gt["events_true_ns"])
    dur = (gt["true_end_ns"] - gt["true_start_ns"]) / 1e9
    assert 1.0 <= len(ev) / dur <= 2.0
    assert np.diff(ev).min() >= 0.45e9
    assert ev.min() > gt["true_start_ns"] and ev.max() < gt["true_end_ns"]
    sp = np.array(gt["speech_true_ns"])
    assert len(sp) >= 3
    lengths = (sp[:, 1] - sp[:, 0]) / 1e9
    assert lengths.min() >= 0.39 and lengths.max() <= 2.01


# -- cam0: H.264 + AAC ---------------------------------------------------------------------

def test_cam0_frames_and_pts_match_ground_truth_exactly(rec):
    d, gt = rec
    g = gt["streams"]["cam0"]
    pts, images, s = _decode_video(d / "cam0.mp4")
    assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
    assert (s.codec_context.width, s.codec_context.height) == (320, 240)
    assert len(pts) == g["n_frames"] == len(g["frames"]["pos"])
    assert pts == g["frames"]["pts"]
    tb = Fraction(g["time_base"])
    assert s.time_base == tb
    t_ns = [int(p * tb * 1_000_000_000) for p in pts]
    assert t_ns == g["frames"]["t_dev_ns"] == g["frames"]["t_true_ns"]
    # jittered (variable) frame intervals; a pts gap exactly where frames were dropped
    period = 1e9 / g["nominal_rate_hz"]
    gaps = np.diff(t_ns)
    assert len(set(gaps.tolist())) > 10
    assert np.abs(gaps[gaps < 1.5 * period] - period).max() <= 4e6
    slots = np.array(g["frames"]["slot"])
    assert len(g["dropped_slots"]) == 3
    assert sorted(slots[1:][gaps > 1.5 * period] - 1) == g["dropped_slots"]
    assert not set(g["dropped_slots"]) & set(slots.tolist())
    assert images[0].shape == (240, 320, 3)


def test_cam0_audio_track_carries_the_clicks_on_cam0_clock(rec):
    d, gt = rec
    g = gt["streams"]["cam0_audio"]
    first_pts, rate, pcm, codec = _decode_audio_track(d / "cam0.mp4")
    assert codec == "aac" and rate == g["sample_rate"] == 48000
    assert first_pts <= g["first_sample_pts"]
    lead = g["first_sample_pts"] - first_pts            # encoder priming samples
    assert len(pcm) - lead >= g["n_samples"]
    ev_idx = (np.array(gt["events_true_ns"]) - g["first_sample_t_true_ns"]) * rate / 1e9 + lead
    contrast = _click_contrast(pcm, rate, ev_idx)
    assert len(contrast) == len(gt["events_true_ns"])
    assert np.median(contrast) > 10 and contrast.min() > 3
    # control: 250 ms off, there is no click
    assert np.median(_click_contrast(pcm, rate, ev_idx + 0.25 * rate)) < 3


def test_speech_bursts_are_in_the_audio(rec):
    d, gt = rec
    first_pts, rate, pcm, _ = _decode_audio_track(d / "cam0.mp4")
    lp = sosfiltfilt(butter(4, 1000, "lowpass", fs=rate, output="sos"), pcm)
    t = (first_pts + np.arange(len(lp))) / rate * 1e9      # cam0 is the reference clock
    near_event = np.zeros(len(t), bool)
    for e in gt["events_true_ns"]:
        near_event |= (t >= e - 0.05e9) & (t < e + 0.3e9)
    in_speech, near_speech = np.zeros(len(t), bool), np.zeros(len(t), bool)
    for s, e in gt["speech_true_ns"]:
        in_speech |= (t >= s + 0.05e9) & (t < e - 0.05e9)
        near_speech |= (t >= s - 0.05e9) & (t < e + 0.05e9)
    quiet = ~near_speech & ~near_event & (t > gt["true_start_ns"]) & (t < gt["true_end_ns"])
    rms_speech = np.sqrt(np.mean(lp[in_speech & ~near_event] ** 2))
    rms_quiet = np.sqrt(np.mean(lp[quiet] ** 2))
    assert rms_speech > 10 * rms_quiet


# -- cam1: image sequence through H --------------------------------------------------------

def test_cam1_sequence_timestamps_and_corrupt_image(rec):
    d, gt = rec
    g = gt["streams"]["cam1"]
    lines = (d / "cam1/timestamps.txt").read_text().splitlines()
    bad = {int(b["position"].split("=")[1]) for b in gt["bad_records"] if b["stream"] == "cam1"}
    assert len(bad) == 1 and len(lines) == g["n_frames"] + 1
    assert sorted(set(range(len(lines))) - bad) == g["frames"]["pos"]
    t_dev = {}
    for i, line in enumerate(lines):
        t, name = line.split()
        img = cv2.imread(str(d / "cam1" / name))
        if i in bad:
            assert (d / "cam1" / name).stat().st_size > 0 and img is None
        else:
            assert img is not None and img.shape == (240, 320, 3)
            t_dev[i] = int(t)
    assert [t_dev[p] for p in g["frames"]["pos"]] == g["frames"]["t_dev_ns"]
    period = np.diff(g["frames"]["t_dev_ns"])
    assert 15 <= 1e9 / np.median(period) <= 30


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float(np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y)))


def test_cam1_is_cam0_through_the_homography(rec):
    d, gt = rec
    H = np.array(gt["homography_cam0_to_cam1"])
    _, images, _ = _decode_video(d / "cam0.mp4")
    t0 = np.array(gt["streams"]["cam0"]["frames"]["t_true_ns"])
    g1 = gt["streams"]["cam1"]
    lines = (d / "cam1/timestamps.txt").read_text().splitlines()
    ev = np.array(gt["events_true_ns"])
    mask = cv2.warpPerspective(np.ones((240, 320), np.uint8), H, (320, 240),
                               flags=cv2.INTER_NEAREST)
    mask = cv2.erode(mask, np.ones((7, 7), np.uint8)).astype(bool)
    assert 0.3 < mask.mean() < 0.98      # the views overlap, and cam1 also sees beyond cam0
    shifted = np.array([[1, 0, 3], [0, 1, 2], [0, 0, 1]]) @ H
    good, wrong = [], []
    for pos, t1 in zip(g1["frames"]["pos"], g1["frames"]["t_true_ns"]):
        i = int(np.argmin(np.abs(t0 - t1)))
        recent = ev[ev <= t1]
        if abs(t0[i] - t1) > 3e6 or (len(recent) and t1 - recent[-1] < 0.4e9):
            continue
        cam1 = cv2.cvtColor(cv2.imread(str(d / "cam1" / lines[pos].split()[1])),
                            cv2.COLOR_BGR2GRAY)
        gray0 = cv2.cvtColor(images[i], cv2.COLOR_BGR2GRAY)
        good.append(_ncc(cv2.warpPerspective(gray0, H, (320, 240)), cam1, mask))
        wrong.append(_ncc(cv2.warpPerspective(gray0, shifted, (320, 240)), cam1, mask))
    assert len(good) >= 10
    assert min(good) > 0.98
    assert max(wrong) < min(good) - 0.1


# -- mic -----------------------------------------------------------------------------------

def test_mic_wav_length_and_clicks_on_its_own_clock(rec):
    d, gt = rec
    g = gt["streams"]["mic"]
    info = sf.info(str(d / "mic.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    dur = (gt["true_end_ns"] - gt["true_start_ns"]) / 1e9
    assert info.frames == g["n_samples"] == round(dur * 16000)
    x, rate = sf.read(str(d / "mic.wav"), dtype="float64")
    ev = np.array(gt["events_true_ns"])
    dev = _model(gt, "mic").to_dev(ev)
    idx = (dev - g["first_sample_t_dev_ns"]) * rate / 1e9
    contrast = _click_contrast(x, rate, idx)
    assert len(contrast) == len(ev)
    assert np.median(contrast) > 10 and contrast.min() > 3
    # control: read as if the mic ran on the reference clock, the clicks are not there
    naive = (ev - g["first_sample_t_dev_ns"]) * rate / 1e9
    assert np.median(_click_contrast(x, rate, naive)) < 3


# -- imu -----------------------------------------------------------------------------------

def _imu_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_imu_bad_rows_are_where_ground_truth_says(rec):
    d, gt = rec
    header, rows = _imu_rows(d / "imu.csv")
    assert header == ["t_ns", "ax", "ay", "az", "gx", "gy", "gz"]
    bad = {int(b["position"].split("=")[1]): b for b in gt["bad_records"]
           if b["stream"] == "imu"}
    assert sorted((b["reason"], b["stage"]) for b in bad.values()) == [
        ("duplicate_timestamp", "validate"), ("non_finite", "validate"),
        ("non_numeric", "decode"), ("out_of_order", "validate")]
    running_max = -1
    for i, row in enumerate(rows):
        b = bad.get(i)
        if b is not None and b["reason"] == "non_numeric":
            with pytest.raises(ValueError):
                [float(v) for v in row]
            continue
        t, vals = int(row[0]), np.array([float(v) for v in row[1:]])
        if b is None:
            assert np.isfinite(vals).all() and t > running_max, i
        elif b["reason"] == "non_finite":
            assert np.isnan(vals).any() and t > running_max
        elif b["reason"] == "duplicate_timestamp":
            assert t == running_max
        else:
            assert t < running_max
        running_max = max(running_max, t)


def test_imu_valid_rows_and_spikes(rec):
    d, gt = rec
    g = gt["streams"]["imu"]
    _, rows = _imu_rows(d / "imu.csv")
    bad = {int(b["position"].split("=")[1]) for b in gt["bad_records"] if b["stream"] == "imu"}
    assert sorted(set(range(len(rows))) - bad) == g["rows"]["pos"]
    data = np.array([[float(v) for v in rows[p]] for p in g["rows"]["pos"]])
    t = data[:, 0].astype(np.int64)
    assert t.tolist() == g["rows"]["t_dev_ns"]
    assert 1e9 / np.median(np.diff(t)) == pytest.approx(200.0, rel=1e-3)
    assert abs(np.median(np.linalg.norm(data[:, 1:4], axis=1)) - 9.81) < 0.3
    dev = np.linalg.norm(data[:, 1:4] - np.median(data[:, 1:4], axis=0), axis=1)
    ev_dev = _model(gt, "imu").to_dev(gt["events_true_ns"])
    quiet = np.ones(len(t), bool)
    for e in ev_dev:
        near = (t >= e) & (t < e + 0.05e9)
        assert dev[near].max() > 5.0
        quiet &= ~((t >= e - 0.01e9) & (t < e + 0.35e9))
    assert dev[quiet].max() < 1.0


# -- transcript ----------------------------------------------------------------------------

def _srt_ns(s: bytes) -> int:
    hms, ms = s.strip().split(b",")
    h, m, sec = (int(x) for x in hms.split(b":"))
    return ((h * 60 + m) * 60 + sec) * 1_000_000_000 + int(ms) * 1_000_000


def test_transcript_cues_and_bad_cues(rec):
    d, gt = rec
    g = gt["streams"]["transcript"]
    blocks = [b for b in (d / "transcript.srt").read_bytes().split(b"\n\n") if b.strip()]
    bad = {int(b["position"].split("=")[1]): b for b in gt["bad_records"]
           if b["stream"] == "transcript"}
    assert sorted((b["reason"], b["stage"]) for b in bad.values()) == [
        ("end_before_start", "validate"), ("invalid_utf8", "decode")]
    assert len(blocks) == len(g["cues"]["pos"]) + 2
    starts, valid = [], []
    for i, block in enumerate(blocks):
        number, timing, text = block.split(b"\n", 2)
        assert int(number) == i + 1
        start, end = (_srt_ns(x) for x in timing.split(b"-->"))
        starts.append(start)
        reason = bad[i]["reason"] if i in bad else None
        if reason == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                text.decode("utf-8")
        elif reason == "end_before_start":
            assert end < start
        else:
            assert end > start
            valid.append((i, start, end, text.decode("utf-8")))
    assert np.all(np.diff(starts) > 0)
    assert [v[0] for v in valid] == g["cues"]["pos"]
    assert [v[1] for v in valid] == g["cues"]["t_dev_ns"]
    assert [v[2] for v in valid] == g["cues"]["t_end_dev_ns"]
    assert [v[3] for v in valid] == g["cues"]["text"] == [
        f"segment {k + 1}" for k in range(len(valid))]
    true = np.column_stack([g["cues"]["t_true_ns"], g["cues"]["t_end_true_ns"]])
    assert true.tolist() == gt["speech_true_ns"]
    assert (true[:, 0] - np.array(g["cues"]["t_dev_ns"]) == 500_000_000).all()


# -- determinism, options, argument errors -------------------------------------------------

def test_same_seed_same_files(tmp_path):
    a = generate_recording(tmp_path / "a", seed=11, duration_s=4.0).parent
    b = generate_recording(tmp_path / "b", seed=11, duration_s=4.0).parent
    c = generate_recording(tmp_path / "c", seed=12, duration_s=4.0).parent
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for n in names:
        if n != "cam0.mp4":
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert _decode_video(a / "cam0.mp4")[0] == _decode_video(b / "cam0.mp4")[0]
    for n in ("imu.csv", "mic.wav", "ground_truth.json", "cam1/000010.png"):
        assert (a / n).read_bytes() != (c / n).read_bytes(), n


def test_undeclared_clocks_clean_recording(plain):
    d, gt = plain
    m = load_manifest(d / "manifest.yaml")
    assert m.session == "plain-3"
    cal = load_calibration(m.resolve(m.calibration, "calibration"))
    assert cal.clocks == {}
    sync = {s.id: s.sync for s in m.streams if s.sync is not None}
    assert set(sync) == {"cam1", "mic", "imu", "transcript"}
    assert sync["cam1"].reference == "cam0" and sync["mic"].reference == "cam0_audio"
    assert gt["bad_records"] == []
    assert gt["streams"]["mic"]["clock"] == {"domain": "mic", "offset_ns": -1_250_000_000,
                                             "drift_ppm": -150.0, "anchor_ns": 0}
    # every record is valid: all rows, images and cues, device times never negative
    _, rows = _imu_rows(d / "imu.csv")
    t = np.array([int(r[0]) for r in rows])
    assert np.isfinite(np.array([[float(v) for v in r[1:]] for r in rows])).all()
    assert (np.diff(t) > 0).all() and t.min() >= 0
    assert gt["streams"]["imu"]["rows"]["pos"] == list(range(len(rows)))
    lines = (d / "cam1/timestamps.txt").read_text().splitlines()
    assert all(cv2.imread(str(d / "cam1" / ln.split()[1])) is not None for ln in lines)
    assert gt["streams"]["cam1"]["frames"]["pos"] == list(range(len(lines)))
    assert (d / "transcript.srt").read_bytes().decode("utf-8").count(" --> ") == len(
        gt["streams"]["transcript"]["cues"]["pos"]) == len(gt["speech_true_ns"])
    assert gt["streams"]["mic"]["first_sample_t_dev_ns"] >= 0
    pts, images, _ = _decode_video(d / "cam0.mp4")
    assert pts == gt["streams"]["cam0"]["frames"]["pts"] and images[0].shape == (192, 256, 3)
    x, rate = sf.read(str(d / "mic.wav"))
    assert len(x) == 5 * rate


@pytest.mark.parametrize("kwargs, match", [
    ({"duration_s": 1.0}, "duration_s"),
    ({"duration_s": 3600.5}, "duration_s"),
    ({"size": (321, 240)}, "size"),
    ({"fps": 0.5}, "fps"),
    ({"imu_hz": 50.0}, "imu_hz"),
    ({"mic_rate": 4000}, "mic_rate"),
    ({"session": "bad session!"}, "session"),
    ({"clocks": {"cam0": {"offset_ns": 5}}}, "reference"),
    ({"clocks": {"gps": {"offset_ns": 5}}}, "unknown stream"),
    ({"clocks": {"mic": {"offset_ms": 5}}}, "offset_ns"),
    ({"clocks": {"mic": {"offset_ns": 0.5}}}, "integer"),
    ({"clocks": {"imu": {"drift_ppm": 5000}}}, "drift_ppm"),
])
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_recording(tmp_path / "x", **kwargs)
