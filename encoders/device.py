"""Device and precision: CUDA when present (inference mode, bf16/fp16 autocast), CPU otherwise."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DeviceSpec:
    """Where and how a model runs: ``device`` ("cpu"/"cuda:0"), ``precision`` (fp32/bf16/fp16)."""
    device: str
    precision: str

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.precision)


def select_device(device: str = "auto", precision: Precision = "auto") -> DeviceSpec:
    """Resolve ``device`` ("auto", "cpu", "cuda", "cuda:N") and ``precision`` to a DeviceSpec.

    "auto" picks CUDA when available. Auto precision is bf16 on CUDA GPUs that support it,
    fp16 on older GPUs and fp32 on CPU. Asking for CUDA without one raises ValueError.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but no CUDA device is available; "
                             "use device: auto or cpu")
        if device == "cuda":
            device = f"cuda:{torch.cuda.current_device()}"
    elif device != "cpu":
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision {precision!r} is not one of auto, fp32, bf16, fp16")
    if precision == "fp16" and device == "cpu":
        raise ValueError("precision fp16 is GPU-only; use bf16 or fp32 on CPU")
    return DeviceSpec(device=device, precision=precision)


@contextlib.contextmanager
def inference_context(spec: DeviceSpec) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast to the spec's precision (none for fp32)."""
    with torch.inference_mode():
        dtype = spec.autocast_dtype
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type="cuda" if spec.is_cuda else "cpu", dtype=dtype):
                yield


def to_device(batch: np.ndarray | torch.Tensor, spec: DeviceSpec) -> torch.Tensor:
    """Host array -> tensor on the spec's device; pinned memory + non_blocking copy on CUDA."""
    t = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    if spec.is_cuda:
        return t.pin_memory().to(spec.device, non_blocking=True)
    return t


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread pool for CPU inference and return its size.

    ``threads`` None keeps torch's default (physical cores, or OMP_NUM_THREADS) but caps it
    at the CPUs this process may run on (a cpuset-limited container); several processes on
    one machine each using all cores slow each other down 2-4x, so give ``threads`` = cores /
    processes there. Process-wide: torch has one intra-op pool per process.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"cpu_threads must be >= 1, got {threads}")
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = threads if threads is not None else min(torch.get_num_threads(), allowed or 1)
    if want != torch.get_num_threads():
        torch.set_num_threads(want)
    return torch.get_num_threads()


def batch_from_memory(free_bytes: int, per_item_bytes: float, fraction: float = 0.6,
                      cap: int = 1024) -> int:
    """The largest power-of-two batch (1 .. ``cap``) whose activations, ``per_item_bytes``
    each, fit in ``fraction`` of ``free_bytes``."""
    if per_item_bytes <= 0:
        return cap
    fit = int(free_bytes * fraction // per_item_bytes)
    batch = 1
    while batch * 2 <= min(fit, cap):
        batch *= 2
    return batch


def probe_batch_size(model: torch.nn.Module, example: torch.Tensor, spec: DeviceSpec,
                     probe: int = 8, fraction: float = 0.6, cap: int = 1024) -> int:
    """Batch size for ``model`` on a CUDA ``spec`` from the device's free memory: the peak
    memory of one forward on ``probe`` copies of ``example`` (one input, no batch axis) under
    the spec's autocast, per item, against ``torch.cuda.mem_get_info``'s free bytes. On CPU
    there is no memory to size by: returns ``cap``."""
    if not spec.is_cuda:
        return cap
    x = example.unsqueeze(0).expand(probe, *example.shape).contiguous().to(spec.device)
    torch.cuda.synchronize(spec.device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(spec.device)
    base = torch.cuda.memory_allocated(spec.device)
    with inference_context(spec):
        model(x)
    torch.cuda.synchronize(spec.device)
    per_item = (torch.cuda.max_memory_allocated(spec.device) - base) / probe
    del x
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(spec.device)
    return batch_from_memory(free, per_item, fraction, cap)
