"""Encoder stage throughput inside a Beam pipeline (EncodeModality: preprocess + batched
RunInference + postprocess, DirectRunner) vs the raw model forward at the same batch size on
the same device (CUDA if present). Prints frames/s and the ratio (goal >= 0.8 on CPU).

    python benchmarks/bench_encoders.py [--frames 2048] [--batch 64] [--size 112] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

import apache_beam as beam
import numpy as np
import torch

from encoders.device import inference_context, to_device
from encoders.handlers import EncodeModality, EncodeRequest, load_runner
from encoders.registry import EncoderConfig
from encoders.video import preprocess_frame


def raw_forward(cfg: EncoderConfig, frames: list[np.ndarray], batch: int,
                preprocess: bool) -> float:
    """Seconds for the model forward over all frames in batches (optionally + preprocessing)."""
    runner = load_runner(cfg)
    size = runner.encoder.preprocess["size"]
    pre = None if preprocess else np.stack([preprocess_frame(f, size) for f in frames])
    t = time.perf_counter()
    for i in range(0, len(frames), batch):
        x = (np.stack([preprocess_frame(f, size) for f in frames[i:i + batch]]) if preprocess
             else pre[i:i + batch])
        with inference_context(runner.spec):
            out = runner.encoder.model(to_device(x, runner.spec))
        out.float().cpu().numpy()
    if runner.spec.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def make_frame(i: int, size: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)


def beam_stage(cfg: EncoderConfig, n: int, size: int) -> float:
    """Frames are made inside the pipeline: beam.Create of large arrays costs far more
    (element encoding into the pipeline proto) than the stage being measured."""
    t = time.perf_counter()
    with beam.Pipeline() as p:
        out = (p | beam.Create(range(n), reshuffle=False)
               | beam.Map(lambda i: EncodeRequest("bench", "cam0", "video", i,
                                                  make_frame(i, size)))
               | EncodeModality(cfg))
        _ = out["embeddings"] | beam.combiners.Count.Globally()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=112, help="frame side (= model input size)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    frames = [make_frame(i, args.size) for i in range(args.frames)]
    cfg = EncoderConfig(modality="video", min_batch_size=args.batch, max_batch_size=args.batch)
    device = load_runner(cfg).spec
    print(f"device={device.device} precision={device.precision} frames={args.frames} "
          f"batch={args.batch} size={args.size} torch_threads={torch.get_num_threads()}")
    raw = min(raw_forward(cfg, frames, args.batch, False) for _ in range(args.repeat))
    raw_pre = min(raw_forward(cfg, frames, args.batch, True) for _ in range(args.repeat))
    stage = min(beam_stage(cfg, args.frames, args.size) for _ in range(args.repeat))
    n = args.frames
    print(f"raw forward            {n / raw:9.1f} frames/s")
    print(f"raw preprocess+forward {n / raw_pre:9.1f} frames/s")
    print(f"beam EncodeModality    {n / stage:9.1f} frames/s (incl. pipeline start-up)")
    print(f"ratio beam / raw forward            = {raw / stage:.2f}  (goal >= 0.8)")
    print(f"ratio beam / raw preprocess+forward = {raw_pre / stage:.2f}")


if __name__ == "__main__":
    main()
