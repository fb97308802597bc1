"""Config -> encoder. A built-in encoder per modality (``BUILTIN``: the default, or another
one chosen by ``name``), a user module (import path + kwargs), a TorchScript file or a
state_dict file; every loaded encoder carries its model id
(name + weights hash) and embedding dimension."""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmalign.encoders import audio, sensor, video
from mmalign.encoders.text import MiniLMEncoder
from mmalign.schemas.encoders import EncoderConfig

# The built-in encoders per modality, by name; the first is the default. Pretrained where a
# model ships inside a registry package and loads offline; otherwise an explicit baseline.
# "random-projection" (seeded random weights, never trained) is never a default.
BUILTIN: dict[str, dict[str, type[nn.Module]]] = {
    "video": {"efficientnet-lite0-imagenet": video.EfficientNetLite0Encoder,
              "random-projection": video.VideoEncoder},
    "audio": {"logmel-stats": audio.LogMelStats, "random-projection": audio.AudioEncoder},
    "text": {"all-MiniLM-L6-v2": MiniLMEncoder},
    "sensor": {"sensor-stats": sensor.SensorStats, "random-projection": sensor.SensorEncoder},
}
DEFAULT_NAMES = {m: next(iter(names)) for m, names in BUILTIN.items()}
RANDOM = "random-projection"
# preprocessing defaults that belong to one built-in encoder (the weights' input size)
_BUILTIN_PREPROCESS = {("video", "efficientnet-lite0-imagenet"): {"size": video.LITE0_SIZE}}


class EncoderError(ValueError):
    """An encoder config that cannot be loaded; the message names the field and the fix."""


@dataclass
class LoadedEncoder:
    model: nn.Module
    model_id: str           # "<name>@<first 16 hex of the weights' sha256>"
    dim: int
    modality: str
    preprocess: dict[str, Any] = field(default_factory=dict)


def weights_hash(model: nn.Module) -> str:
    """sha256 over the state_dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def builtin_name(cfg: EncoderConfig) -> str:
    """The built-in encoder a "default" (or target-less "state_dict") config selects: ``name``
    when given (one of BUILTIN[modality]), else the modality's default."""
    name = cfg.name or DEFAULT_NAMES[cfg.modality]
    if name not in BUILTIN[cfg.modality]:
        raise EncoderError(f"{cfg.modality} encoder name {name!r} is not a built-in encoder; "
                           f"choose one of {', '.join(BUILTIN[cfg.modality])} or set source: "
                           "module / torchscript / state_dict")
    return name


