"""EstimateClocks on the DirectRunner: chunks built from real files (WAV read back, H.264 video
decoded by pts, IMU rows, subtitle cues), each device on its own clock."""

from __future__ import annotations

import json

import apache_beam as beam
import av
import cv2
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that

from mmalign.schemas import audio as audio_schema
from mmalign.schemas import sensor as sensor_schema
from mmalign.schemas import text as text_schema
from mmalign.schemas import video as video_schema
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.manifest import Manifest, ManifestError
from mmalign.transforms.clock.features import NS
from mmalign.transforms.clock.sync import EstimateClocks, plan_sync, sync_session, video_grey
from tests.media import (
    Clock,
    expected_map,
    make_audio,
    make_cues,
    make_events,
    make_imu,
    make_speech,
    make_video,
)

SESSION = "s1"
DUR = 40.0
CLOCKS = {"mic": Clock(0.0, 0.0), "cam": Clock(-3.1, 220.0), "imu": Clock(4.2, -180.0),
          "subs": Clock(2.2, 90.0)}


def manifest(tmp_path, streams_sync: dict) -> Manifest:
    streams = [{"id": "mic", "modality": "audio", "files": ["a.wav"]},
               {"id": "cam", "modality": "video", "files": ["v.mp4"]},
               {"id": "imu", "modality": "sensor", "files": ["imu.csv"]},
               {"id": "subs", "modality": "text", "files": ["subs.srt"]},
               {"id": "lidar", "modality": "sensor", "files": ["none.csv"]}]
    for s in streams:
        if s["id"] in streams_sync:
            s["sync"] = streams_sync[s["id"]]
    return Manifest.model_validate({"session": SESSION, "streams": streams,
                                    "alignment": {"ticks": {"rate_hz": 10}}},
                                   context={"base_dir": str(tmp_path)})


