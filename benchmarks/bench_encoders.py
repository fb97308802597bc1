"""Encoder stage throughput inside a Beam pipeline vs the raw model forward, same model, same
batch size, same device (CUDA when present), same frames. Goal (issue 4): >= 0.9 of raw on
GPU, >= 0.8 on CPU.

    python benchmarks/bench_encoders.py [--frames 1024] [--small 256] [--batch 64 | auto]
                                        [--bucket 256]
                                        [--name efficientnet-lite0-imagenet | random-projection]
                                        [--frame-size 320x240] [--repeat 5] [--quick]
                                        [--device auto] [--precision auto]

``--batch auto`` (CUDA): the largest power-of-two batch whose activations fit in 60 % of the
device's free memory (``encoders/device.py`` ``probe_batch_size``: one probe forward of 8
frames under the chosen autocast); on CPU auto means 64. ``benchmarks/gpu_check.sh`` runs this
script that way in bf16 and fp16.

Input: one H.264 file written here (PyAV, --frame-size, 30 fps); its frames decoded once into
memory for the raw loops and the RunInference path. Measured in --repeat rounds, each running
every item at both sizes, interleaved; figures are medians over rounds, ratios are paired
within a round (wall clock; process CPU seconds beside it):

  raw forward            tight loop: preprocessed float batches -> device -> model -> host
  raw pre+forward        the same plus the stage's preprocessing (crop + batch normalise)
  raw load+pre+forward   the same plus ``load_frames`` from the file, one call per --bucket
                         frames like the stage (its input is the aligned row's reference, so
                         it decodes)
  EncodeModality         RunInference path: EncodeRequest(frame in memory) -> preprocess ->
                         batched RunInference -> Embedding, DirectRunner
  post-align stage       the backfill's encode stage (encoders/stage.py EncodeAlignedFn) on
                         aligned tables of --bucket rows (tick, cam0__pos, cam0__src): loads,
                         preprocesses, encodes in --batch batches, appends columns, DirectRunner

Every item runs on --frames and on --small frames. "Whole run" = frames / wall time (a
pipeline's includes construction, model load in setup and bundle set-up); "marginal" =
(frames - small) / (T(frames) - T(small)), the steady-state rate a long backfill sees. (A
per-batch time stamp cannot be taken after EncodeModality: on the DirectRunner its output
Flatten materialises the embeddings, so a downstream DoFn sees them all at the end.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apache_beam as beam
import av
import numpy as np
import pyarrow as pa
import torch
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.utils import shared

from mmalign.encoders.device import inference_context, probe_batch_size, to_device
from mmalign.encoders.handlers import EncodeModality, EncodeRequest, EncoderRunner, load_runner
from mmalign.encoders.stage import DEAD, EncodeAlignedFn, SessionEncode, StreamEncode
from mmalign.encoders.video import preprocess_frames
from mmalign.schemas.encoders import EncoderConfig
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.video import load_frames

FPS = 30
SESSION, CAM = "bench", "cam0"


# ------------------------------------------------------------------ input

def write_video(path: Path, n: int, width: int, height: int) -> None:
    """``n`` frames of a moving textured scene, H.264 (yuv420p, crf 18)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(FPS), options={"crf": "18", "bf": "0",
                                                                    "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            dx, dy = i % 8, (i // 3) % 8
            img = np.ascontiguousarray(base[dy:dy + height, dx:dx + width])
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)


class _Frames:
    """Decoded frames held by ``shared.Shared`` so the pipeline reads them from memory, like
    frames handed over by a fused upstream stage (not pickled into the pipeline)."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames


class _Requests(beam.DoFn):
    def __init__(self, handle: shared.Shared):
        self.handle = handle

    def setup(self):
        self.pool = self.handle.acquire(_no_frames, tag="bench-frames").frames

    def process(self, i: int):
        yield EncodeRequest(SESSION, CAM, "video", i * 1_000_000_000 // FPS, self.pool[i],
                            source_uri="memory", position=f"frame={i}")


def _no_frames() -> _Frames:
    raise RuntimeError("bench frames were not placed in shared memory before the run")


def aligned_tables(path: str, n: int, rows: int) -> list[tuple[tuple[str, int], pa.Table]]:
    """What the aligner emits for one camera aligned on its own frames: per bucket of
    ``rows`` ticks, session_id, bucket, tick_ns, cam0__status/__pos/__src."""
    out = []
    for b, k in enumerate(range(0, n, rows)):
        pos = np.arange(k, min(n, k + rows), dtype=np.int64)
        out.append(((SESSION, b), pa.table({
            "session_id": pa.array([SESSION] * len(pos)),
            "bucket": pa.array([b] * len(pos), pa.int64()),
            "tick_ns": pa.array(pos * 1_000_000_000 // FPS, pa.int64()),
            f"{CAM}__status": pa.array(["ok"] * len(pos)),
            f"{CAM}__pos": pa.array(pos),
            f"{CAM}__src": pa.array([path] * len(pos)),
        })))
    return out


# ------------------------------------------------------------------ timing

@dataclass
class Timing:
    """One run: frames, wall and process CPU seconds."""
    frames: int
    wall: float
    cpu: float


def run_raw(fn: Callable[[], None], frames: int) -> Timing:
    """Time ``fn`` in this (the main) thread: the DirectRunner runs its bundles here too."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return Timing(frames, time.perf_counter() - w, time.process_time() - c)


