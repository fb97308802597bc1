"""Sensor windows -> embeddings: a window (w, c) around each tick, resampled to a fixed length
and normalised per channel, then the `sensor-stats` baseline by default (per-channel shape
statistics and cross-channel correlations: no learned weights), or the explicitly named
`random-projection` baseline (a small 1D CNN with seeded random weights)."""

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


LAGS = (1, 2, 4, 8)
N_BANDS = 4
PER_CHANNEL = 4 + len(LAGS) + N_BANDS


def stats_dim(channels: int) -> int:
    return channels * PER_CHANNEL + channels * (channels - 1) // 2


class SensorStats(nn.Module):
    """The `sensor-stats` baseline: no learned weights. Per channel of the (normalised) window:
    mean, standard deviation, tanh(skewness), tanh(excess kurtosis / 3), autocorrelation at
    lags 1, 2, 4, 8 samples, and the share of the spectrum's power (DC removed) in 4 equal
    frequency bands; then the correlation of every channel pair; L2-normalised.
    Input (N, channels, length >= 16) float32, output (N, 12·channels + channels·(channels−1)/2).

    With the default per-window z-score (``normalise_window`` without mean/std) every
    channel's mean and std are 0 and 1: set preprocess mean/std (per-stream statistics) to
    keep the level and amplitude in the embedding."""

    modality = "sensor"

    def __init__(self, channels: int, length: int = DEFAULT_LENGTH):
        super().__init__()
        if length < 2 * max(LAGS):
            raise ValueError(f"sensor-stats needs length >= {2 * max(LAGS)}, got {length}")
        self.channels, self.length = channels, length
        self.embedding_dim = stats_dim(channels)
        self.register_buffer("pairs", torch.triu_indices(channels, channels, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        mean = x.mean(dim=2, keepdim=True)
        c = x - mean
        var = c.pow(2).mean(dim=2)
        sd = var.clamp_min(STD_FLOOR ** 2).sqrt()
        z = c / sd.unsqueeze(2)
        skew = torch.tanh(z.pow(3).mean(dim=2))
        kurt = torch.tanh((z.pow(4).mean(dim=2) - 3.0) / 3.0)
        acf = [(z[:, :, k:] * z[:, :, :-k]).mean(dim=2) for k in LAGS]
        power = torch.fft.rfft(c, dim=2).abs().pow(2)[:, :, 1:]
        bands = torch.stack([b.sum(dim=2) for b in power.tensor_split(N_BANDS, dim=2)], dim=2)
        bands = bands / bands.sum(dim=2, keepdim=True).clamp_min(1e-12)
        corr = torch.einsum("ncl,ndl->ncd", z, z) / x.shape[2]
        corr = corr[:, self.pairs[0], self.pairs[1]]
        per = torch.cat([mean, sd.unsqueeze(2), skew.unsqueeze(2), kurt.unsqueeze(2),
                         torch.stack(acf, dim=2), bands], dim=2)
        out = torch.cat([per.flatten(1), corr], dim=1)
        return nn.functional.normalize(out, dim=1)


class SensorEncoder(nn.Module):
    """The `random-projection` baseline: three 1D conv blocks, average + max pooling, an MLP
    head, with seeded RANDOM weights (never trained); L2-normalised output.
    Input (N, channels, length) float32, output (N, dim). Selected only by name."""

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