def chunk(stream, modality, seq, uri, batch, meta=None):
    return Chunk(SESSION, stream, modality, seq, uri, batch, meta or {})


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Chunks of one 40 s recording: impacts heard, seen and felt, and speech with subtitles
    (speech mixed into the same microphone track)."""
    tmp = tmp_path_factory.mktemp("rec")
    ev = make_events(51, duration_s=DUR, n=26)
    cues = make_cues(52, 100.0, DUR)
    t0, clicks = make_audio(tmp / "clicks.wav", ev, CLOCKS["mic"], 100.0, DUR)
    _, speech = make_speech(tmp / "speech.wav", cues, CLOCKS["mic"], 100.0, DUR)
    pcm = (clicks + 0.6 * speech).astype(np.float32)
    chunks = []
    blocks = np.array_split(pcm, np.arange(4096, len(pcm), 4096))
    starts = np.r_[0, np.cumsum([len(b) for b in blocks])[:-1]]
    t_blocks = np.rint(t0 * NS + starts * (NS / 16000)).astype(np.int64)
    for seq, i in enumerate(range(0, len(blocks), 40)):
        sl = slice(i, i + 40)
        batch = pa.RecordBatch.from_pydict(
            {"t_ns": t_blocks[sl], "pos": starts[sl], "n_samples": [len(b) for b in blocks[sl]],
             "pcm": [b.tolist() for b in blocks[sl]]}, schema=audio_schema.ARROW_SCHEMA)
        chunks.append(chunk("mic", "audio", seq, str(tmp / "a.wav"), batch,
                            {"sample_rate": 16000}))
    t_dev = make_video(tmp / "v.mp4", ev, CLOCKS["cam"], 100.0, DUR)
    with av.open(str(tmp / "v.mp4")) as c:                      # the container's own pts
        pts = np.sort([f.pts for f in c.decode(video=0)])
    assert len(pts) == len(t_dev)
    for seq, i in enumerate(range(0, len(t_dev), 250)):
        k = np.arange(i, min(i + 250, len(t_dev)))
        batch = pa.RecordBatch.from_pydict(
            {"t_ns": np.rint(t_dev[k] * NS).astype(np.int64), "pos": k, "pts": pts[k],
             "width": [64] * len(k), "height": [48] * len(k), "keyframe": [False] * len(k),
             "file": [None] * len(k), "image": [None] * len(k)},
            schema=video_schema.ARROW_SCHEMA)
        chunks.append(chunk("cam", "video", seq, str(tmp / "v.mp4"), batch,
                            {"kind": "container"}))
    t_ns, acc = make_imu(ev, CLOCKS["imu"], 100.0, DUR)
    schema = sensor_schema.arrow_schema(["ax", "ay", "az", "temp"])
    for seq, i in enumerate(range(0, len(t_ns), 1000)):
        sl = slice(i, i + 1000)
        n = len(t_ns[sl])
        batch = pa.RecordBatch.from_pydict(
            {"t_ns": t_ns[sl], "pos": np.arange(i, i + n), "ax": acc[sl, 0], "ay": acc[sl, 1],
             "az": acc[sl, 2], "temp": np.full(n, 25.0)}, schema=schema)
        chunks.append(chunk("imu", "sensor", seq, str(tmp / "imu.csv"), batch))
    dev = CLOCKS["subs"].dev(cues)
    for seq, i in enumerate(range(0, len(cues), 5)):
        sl = slice(i, i + 5)
        n = len(dev[sl])
        batch = pa.RecordBatch.from_pydict(
            {"t_ns": np.rint(dev[sl, 0] * NS).astype(np.int64),
             "t_end_ns": np.rint(dev[sl, 1] * NS).astype(np.int64),
             "pos": np.arange(i, i + n), "text": ["hello"] * n, "kind": ["segment"] * n},
            schema=text_schema.ARROW_SCHEMA)
        chunks.append(chunk("subs", "text", seq, str(tmp / "subs.srt"), batch))
    return chunks, CLOCKS, tmp


def run_stage(chunks, m, declared, check):
    with beam.Pipeline() as p:
        out = (p | beam.Create(chunks, reshuffle=False)
               | EstimateClocks(m, declared))
        assert_that(out, check)


def test_estimate_clocks_end_to_end(recording, tmp_path):
    chunks, clocks, _ = recording
    m = manifest(tmp_path, {
        "cam": {"reference": "mic"},
        "imu": {"reference": "mic", "channels": ["ax", "ay", "az"]},
        "subs": {"reference": "mic"},                    # default: activity features
        "lidar": {"reference": "imu"},                    # no chunks at all
    })
    declared = {"lidar": ClockModel.declared(offset_ns=5, drift_ppm=1.0)}
    targets = {"cam": 33.0, "imu": 10.0, "subs": 100.0}

    def check(results):
        got = {sid: r for (sess, sid, r) in results}
        assert sorted(got) == ["cam", "imu", "lidar", "subs"] and all(
            s == SESSION for s, _, _ in results)
        for sid, tol_ms in targets.items():
            r = got[sid]
            assert not r.fell_back, (sid, r.reason)
            t = np.linspace(101, 139, 20)
            dev_t = clocks[sid].dev(t)
            want = expected_map(clocks[sid], clocks["mic"], dev_t) * NS
            err = np.max(np.abs(r.model.to_ref(np.rint(dev_t * NS).astype(np.int64)) - want))
            assert err / 1e6 < tol_ms, (sid, err / 1e6)
            assert r.model.source == "estimated" and 0 < r.confidence <= 1
        assert got["subs"].features == "text_activity~speech_activity"
        assert got["cam"].features == "video_motion~audio_onset"
        lidar = got["lidar"]
        assert lidar.fell_back and "no chunks" in lidar.reason
        assert lidar.model == ClockModel(5, 1e-6, 0, "fallback", 0.0)
        json.dumps([r.to_dict() for r in got.values()])

    run_stage(chunks, m, declared, check)


def test_chained_reference_composes_and_bad_chunks_are_reported(recording, tmp_path):
    chunks, clocks, tmp = recording
    m = manifest(tmp_path, {"imu": {"reference": "mic"}, "cam": {"reference": "imu"}})
    broken = [c for c in chunks if c.stream_id == "cam"][0]
    broken = Chunk(SESSION, "cam", "video", 99, str(tmp / "missing.mp4"), broken.data,
                   {"kind": "container"})

    def check(results):
        got = {sid: r for (_, sid, r) in results}
        cam = got["cam"]
        assert not cam.fell_back, cam.reason
        assert len(cam.warnings) == 1 and "missing.mp4" in cam.warnings[0]
        t = clocks["cam"].dev(np.linspace(101, 139, 20))
        want = expected_map(clocks["cam"], clocks["mic"], t) * NS   # composed cam->imu->mic
        err = np.max(np.abs(cam.model.to_ref(np.rint(t * NS).astype(np.int64)) - want))
        assert err / 1e6 < 33.0

    run_stage(chunks + [broken], m, {}, check)


def test_unmatched_streams_fall_back_with_reason(recording, tmp_path):
    chunks, _, _ = recording
    # impacts against subtitle timings share no events: never a silent bad model
    m = manifest(tmp_path, {"subs": {"reference": "imu", "features": "events",
                                     "min_confidence": 0.9}})
    feats = _features(chunks, m)
    plan = plan_sync(m, {"subs": ClockModel.declared(offset_ns=7)})
    [r] = sync_session(plan, feats)
    assert r.fell_back and r.reason and r.model.source == "fallback" and r.model.offset_ns == 7


def _features(chunks, m):
    from mmalign.transforms.clock.sync import chunk_partial, stream_features
    plan = plan_sync(m, {})
    parts: dict = {}
    for c in chunks:
        need = plan.needs.get(c.stream_id)
        for rate in (need.families if need else {}):
            parts.setdefault((c.stream_id, rate), []).append(chunk_partial(c, need, rate))
    return {k: stream_features(plan.needs[k[0]].modality, k[1], plan.needs[k[0]].families[k[1]],
                               v)[0] for k, v in parts.items()}


def test_plan_rejects_bad_sync_config(tmp_path):
    with pytest.raises(ManifestError, match="features"):
        plan_sync(manifest(tmp_path, {"cam": {"reference": "mic", "features": "colour"}}), {})
    with pytest.raises(ManifestError, match="itself"):
        plan_sync(manifest(tmp_path, {"cam": {"reference": "cam"}}), {})
    m = manifest(tmp_path, {"cam": {"reference": "imu"}, "imu": {"reference": "cam"}})
    results = sync_session(plan_sync(m, {}), {})
    assert all(r.fell_back and "cycle" in r.reason for r in results) and len(results) == 2


def test_video_grey_reads_image_files_and_inline_images(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    for k, im in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"f{k}.png"), im)
    jpeg = [cv2.imencode(".jpg", im)[1].tobytes() for im in imgs]
    base = {"t_ns": [0, 33, 66], "pos": [0, 1, 2], "pts": [None] * 3, "width": [64] * 3,
            "height": [48] * 3, "keyframe": [True] * 3}
    files = pa.RecordBatch.from_pydict(
        {**base, "file": ["f0.png", "f1.png", "nope.png"], "image": [None] * 3},
        schema=video_schema.ARROW_SCHEMA)
    t, frames, lost = video_grey(Chunk(SESSION, "cam", "video", 0, str(tmp_path / "ts.txt"),
                                       files, {"image_dir": str(tmp_path)}))
    assert list(t) == [0, 33] and frames.shape == (2, 24, 32) and lost == 1
    inline = pa.RecordBatch.from_pydict({**base, "file": [None] * 3, "image": jpeg},
                                        schema=video_schema.ARROW_SCHEMA)
    t, frames, lost = video_grey(Chunk(SESSION, "cam", "video", 0, "x", inline, {}))
    assert frames.shape == (3, 24, 32) and lost == 0
    grey = cv2.cvtColor(imgs[1], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA)
    assert np.abs(frames[1].astype(int) - small).mean() < 8      # JPEG loss only