# ------------------------------------------------------------------ raw loops

def _forward(runner: EncoderRunner, x: np.ndarray) -> np.ndarray:
    with inference_context(runner.spec):
        out = runner.encoder.model(to_device(x, runner.spec))
    return out.float().cpu().numpy()


def raw_forward(runner: EncoderRunner, pre: np.ndarray, batch: int) -> None:
    for i in range(0, len(pre), batch):
        _forward(runner, pre[i:i + batch])


def raw_pre_forward(runner: EncoderRunner, frames: list[np.ndarray], batch: int) -> None:
    size = runner.encoder.preprocess["size"]
    for i in range(0, len(frames), batch):
        _forward(runner, preprocess_frames(frames[i:i + batch], size))


def raw_load_pre_forward(runner: EncoderRunner, path: str, n: int, batch: int,
                         bucket: int) -> None:
    size = runner.encoder.preprocess["size"]
    for b in range(0, n, bucket):
        frames = load_frames(path, list(range(b, min(n, b + bucket))))
        for i in range(0, len(frames), batch):
            _forward(runner, preprocess_frames(frames[i:i + batch], size))


# ------------------------------------------------------------------ pipelines

class _CountFrames(beam.DoFn):
    """Counts the frames encoded in each output element (Beam counter bench/frames)."""

    def __init__(self, frames_of: Callable[[Any], int]):
        self.frames_of = frames_of

    def process(self, element):
        Metrics.counter("bench", "frames").inc(self.frames_of(element))
        yield element


def _timed_pipeline(build: Callable[[beam.Pipeline], None], n: int) -> Timing:
    w, c = time.perf_counter(), time.process_time()
    with beam.Pipeline() as p:
        build(p)
    t = Timing(n, time.perf_counter() - w, time.process_time() - c)
    counters = p.result.metrics().query(MetricsFilter().with_name("frames"))["counters"]
    frames = sum(r.committed for r in counters)
    if frames != n:
        raise RuntimeError(f"pipeline encoded {frames} of {n} frames")
    return t


def run_encode_modality(cfg: EncoderConfig, handle: shared.Shared, n: int) -> Timing:
    def build(p: beam.Pipeline) -> None:
        out = (p | beam.Create(range(n), reshuffle=False)
               | beam.ParDo(_Requests(handle)) | EncodeModality(cfg))
        _ = out["embeddings"] | beam.ParDo(_CountFrames(lambda e: int(e.vector is not None)))
    return _timed_pipeline(build, n)


