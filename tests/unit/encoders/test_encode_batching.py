"""Batch-level preprocessing and CPU threads of the encoders, and the encoder benchmark's
pipelines on a real H.264 file: the stage encodes the same frames to the same vectors as a
raw model call, so the benchmark compares like with like."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from apache_beam.utils import shared

from mmalign.encoders import video
from mmalign.encoders.device import (
    batch_from_memory,
    configure_cpu_threads,
    probe_batch_size,
    select_device,
)
from mmalign.encoders.handlers import (
    EncodeRequest,
    encode_requests,
    load_runner,
    preprocess_request,
)
from mmalign.schemas.encoders import EncoderConfig
from mmalign.transforms.decode.video import load_frames

ROOT = Path(__file__).resolve().parents[3]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_encoders",
                                                  ROOT / "benchmarks" / "bench_encoders.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(6)]


def test_batch_normalisation_is_the_per_frame_formula(frames):
    crops = np.stack([video.crop_frame(f, 48) for f in frames])
    per_frame = np.stack([((c.astype(np.float32) / 255.0 - video.MEAN) / video.STD)
                          .transpose(2, 0, 1) for c in crops])
    batch = video.normalise_batch(torch.from_numpy(crops)).numpy()
    assert batch.shape == (6, 3, 48, 48) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, per_frame)                 # bit for bit
    np.testing.assert_array_equal(video.preprocess_frames(frames, 48), per_frame)
    np.testing.assert_array_equal(video.preprocess_frame(frames[2], 48), per_frame[2])
    with pytest.raises(ValueError, match="uint8"):
        video.normalise_batch(torch.zeros((2, 48, 48, 3)))


def test_runner_encodes_uint8_crops_like_the_model_on_preprocessed_frames(frames):
    cfg = EncoderConfig(modality="video", device="cpu", kwargs={"size": 64})
    runner = load_runner(cfg)
    opts = runner.encoder.preprocess
    reqs = [EncodeRequest("s", "cam0", "video", i, f) for i, f in enumerate(frames)]
    crops = [preprocess_request(r, opts) for r in reqs]
    assert all(c.dtype == np.uint8 and c.shape == (64, 64, 3) for c in crops)
    with torch.inference_mode():
        want = runner.encoder.model(torch.from_numpy(video.preprocess_frames(frames, 64)))
    np.testing.assert_allclose(runner.encode(crops), want.numpy(), rtol=1e-5, atol=1e-6)
    embs, dead = encode_requests(cfg, reqs, runner)
    assert not dead and all(e.dim == 1280 for e in embs)


def test_cpu_threads_are_configurable_and_capped():
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(1) == 1 == torch.get_num_threads()
        allowed = len(os.sched_getaffinity(0))
        torch.set_num_threads(allowed + 3)
        assert configure_cpu_threads(None) == allowed
        with pytest.raises(ValueError, match=">= 1"):
            configure_cpu_threads(0)
        with pytest.raises(ValueError):
            EncoderConfig(modality="video", cpu_threads=0)
        load_runner(EncoderConfig(modality="video", device="cpu", cpu_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_benchmark_pipelines_encode_every_frame_like_the_raw_loop(tmp_path):
    """Both benchmarked pipelines run on a real file; the post-align stage's vectors equal the
    raw load -> preprocess -> forward loop's."""
    bench = _bench()
    n, batch = 10, 4
    path = tmp_path / "cam0.mp4"
    bench.write_video(path, n, 96, 64)
    frames = list(load_frames(str(path), list(range(n))))
    assert len(frames) == n and frames[0].shape == (64, 96, 3)
    cfg = EncoderConfig(modality="video", device="cpu", min_batch_size=batch,
                        max_batch_size=batch, kwargs={"size": 48})
    handle = shared.Shared()
    keep = handle.acquire(lambda: bench._Frames(frames), tag="bench-frames")
    t = bench.run_encode_modality(cfg, handle, n)       # raises unless n embeddings
    assert t.frames == n and t.wall > 0
    assert keep.frames is frames

    from mmalign.encoders.stage import EncodeAlignedFn, SessionEncode, StreamEncode
    from mmalign.schemas.manifest import Stream
    tables = bench.aligned_tables(str(path), n, batch)
    assert [t.num_rows for _, t in tables] == [4, 4, 2]
    stream = Stream(id=bench.CAM, modality="video", files=[str(path)])
    fn = EncodeAlignedFn({bench.SESSION: SessionEncode(
        bench.SESSION, (StreamEncode(stream, cfg),), None)})
    fn.setup()
    got = np.concatenate([np.stack(list(fn.process(el))[-1][1].column("cam0__emb")
                                   .to_numpy(zero_copy_only=False)) for el in tables])
    runner = load_runner(cfg)
    with torch.inference_mode():
        want = runner.encoder.model(torch.from_numpy(video.preprocess_frames(frames, 48)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    bench.run_stage(cfg, str(path), n, batch)            # raises unless n rows are "ok"


def test_video_inputs_crop_as_they_decode_and_keep_row_failures_apart(tmp_path):
    """One sequential decode per source, one crop per row (rows sharing a frame share its
    decode), a singular homography is that row's preprocess failure, a frame past the end is
    a load failure of its row only."""
    import pyarrow as pa

    from mmalign.encoders.handlers import preprocess_video
    from mmalign.encoders.stage import (
        Prepared,
        PrepareFailed,
        StreamEncode,
        encode_stream,
        video_inputs,
    )
    from mmalign.schemas.manifest import Stream
    from mmalign.transforms.decode.video import iter_frames

    bench = _bench()
    path = tmp_path / "cam0.mp4"
    bench.write_video(path, 12, 96, 64)
    assert [p for p, _ in iter_frames(str(path), [7, 2, 7, 0])] == [0, 2, 7]
    frames = load_frames(str(path), list(range(12)))
    eye, singular = np.eye(3).ravel().tolist(), [0.0] * 9
    table = pa.table({
        "session_id": ["s"] * 6, "tick_ns": pa.array(range(6), pa.int64()),
        "cam0__status": ["ok"] * 5 + ["missing"],
        "cam0__pos": pa.array([5, 1, 5, 3, 40, None], pa.int64()),
        "cam0__src": [str(path)] * 5 + [None],
        "cam0__H": [eye, eye, singular, eye, eye, None],
    })
    cfg = EncoderConfig(modality="video", device="cpu", kwargs={"size": 32})
    se = StreamEncode(Stream(id="cam0", modality="video", files=[str(path)]), cfg, warp=True)
    runner = load_runner(cfg)
    opts = runner.encoder.preprocess
    inputs = video_inputs(table, se, opts)
    for i, p in ((0, 5), (1, 1), (3, 3)):
        assert isinstance(inputs[i], Prepared) and inputs[i].x.shape == (32, 32, 3)
        np.testing.assert_array_equal(inputs[i].x, preprocess_video(frames[p], np.eye(3), opts))
    assert isinstance(inputs[2], PrepareFailed) and "singular" in str(inputs[2].error)
    assert isinstance(inputs[4], ValueError) and "out of range" in str(inputs[4])
    assert inputs[5] is None
    cols, mat, dead = encode_stream(table, se, runner, inputs, opts, "r")
    assert cols["cam0__emb_status"].to_pylist() == [
        "ok", "ok", "preprocess_failed", "ok", "load_failed", "no_input:missing"]
    assert sorted(d.reason for d in dead) == ["load_failed", "preprocess_failed"]
    # the same vectors as encoding crops of the loaded frames directly
    want = runner.encode([preprocess_video(frames[p], np.eye(3), opts) for p in (5, 1, 3)])
    np.testing.assert_array_equal(mat[[0, 1, 3]], want)


def test_batch_from_memory_is_the_largest_power_of_two_that_fits() -> None:
    gib = 2**30
    # 60 % of 8 GiB = 4.8 GiB at 20 MiB per item -> 245 items fit -> 128
    assert batch_from_memory(8 * gib, 20 * 2**20) == 128
    assert batch_from_memory(8 * gib, 20 * 2**20, fraction=0.9) == 256
    assert batch_from_memory(80 * gib, 1 * 2**20) == 1024          # capped
    assert batch_from_memory(80 * gib, 1 * 2**20, cap=100) == 64
    assert batch_from_memory(10 * 2**20, 20 * 2**20) == 1          # nothing fits: still 1
    assert batch_from_memory(gib, 0) == 1024


def test_probe_batch_size_on_cpu_is_the_cap() -> None:
    model = video.VideoEncoder()
    assert probe_batch_size(model, torch.zeros(3, 32, 32), select_device("cpu"), cap=64) == 64
