"""Sync features: one slow signal per stream on a regular grid of its own device clock.

Every feature is sampled at ``rate_hz`` (100 Hz by default) on the absolute grid
``t = k * 1e9 / rate_hz`` ns of the stream's device clock, so pieces computed per chunk merge
by grid index. Two families (``SyncSpec.features``):

- ``events`` - impulses at shared events: audio onset envelope (rectified rise of the
  short-time power), video motion energy (mean absolute difference of consecutive low-resolution
  grey frames, placed half-way between them), sensor magnitude (norm of the high-passed
  channels);
- ``activity`` - 0/1 levels: text activity (1 while a cue is on), speech activity from audio
  (smoothed log power above a two-level threshold), and for video/sensor the thresholded,
  smoothed event envelope.

Event times are kept to a fraction of a grid step: every impulse is a *change* between two
consecutive samples placed at their midpoint (video frames; audio power and sensor magnitude on
a fine grid of ``FINE`` bins per grid step), then split linearly between the two nearest grid
points (``splat``), so the local centroid of a peak is the event time.

Audio and sensor samples are first reduced to per-fine-bin sums (``Binned``) - small, additive,
computable per chunk; video per chunk to its motion samples plus edge frames (``MotionPart``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

FAMILIES = ("events", "activity")
FINE = 10                          # fine bins per grid step for audio power and sensor samples
MAX_GRID = 24 * 3600 * 2000        # refuse grids longer than a day at 2 kHz (bad timestamps)
NS = 1_000_000_000
HOLD_S = 0.05                      # decay of the onset envelope (``peak_hold``)


class FeatureError(ValueError):
    """A stream whose samples cannot make a sync feature (empty, bad span, bad shape)."""


@dataclass(frozen=True)
class Feature:
    values: np.ndarray     # float64, one per grid step, finite
    start: int             # grid index of values[0]: device time start * 1e9 / rate_hz ns
    rate_hz: float
    kind: str              # "impulse" (landmarks are peaks) | "level" (landmarks are edges)
    name: str

    @property
    def t0_ns(self) -> float:
        return self.start * NS / self.rate_hz

    def times_ns(self, index=None) -> np.ndarray:
        """Device time (float ns) of grid positions (fractional allowed); all if None."""
        idx = np.arange(len(self.values)) if index is None else np.asarray(index, np.float64)
        return (self.start + idx) * (NS / self.rate_hz)


def grid_index(t_ns, rate_hz: float) -> np.ndarray:
    """Nearest grid index of device times: bin k covers [k - 1/2, k + 1/2) grid steps."""
    t = np.asarray(t_ns, dtype=np.int64)
    return np.floor(t.astype(np.float64) * (rate_hz / NS) + 0.5).astype(np.int64)


def default_family(modality: str, reference_modality: str) -> str:
    return "activity" if "text" in (modality, reference_modality) else "events"


# ---------------------------------------------------------------- additive bin sums


@dataclass(frozen=True)
class Binned:
    """Per-grid-bin sums: ``sums[:, c]`` of quantity c and ``count`` of samples per bin."""
    start: int
    sums: np.ndarray        # float64 [n_bins, k]
    count: np.ndarray       # float64 [n_bins]

    @property
    def stop(self) -> int:
        return self.start + len(self.count)


def bin_sums(t_ns, quantities: np.ndarray, rate_hz: float) -> Binned:
    """Sum ``quantities`` [n, k] of samples at ``t_ns`` into grid bins."""
    q = np.asarray(quantities, dtype=np.float64)
    q = q.reshape(len(q), -1)
    idx = grid_index(t_ns, rate_hz)
    if len(idx) != len(q):
        raise FeatureError(f"{len(idx)} timestamps for {len(q)} samples")
    if len(idx) == 0:
        return Binned(0, np.zeros((0, q.shape[1])), np.zeros(0))
    lo, hi = int(idx.min()), int(idx.max()) + 1
    _check_span(hi - lo, rate_hz)
    rel = idx - lo
    sums = np.zeros((hi - lo, q.shape[1]))
    for c in range(q.shape[1]):
        sums[:, c] = np.bincount(rel, weights=q[:, c], minlength=hi - lo)
    return Binned(lo, sums, np.bincount(rel, minlength=hi - lo).astype(np.float64))


def merge_binned(parts: list[Binned]) -> Binned:
    parts = [p for p in parts if len(p.count)]
    if not parts:
        raise FeatureError("the stream has no samples")
    k = {p.sums.shape[1] for p in parts}
    if len(k) != 1:
        raise FeatureError(f"chunks disagree on the number of summed quantities {sorted(k)}")
    lo, hi = min(p.start for p in parts), max(p.stop for p in parts)
    _check_span(hi - lo, None)
    sums, count = np.zeros((hi - lo, k.pop())), np.zeros(hi - lo)
    for p in parts:
        sums[p.start - lo:p.stop - lo] += p.sums
        count[p.start - lo:p.stop - lo] += p.count
    return Binned(lo, sums, count)


def _check_span(n_bins: int, rate_hz: float | None) -> None:
    if n_bins > MAX_GRID:
        raise FeatureError(f"the stream spans {n_bins} feature bins (> {MAX_GRID}); its "
                           "timestamps are implausible")


def _fill_gaps(v: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN bins (dropped samples); all-NaN is an error."""
    ok = np.isfinite(v)
    if not ok.any():
        raise FeatureError("the stream has no usable samples")
    if ok.all():
        return v
    x = np.arange(len(v))
    return np.interp(x, x[ok], v[ok])


