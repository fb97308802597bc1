"""Sensor windows -> embeddings: a window (w, c) around each tick, resampled to a fixed length
and normalised per channel, then a small 1D conv encoder."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEFAULT_LENGTH = 64
STD_FLOOR = 1e-6


def normalise_window(window: np.ndarray, length: int = DEFAULT_LENGTH,
                     mean: np.ndarray | None = None, std: np.ndarray | None = None,
                     channels: int | None = None) -> np.ndarray:
    """Rows (w, c) float -> float32 (c, length).

    Linear resampling over the row index to ``length`` points, then per-channel z-score with
    the given ``mean``/``std`` (per-stream statistics) or, when not given, the window's own.
    Raises ValueError for empty, non-finite or wrongly shaped windows.
    """
    x = np.asarray(window, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"sensor window must be (rows, channels) with rows, channels > 0, "
                         f"got shape {np.shape(window)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"sensor window has {x.shape[1]} channels, the encoder expects "
                         f"{channels}")
    if not np.isfinite(x).all():
        raise ValueError("sensor window has NaN or infinite values")
    src = np.linspace(0.0, 1.0, x.shape[0])
    dst = np.linspace(0.0, 1.0, length)
    res = np.stack([np.interp(dst, src, x[:, j]) for j in range(x.shape[1])])   # (c, length)
    mu = res.mean(axis=1, keepdims=True) if mean is None else np.asarray(mean)[:, None]
    sd = res.std(axis=1, keepdims=True) if std is None else np.asarray(std)[:, None]
    return ((res - mu) / np.maximum(sd, STD_FLOOR)).astype(np.float32)


class SensorEncoder(nn.Module):
    """Three 1D conv blocks, average + max pooling, an MLP head; L2-normalised output.
    Input (N, channels, length) float32, output (N, dim)."""

    modality = "sensor"

    def __init__(self, channels: int, dim: int = 64, width: int = 32,
                 length: int = DEFAULT_LENGTH):
        super().__init__()
        self.embedding_dim, self.channels, self.length = dim, channels, length
        layers, cin = [], channels
        for cout in (width, 2 * width, 2 * width):
            layers += [nn.Conv1d(cin, cout, 5, stride=2, padding=2), nn.GELU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * cin, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        z = torch.cat([z.mean(dim=2), z.amax(dim=2)], dim=1)
        return nn.functional.normalize(self.head(z), dim=1)