def _default_module(cfg: EncoderConfig) -> nn.Module:
    kw = dict(cfg.kwargs)
    name = builtin_name(cfg)
    cls = BUILTIN[cfg.modality][name]
    if cfg.modality == "sensor" and "channels" not in kw:
        if "channels" not in cfg.preprocess:
            raise EncoderError("the default sensor encoder needs kwargs.channels (the number of "
                               "sensor channels in each window)")
        kw["channels"] = int(cfg.preprocess["channels"])
    if cfg.modality == "sensor" and "length" in cfg.preprocess and "length" not in kw:
        kw["length"] = int(cfg.preprocess["length"])
    if name != RANDOM:
        return cls(**kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return cls(**kw)


def _user_module(target: str, kwargs: dict) -> nn.Module:
    mod_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise EncoderError(f"encoder target {target!r} cannot be imported ({e}); check the "
                           "module is on PYTHONPATH and the name after ':' exists") from e
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise EncoderError(f"encoder target {target!r} returned {type(model).__name__}, "
                           "not a torch.nn.Module")
    return model


def _load_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EncoderError(f"encoder {what} file {path!r} does not exist; fix encoder path")
    return p


def build_module(cfg: EncoderConfig) -> nn.Module:
    """The torch module the config describes, on CPU, in eval mode."""
    if cfg.source == "default":
        model = _default_module(cfg)
    elif cfg.source == "module":
        model = _user_module(cfg.target, cfg.kwargs)
    elif cfg.source == "torchscript":
        p = _load_file(cfg.path, "TorchScript")
        try:
            model = torch.jit.load(str(p), map_location="cpu")
        except Exception as e:
            raise EncoderError(f"encoder path {cfg.path!r} is not a TorchScript archive "
                               f"({type(e).__name__}); save it with torch.jit.save") from e
    else:
        p = _load_file(cfg.path, "state_dict")
        model = (_user_module(cfg.target, cfg.kwargs) if cfg.target
                 else _default_module(cfg))
        try:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise EncoderError(f"encoder path {cfg.path!r} is not a torch state_dict file "
                               f"({type(e).__name__}); save it with torch.save(model."
                               "state_dict(), path)") from e
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise EncoderError(f"state_dict {cfg.path!r} does not fit the {cfg.modality} "
                               f"architecture: {str(e).splitlines()[0]}") from e
    return model.eval()


def preprocess_options(cfg: EncoderConfig) -> dict[str, Any]:
    """Preprocessing options: modality defaults, then the default architecture's kwargs
    (size, n_mels, window_s, length, channels), then ``cfg.preprocess``."""
    opts: dict[str, Any] = {
        "video": {"size": video.DEFAULT_SIZE, "ref_size": None},
        "audio": {"window_s": audio.DEFAULT_WINDOW_S, "n_mels": audio.N_MELS},
        "text": {},
        "sensor": {"length": sensor.DEFAULT_LENGTH, "channels": None, "mean": None, "std": None},
    }[cfg.modality]
    if cfg.source == "default" or (cfg.source == "state_dict" and not cfg.target):
        opts.update(_BUILTIN_PREPROCESS.get((cfg.modality, builtin_name(cfg)), {}))
    if cfg.source == "default":
        opts.update({k: v for k, v in cfg.kwargs.items() if k in opts})
    opts.update(cfg.preprocess)
    return opts


def _probe_input(cfg: EncoderConfig, opts: dict) -> Any:
    """Two zero inputs shaped as the preprocessing will shape real ones."""
    if cfg.modality == "video":
        return np.zeros((2, 3, opts["size"], opts["size"]), np.float32)
    if cfg.modality == "audio":
        return np.zeros((2, opts["n_mels"], audio.n_frames(opts["window_s"])), np.float32)
    if cfg.modality == "sensor":
        if not opts.get("channels"):
            raise EncoderError("a custom sensor encoder needs preprocess.channels")
        return np.zeros((2, opts["channels"], opts["length"]), np.float32)
    return ["a probe sentence"] * 2


def build_encoder(cfg: EncoderConfig) -> LoadedEncoder:
    """Load the encoder, check it maps a probe batch to finite (N, D) vectors, and id it."""
    model = build_module(cfg)
    opts = preprocess_options(cfg)
    probe = _probe_input(cfg, opts)
    with torch.inference_mode():
        x = torch.from_numpy(probe) if isinstance(probe, np.ndarray) else probe
        try:
            out = model(x)
        except Exception as e:
            raise EncoderError(f"{cfg.modality} encoder fails on a probe batch "
                               f"({type(e).__name__}: {e}); check its input shape "
                               "against the preprocess options") from e
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != 2:
        raise EncoderError(f"{cfg.modality} encoder must return an (N, D) tensor, got "
                           f"{getattr(out, 'shape', type(out).__name__)}")
    if not torch.isfinite(out).all():
        raise EncoderError(f"{cfg.modality} encoder returns non-finite values on a zero probe")
    if cfg.source == "default" or (cfg.source == "state_dict" and not cfg.target):
        name = builtin_name(cfg)
    else:
        name = cfg.name or {"module": cfg.target, "torchscript": Path(cfg.path or "").stem,
                            "state_dict": cfg.target}[cfg.source]
    model_id = f"{name}@{weights_hash(model)[:16]}"
    return LoadedEncoder(model=model, model_id=model_id, dim=int(out.shape[1]),
                         modality=cfg.modality, preprocess=opts)