# ---------------------------------------------------------------- changes -> grid


def splat(t_ns, values, rate_hz: float) -> tuple[int, np.ndarray]:
    """Impulses ``values`` at (fractional) times ``t_ns`` onto the grid, each split linearly
    between its two nearest grid points (mass and centroid preserved). Returns (start, grid)."""
    t = np.asarray(t_ns, np.float64)
    v = np.asarray(values, np.float64)
    pos = t * (rate_hz / NS)
    k = np.floor(pos).astype(np.int64)
    w = pos - k
    lo, hi = int(k.min()), int(k.max()) + 2
    _check_span(hi - lo, rate_hz)
    out = np.bincount(k - lo, weights=v * (1 - w), minlength=hi - lo)
    out += np.bincount(k + 1 - lo, weights=v * w, minlength=hi - lo)
    return lo, out


def rises(t_ns, values) -> tuple[np.ndarray, np.ndarray]:
    """Positive change between consecutive samples, at the midpoint of the two."""
    t = np.asarray(t_ns, np.float64)
    v = np.asarray(values, np.float64)
    return (t[1:] + t[:-1]) / 2, np.maximum(np.diff(v), 0.0)


def peak_hold(t_ns, values, tau_s: float = HOLD_S) -> np.ndarray:
    """Envelope that jumps to each new maximum and decays as exp(-t / ``tau_s``) between them:
    ``h[k] = max_{j <= k} v[j] * exp(-(t[k] - t[j]) / tau)`` (``values`` >= 0, ``t_ns`` sorted).

    Its rises are the onsets only: the ringing inside one impact (an oscillating click or
    spike, whose later lobes are lower than the decayed hold) adds none, so an event's rise
    mass sits at its first sample instead of being smeared over the ringing."""
    t = (np.asarray(t_ns, np.float64) - float(t_ns[0])) / (tau_s * NS)
    v = np.asarray(values, np.float64)
    with np.errstate(divide="ignore"):
        return np.exp(np.maximum.accumulate(np.log(v) + t) - t)


def _impulses(t_ns, values, rate_hz: float, name: str) -> Feature:
    if len(t_ns) < 2:
        raise FeatureError(f"{name} needs at least 2 samples")
    start, grid = splat(t_ns, values, rate_hz)
    return Feature(grid, start, rate_hz, "impulse", name)


