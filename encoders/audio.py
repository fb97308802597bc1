"""Audio windows -> embeddings: log-mel spectrogram (librosa) of the window around each tick,
then the `logmel-stats` baseline by default (per-band statistics of the log-mel image: no
learned weights), or the explicitly named `random-projection` baseline (a small 2D CNN with
seeded random weights). No pretrained general-audio model that loads offline from a
registry package is used here yet (see the README's encoder table)."""

from __future__ import annotations

import librosa
import numpy as np
import torch
from torch import nn

TARGET_SR = 16_000
N_FFT, HOP, N_MELS = 400, 160, 64          # 25 ms windows, 10 ms hop
DEFAULT_WINDOW_S = 0.2


def fit_length(pcm: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad (at the end) a 1D signal to exactly ``n`` samples."""
    if len(pcm) >= n:
        start = (len(pcm) - n) // 2
        return pcm[start:start + n]
    return np.pad(pcm, (0, n - len(pcm)))


def log_mel(pcm: np.ndarray, sample_rate: int, window_s: float = DEFAULT_WINDOW_S,
            n_mels: int = N_MELS) -> np.ndarray:
    """A mono window (n,) or (n, channels) at ``sample_rate`` -> float32 (n_mels, frames).

    Resampled to 16 kHz, fitted to ``window_s`` seconds, log-mel in dB (ref 1.0, floor
    -100 dB) scaled to about [-1, 1]. Raises ValueError for empty or non-finite audio.
    """
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio window must be a non-empty 1D (or 2D multichannel) array, "
                         f"got shape {np.shape(pcm)}")
    if not np.isfinite(x).all():
        raise ValueError("audio window has NaN or infinite samples")
    if not 1000 <= sample_rate <= 384_000:
        raise ValueError(f"sample_rate {sample_rate} is outside 1000..384000 Hz")
    if sample_rate != TARGET_SR:
        x = librosa.resample(x, orig_sr=sample_rate, target_sr=TARGET_SR, res_type="soxr_hq")
    x = fit_length(x, round(window_s * TARGET_SR))
    mel = librosa.feature.melspectrogram(y=x, sr=TARGET_SR, n_fft=N_FFT, hop_length=HOP,
                                         n_mels=n_mels, power=2.0, center=True)
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return ((np.maximum(db, -100.0) + 50.0) / 50.0).astype(np.float32)


def n_frames(window_s: float = DEFAULT_WINDOW_S) -> int:
    return round(window_s * TARGET_SR) // HOP + 1


class LogMelStats(nn.Module):
    """The `logmel-stats` baseline: no learned weights. Per mel band, over the window's frames:
    the mean level minus the window's mean level (spectral shape, loudness-invariant), the
    standard deviation (how much the band changes) and the mean absolute frame-to-frame change
    (how fast); then the window's mean level; L2-normalised. Input (N, n_mels, frames) float32
    (``log_mel``), output (N, 3·n_mels + 1)."""

    modality = "audio"

    def __init__(self, n_mels: int = N_MELS, window_s: float = DEFAULT_WINDOW_S):
        super().__init__()
        self.n_mels, self.window_s = n_mels, window_s
        self.embedding_dim = 3 * n_mels + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[2] < 2:
            raise ValueError(f"logmel-stats needs (N, n_mels, frames >= 2), got {tuple(x.shape)}")
        x = x.float()
        mean = x.mean(dim=2)
        level = mean.mean(dim=1, keepdim=True)
        std = x.std(dim=2, unbiased=False)
        change = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=2)
        z = torch.cat([mean - level, std, change, level], dim=1)
        return nn.functional.normalize(z, dim=1)


class AudioEncoder(nn.Module):
    """The `random-projection` baseline: three stride-2 conv blocks over the log-mel image,
    average pooling, a linear head, with seeded RANDOM weights (never trained); L2-normalised
    output. Input (N, n_mels, frames) float32, output (N, dim). Selected only by name."""

    modality = "audio"

    def __init__(self, dim: int = 128, width: int = 16, n_mels: int = N_MELS,
                 window_s: float = DEFAULT_WINDOW_S):
        super().__init__()
        self.embedding_dim, self.n_mels, self.window_s = dim, n_mels, window_s
        layers, cin = [], 1
        for cout in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x.unsqueeze(1)).mean(dim=(2, 3))
        return nn.functional.normalize(self.head(z), dim=1)
