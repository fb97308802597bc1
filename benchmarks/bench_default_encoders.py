"""CPU throughput of each modality's default encoder through the project's own path
(``encode_requests``: validate + preprocess each request, one batched forward, embeddings),
for the README's encoder table.

    python benchmarks/bench_default_encoders.py [--n 256] [--batch 64] [--repeat 3]
                                                [--threads N] [--only video,audio,...]

Inputs: video 320x240 RGB frames (random pixels: the cost does not depend on content);
audio 200 ms windows of espeak-ng speech at 22.05 kHz (resampled to 16 kHz, as a 22.05 kHz
microphone is); sensor windows of 20 rows x 6 channels (200 ms at 100 Hz); text transcript-like
sentences of 1-40 words. Prints items/s (wall clock) and items per CPU-second of this
process (less sensitive to other processes sharing the machine) per modality: medians of
--repeat rounds after one warm-up batch, model load excluded (printed beside it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
import torch

from mmalign.encoders.handlers import EncodeRequest, encode_requests, load_runner
from mmalign.schemas.encoders import EncoderConfig

WORDS = ("robot arm camera lens battery drone lab microphone calibration box conveyor red "
         "left right morning lunch weather rain focus landing level percent sensor").split()


def _speech(tmp: Path) -> tuple[np.ndarray, int]:
    p = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(p), "The robot arm picks up the red box from the "
                    "conveyor while the camera records the scene in the lab."], check=True,
                   capture_output=True)
    return sf.read(p, dtype="float32")


def requests(modality: str, n: int, tmp: Path) -> list[EncodeRequest]:
    rng = np.random.default_rng(0)
    if modality == "video":
        return [EncodeRequest("s", "cam0", "video", i,
                              rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
                for i in range(n)]
    if modality == "audio":
        pcm, rate = _speech(tmp)
        w = rate // 5
        starts = np.linspace(0, len(pcm) - w, n).astype(int)
        return [EncodeRequest("s", "mic", "audio", i, pcm[s:s + w], sample_rate=rate)
                for i, s in enumerate(starts)]
    if modality == "sensor":
        return [EncodeRequest("s", "imu", "sensor", i, rng.normal(size=(20, 6)))
                for i in range(n)]
    return [EncodeRequest("s", "transcript", "text", i,
                          " ".join(rng.choice(WORDS, size=int(rng.integers(1, 41)))))
            for i in range(n)]


def compare_text(runner, reqs: list[EncodeRequest], args) -> None:
    """The text model three ways on the same texts and batches (wall clock, medians):
    MiniLMEncoder.forward as configured (length-sorted groups), the same with one padded
    forward per batch (min_group = batch: the project's path before sorting), and
    sentence-transformers' own ``encode`` (sorts the whole input by length)."""
    model = runner.encoder.model
    texts = [r.data for r in reqs]
    default_sub = model.min_group

    def ours(sub: int) -> float:
        model.min_group = sub
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), args.batch):
                model(texts[i:i + args.batch])
        return len(texts) / (time.perf_counter() - t0)

    def st() -> float:
        t0 = time.perf_counter()
        model.st.encode(texts, batch_size=args.batch, convert_to_numpy=True)
        return len(texts) / (time.perf_counter() - t0)

    rates: dict[str, list[float]] = {"sorted": [], "unsorted": [], "st": []}
    for _ in range(args.repeat):             # interleaved, so drift hits all three alike
        rates["sorted"].append(ours(default_sub))
        rates["unsorted"].append(ours(args.batch))
        rates["st"].append(st())
    model.min_group = default_sub
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"text forward, batches of {args.batch}: length-sorted groups (>= {default_sub}) "
          f"{med['sorted']:.1f} texts/s, one padded forward per batch {med['unsorted']:.1f}, "
          f"sentence-transformers encode(batch_size={args.batch}) {med['st']:.1f}; "
          f"sorted / encode = {med['sorted'] / med['st']:.2f}, "
          f"unsorted / encode = {med['unsorted'] / med['st']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="items per round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--only", default="video,audio,sensor,text")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_defaults_"))
    print(f"torch {torch.__version__}, CPU, fp32, batch {args.batch}, {args.n} items/round")
    for modality in args.only.split(","):
        extra = {"preprocess": {"channels": 6}} if modality == "sensor" else {}
        cfg = EncoderConfig(modality=modality, device="cpu", precision="fp32",
                            cpu_threads=args.threads, max_batch_size=args.batch, **extra)
        t0 = time.perf_counter()
        runner = load_runner(cfg)
        load_s = time.perf_counter() - t0
        reqs = requests(modality, args.n, tmp)
        encode_requests(cfg, reqs[:args.batch], runner)                 # warm-up
        rates, cpu_rates = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(reqs), args.batch):
                embs, dead = encode_requests(cfg, reqs[i:i + args.batch], runner)
                assert not dead and all(e.vector is not None for e in embs), dead[:1]
            rates.append(len(reqs) / (time.perf_counter() - t0))
            cpu_rates.append(len(reqs) / (time.process_time() - c0))
        if modality == "text":
            compare_text(runner, reqs, args)
        print(f"{modality:7s} {runner.encoder.model_id:45s} dim {runner.encoder.dim:5d}  "
              f"{statistics.median(rates):9.1f} items/s, "
              f"{statistics.median(cpu_rates):9.1f} items per CPU-second (rounds "
              f"{', '.join(f'{r:.1f}' for r in rates)}; load {load_s:.1f} s, "
              f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