def coarsen(b: Binned, factor: int = FINE) -> Binned:
    """Fine bins summed into grid bins (fine bin k -> grid bin floor((k + factor/2) / factor))."""
    first = (b.start + factor // 2) // factor
    pad = b.start + factor // 2 - first * factor
    n = -(-(pad + len(b.count)) // factor)
    sums = np.zeros((n * factor, b.sums.shape[1]))
    count = np.zeros(n * factor)
    sums[pad:pad + len(b.count)] = b.sums
    count[pad:pad + len(b.count)] = b.count
    return Binned(first, sums.reshape(n, factor, -1).sum(axis=1), count.reshape(n, factor).sum(1))


def _fine_times(b: Binned, rate_hz: float) -> np.ndarray:
    return (b.start + np.arange(len(b.count))) * (NS / (rate_hz * FINE))


# ---------------------------------------------------------------- audio


def audio_bins(block_t_ns, blocks: list[np.ndarray], sample_rate: float,
               rate_hz: float) -> Binned:
    """Power sums per fine bin (``FINE`` per grid step) from PCM blocks: block b's sample s is
    at t_b + s / sample_rate."""
    if sample_rate <= 0:
        raise FeatureError(f"audio sample rate must be > 0, got {sample_rate}")
    if len(blocks) != len(block_t_ns):
        raise FeatureError(f"{len(block_t_ns)} block times for {len(blocks)} PCM blocks")
    lens = np.array([len(b) for b in blocks], dtype=np.int64)
    if lens.sum() == 0:
        return Binned(0, np.zeros((0, 1)), np.zeros(0))
    pcm = np.concatenate([np.asarray(b, np.float64).reshape(-1) for b in blocks])
    if not np.all(np.isfinite(pcm)):
        raise FeatureError("audio samples contain NaN or infinity")
    first = np.repeat(np.asarray(block_t_ns, np.int64), lens)
    within = np.arange(len(pcm)) - np.repeat(np.cumsum(lens) - lens, lens)
    t = first + np.rint(within * (NS / sample_rate)).astype(np.int64)
    return bin_sums(t, pcm * pcm, rate_hz * FINE)


def _mean_power(b: Binned) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return _fill_gaps(b.sums[:, 0] / b.count)


def audio_onset(b: Binned, rate_hz: float) -> Feature:
    """Rises of the fine-bin mean power, on the grid: a peak at each sound onset."""
    t = _fine_times(b, rate_hz)
    t, r = rises(t, peak_hold(t, _mean_power(b)))
    return _impulses(t, r, rate_hz, "audio_onset")


def speech_activity(b: Binned, rate_hz: float, smooth_s: float = 0.25) -> Feature:
    """1 where the smoothed log power is above the midpoint of its quiet and loud levels."""
    g = coarsen(b)
    logp = np.log10(_mean_power(g) + 1e-12)
    return Feature(two_level(logp, rate_hz, smooth_s), g.start, rate_hz, "level",
                   "speech_activity")


def two_level(v: np.ndarray, rate_hz: float, smooth_s: float) -> np.ndarray:
    """0/1: a moving average of ``v`` above the midpoint of its 10th and 90th percentiles."""
    size = max(1, round(smooth_s * rate_hz))
    s = uniform_filter1d(v, size, mode="nearest")
    lo, hi = np.percentile(s, [10, 90])
    if not hi > lo:
        return np.zeros_like(s)
    return (s > (lo + hi) / 2).astype(np.float64)


# ---------------------------------------------------------------- sensor


def sensor_bins(t_ns, values: np.ndarray, rate_hz: float) -> Binned:
    """Per-fine-bin sums of each channel and of the squared norm (for the high-passed
    magnitude)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise FeatureError(f"sensor values must be [samples, channels], got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise FeatureError("sensor values contain NaN or infinity")
    return bin_sums(t_ns, np.column_stack([v, np.sum(v * v, axis=1)]), rate_hz * FINE)


def sensor_magnitude(b: Binned, rate_hz: float, highpass_s: float = 0.5) -> Feature:
    """Rises of the RMS norm of (channels - their moving average over ``highpass_s``), taken
    between consecutive occupied fine bins, on the grid."""
    s1, s2, n = b.sums[:, :-1], b.sums[:, -1], b.count
    size = max(3, round(highpass_s * rate_hz * FINE) | 1)
    w_n = uniform_filter1d(n, size, mode="nearest")
    w_s = uniform_filter1d(s1, size, axis=0, mode="nearest")
    base = w_s / np.maximum(w_n, 1e-12)[:, None]
    occ = n > 0
    if occ.sum() < 2:
        raise FeatureError("the sensor stream needs at least 2 samples")
    power = ((s2[occ] - 2 * np.sum(base[occ] * s1[occ], axis=1)) / n[occ]
             + np.sum(base[occ] ** 2, axis=1))
    mag = np.sqrt(np.maximum(power, 0.0))
    t = _fine_times(b, rate_hz)[occ]
    t, r = rises(t, peak_hold(t, mag))
    return _impulses(t, r, rate_hz, "sensor_magnitude")


# ---------------------------------------------------------------- video


@dataclass(frozen=True)
class MotionPart:
    """Motion of one chunk: frame times, differences of its consecutive frames, edge frames."""
    t_ns: np.ndarray        # int64 [k]
    motion: np.ndarray      # float64 [k - 1]
    first: np.ndarray       # float32 [h, w]
    last: np.ndarray


def motion_part(t_ns, frames: np.ndarray) -> MotionPart:
    """``frames`` [k, h, w] grey (any dtype), already at low resolution, in time order."""
    f = np.asarray(frames, dtype=np.float32)
    t = np.asarray(t_ns, dtype=np.int64)
    if f.ndim != 3 or len(f) != len(t) or len(f) == 0:
        raise FeatureError(f"need [k, h, w] frames with k = {len(t)} times, got {f.shape}")
    motion = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2)).astype(np.float64)
    return MotionPart(t, motion, f[0], f[-1])


def motion_energy(parts: list[MotionPart], rate_hz: float) -> Feature:
    """Motion samples at the midpoints between consecutive frames, splatted onto the grid."""
    parts = sorted((p for p in parts if len(p.t_ns)), key=lambda p: int(p.t_ns[0]))
    if not parts:
        raise FeatureError("the stream has no frames")
    times, values = [], []
    for k, p in enumerate(parts):
        if k:
            q = parts[k - 1]
            if q.last.shape != p.first.shape:
                raise FeatureError(f"frame size changes from {q.last.shape} to {p.first.shape}")
            times.append([(q.t_ns[-1] + p.t_ns[0]) / 2])
            values.append([float(np.abs(p.first - q.last).mean())])
        times.append((p.t_ns[:-1] + p.t_ns[1:]) / 2)
        values.append(p.motion)
    t, v = np.concatenate(times), np.concatenate(values)
    if np.any(np.diff(t) <= 0):
        raise FeatureError("frame times are not strictly increasing")
    return _impulses(t, v, rate_hz, "video_motion")


# ---------------------------------------------------------------- text


def text_activity(t_ns, t_end_ns, rate_hz: float) -> Feature:
    """Fraction of each bin covered by a cue (cues may overlap): 1 while a cue is on."""
    s = np.asarray(t_ns, np.int64)
    e = np.asarray(t_end_ns, np.int64)
    if len(s) == 0 or len(s) != len(e):
        raise FeatureError("text activity needs at least one cue with a start and an end")
    if np.any(e < s):
        raise FeatureError("a cue ends before it starts")
    order = np.argsort(s, kind="stable")
    s, e = s[order].astype(np.float64), e[order].astype(np.float64)
    run_end = np.maximum.accumulate(e)
    new = np.r_[True, s[1:] > run_end[:-1]]          # union of overlapping cues
    grp = np.cumsum(new) - 1
    us, ue = s[new], np.zeros(new.sum())
    np.maximum.at(ue, grp, e)
    # covered time before t: piecewise linear through (start, C) and (end, C + length)
    c_start = np.r_[0.0, np.cumsum(ue - us)[:-1]]
    knots_t = np.column_stack([us, ue]).ravel()
    knots_c = np.column_stack([c_start, c_start + (ue - us)]).ravel()
    lo, hi = grid_index([us[0]], rate_hz)[0] - 1, grid_index([ue[-1]], rate_hz)[0] + 2
    _check_span(hi - lo, rate_hz)
    step = NS / rate_hz
    edges = (np.arange(lo, hi + 1) - 0.5) * step
    cov = np.diff(np.interp(edges, knots_t, knots_c)) / step
    return Feature(np.clip(cov, 0.0, 1.0), int(lo), rate_hz, "level", "text_activity")


# ---------------------------------------------------------------- conditioning


def as_activity(f: Feature, smooth_s: float = 0.25) -> Feature:
    """An impulse feature as a 0/1 activity level (for pairing with text)."""
    if f.kind == "level":
        return f
    return Feature(two_level(f.values, f.rate_hz, smooth_s), f.start, f.rate_hz, "level",
                   f.name + "_activity")


def condition(f: Feature, sigma_samples: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(DTW input, landmark signal, unsmoothed landmark signal) of a feature, scale-free.

    Impulse: baseline (median) removed, scaled so that events reach about 1; the DTW input is
    that Gaussian-smoothed and clipped to [0, 1]. Level: the smoothed level as DTW input, its
    absolute slope (peaks at the edges) as landmarks. Peaks are found on the smoothed landmark
    signal and located by the centroid of the unsmoothed one."""
    raw = np.asarray(f.values, np.float64)
    if f.kind == "level":
        v = gaussian_filter1d(raw, sigma_samples, mode="nearest")
        return v, np.abs(np.gradient(v)), np.abs(np.gradient(raw))
    raw = raw - np.median(raw)
    v = gaussian_filter1d(raw, sigma_samples, mode="nearest")
    scale = max(np.percentile(v, 99.5), 0.2 * np.max(v))   # sparse events still reach ~1
    if not scale > 0:
        scale = 1.0
    v, raw = v / scale, raw / scale
    return np.clip(v, 0.0, 1.0), np.maximum(v, 0.0), np.maximum(raw, 0.0)