def run_stage(cfg: EncoderConfig, path: str, n: int, rows: int) -> Timing:
    stream = Stream(id=CAM, modality="video", files=[path])
    plans = {SESSION: SessionEncode(SESSION, (StreamEncode(stream, cfg),), None)}

    def build(p: beam.Pipeline) -> None:
        out = (p | beam.Create(aligned_tables(path, n, rows), reshuffle=False)
               | beam.ParDo(EncodeAlignedFn(plans)).with_outputs(DEAD, main="main"))
        _ = out.main | beam.ParDo(_CountFrames(
            lambda kv: kv[1].column(f"{CAM}__emb_status").to_pylist().count("ok")))
    return _timed_pipeline(build, n)


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1024, help="frames of the large run")
    ap.add_argument("--small", type=int, default=256, help="frames of the small run")
    ap.add_argument("--batch", default="64",
                    help="batch size, or auto: from the free GPU memory (64 on CPU)")
    ap.add_argument("--bucket", type=int, default=256,
                    help="rows per aligned table (10 s buckets at 30 fps are 300)")
    ap.add_argument("--frame-size", default="320x240", help="WxH of the video's frames")
    ap.add_argument("--size", type=int, default=None,
                    help="model input side (default: the encoder's own: 224 for "
                         "efficientnet-lite0-imagenet, 112 for random-projection)")
    ap.add_argument("--name", default=None,
                    help="built-in video encoder (default: the default, "
                         "efficientnet-lite0-imagenet; or random-projection)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16")
    ap.add_argument("--repeat", type=int, default=5, help="rounds")
    ap.add_argument("--quick", action="store_true",
                    help="--frames 256 --small 64 --bucket 64 --repeat 1 (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.small, args.bucket, args.repeat = 256, 64, 64, 1
    n, small, bucket = args.frames, args.small, args.bucket
    if not 0 < small < n:
        ap.error("--small must be between 0 and --frames")
    if args.batch != "auto" and not args.batch.isdigit():
        ap.error(f"--batch {args.batch!r} is not a positive integer or auto")
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    try:
        cfg = EncoderConfig(modality="video", device=args.device, precision=args.precision,
                            name=args.name,
                            kwargs={} if args.size is None else {"size": args.size})
        runner = load_runner(cfg)
        args.size = runner.encoder.preprocess["size"]
        batch = (probe_batch_size(runner.encoder.model,
                                  torch.zeros(3, args.size, args.size), runner.spec, cap=64
                                  if not runner.spec.is_cuda else 1024)
                 if args.batch == "auto" else int(args.batch))
        cfg = cfg.model_copy(update={"min_batch_size": batch, "max_batch_size": batch})
        how = ("" if args.batch != "auto" else " (from free GPU memory)" if runner.spec.is_cuda
               else " (auto: 64 on CPU)")
        print(f"encoder {runner.encoder.model_id}, input {args.size}x{args.size}, batch {batch}"
              f"{how}")
    except ValueError as e:
        ap.error(str(e))

    tmp = tempfile.TemporaryDirectory(prefix="bench_enc_")
    path = str(Path(tmp.name) / "cam0.mp4")
    write_video(Path(path), n, width, height)
    frames = list(load_frames(path, list(range(n))))
    pre = preprocess_frames(frames, args.size)
    handle = shared.Shared()
    keep = handle.acquire(lambda: _Frames(frames), tag="bench-frames")   # noqa: F841 - kept alive
    _forward(runner, pre[:batch])                                        # warm-up

    def runs(k: int) -> dict[str, Callable[[], Timing]]:
        return {
            "raw forward": lambda: run_raw(lambda: raw_forward(runner, pre[:k], batch), k),
            "raw pre+forward": lambda: run_raw(
                lambda: raw_pre_forward(runner, frames[:k], batch), k),
            "raw load+pre+forward": lambda: run_raw(
                lambda: raw_load_pre_forward(runner, path, k, batch, bucket), k),
            "EncodeModality": lambda: run_encode_modality(cfg, handle, k),
            "post-align stage": lambda: run_stage(cfg, path, k, bucket),
        }

    names = list(runs(n))
    rounds: list[dict[str, tuple[float, float, float]]] = []    # name -> whole, marginal, cpu
    for r in range(args.repeat):
        t = {(name, k): fn() for k in (n, small) for name, fn in runs(k).items()}
        rounds.append({name: (n / t[name, n].wall,
                              (n - small) / max(t[name, n].wall - t[name, small].wall, 1e-9),
                              t[name, n].cpu - t[name, small].cpu) for name in names})
        print(f"round {r + 1}/{args.repeat} done", file=sys.stderr)
    tmp.cleanup()

    def med(name: str, i: int, base: str | None = None) -> tuple[float, float, float]:
        """Median over rounds (and min, max) of a figure, or of its ratio to ``base``'s in
        the same round (both measured within a minute of each other, so under similar load)."""
        v = [rd[name][i] / (rd[base][i] if base else 1.0) for rd in rounds]
        return float(np.median(v)), min(v), max(v)

    print(f"device={runner.spec.device} precision={runner.spec.precision} batch={batch} "
          f"bucket={bucket} frames={n} small={small} frame={width}x{height} -> "
          f"{args.size}x{args.size} torch_threads={torch.get_num_threads()} "
          f"rounds={args.repeat} (medians)")
    print(f"  {'frames/s':22s} {'whole run':>10s} {'marginal':>10s} {'marginal cpu s':>15s}")
    for name in names:
        print(f"  {name:22s} {med(name, 0)[0]:10.1f} {med(name, 1)[0]:10.1f} "
              f"{med(name, 2)[0]:15.2f}")
    print("  ratios, median [min-max] over rounds:")
    for name, base in (("EncodeModality", "raw forward"), ("EncodeModality", "raw pre+forward"),
                       ("post-align stage", "raw forward"),
                       ("post-align stage", "raw load+pre+forward")):
        w, m = med(name, 0, base), med(name, 1, base)
        print(f"  {name + ' / ' + base:40s} whole run {w[0]:4.2f} [{w[1]:4.2f}-{w[2]:4.2f}]"
              f"  marginal {m[0]:4.2f} [{m[1]:4.2f}-{m[2]:4.2f}]")
    goal = 0.9 if runner.spec.is_cuda else 0.8
    print(f"goal: pipeline / raw forward >= {goal} on {runner.spec.device}. Whole run = {n} "
          f"frames / wall time (pipeline construction, model load, bundle set-up included). "
          f"Marginal = ({n} - {small}) frames / (T({n}) - T({small})): the steady-state rate a "
          "long backfill sees. Raw loops run in the main thread, where the DirectRunner runs "
          "its bundles. Each round runs every item at both sizes, interleaved; ratios pair "
          "items of one round.")

if __name__ == "__main__":
    main()
