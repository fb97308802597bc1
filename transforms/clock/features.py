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

A third family, ``signals``, is a *set* of features per stream (``FeatureSet``: name ->
Feature), continuous signals as well as the two families above, from which the fit picks the
pairs that suit the two modalities (transforms/clock/pairs.py):

- audio: ``audio_loudness`` (log power), ``audio_flux`` (onset strength: rises of the log
  power), ``speech_activity`` (a finer voice-activity level than the ``activity`` family's,
  whose edges are marks), and the
  events feature ``audio_onset``; plus, as its own family ``waveform``, the samples low-passed
  and resampled to ``WAVE_RATE_HZ`` on the absolute device-time grid (``WavePart``), for
  sub-millisecond fine alignment of audio against audio;
- video: ``frame_diff`` (mean absolute frame difference per second), ``flow_speed`` and the
  global motion ``flow_x``, ``flow_y``, ``flow_rot`` (a similarity fitted to the dense optical
  flow of consecutive frames, per second), and ``video_motion``;
- sensor: every channel high-passed (``ch:<name>``), ``sensor_norm`` (their norm: rotation
  invariant) and ``sensor_magnitude``;
- text: ``text_activity`` carrying *marks* (cue starts, ends before a gap, and the boundary of
  touching cues, at their exact times) and ``speech_rate`` (syllables per second of each cue:
  touching cues still carry timing).

Continuous features are interpolated onto the grid (``kind="continuous"``), not splatted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy  # its submodules load on first use: not in a run without DTW-sync

FAMILIES = ("events", "activity", "signals")
WAVE_FAMILY = "waveform"           # audio samples at WAVE_RATE_HZ (audio against audio)
WAVE_RATE_HZ = 8000.0
WAVE_CUTOFF_HZ = 3000.0
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
    #                        | "continuous" (windows are cross-correlated) | "waveform"
    name: str
    marks: np.ndarray | None = None       # known landmark positions (fractional grid index)
    mark_sign: np.ndarray | None = None   # +1 a start, -1 an end, 0 a boundary (end = start)

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
    """The single-feature family that stands for a modality pair (what the pictures of
    pipelines/sync_evidence.py draw); the estimate itself uses the ``signals`` family."""
    return "activity" if "text" in (modality, reference_modality) else "events"


FeatureSet = dict  # name -> Feature: the ``signals`` family of one stream


# ---------------------------------------------------------------- additive bin sums


@dataclass(frozen=True)
class Binned:
    """Per-grid-bin sums: ``sums[:, c]`` of quantity c and ``count`` of samples per bin."""
    start: int
    sums: np.ndarray        # float64 [n_bins, k]
    count: np.ndarray       # float64 [n_bins]
    names: tuple[str, ...] = ()   # sensor channel names (the last sum is their squared norm)

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
    names = {p.names for p in parts}
    if len(names) != 1:
        raise FeatureError(f"chunks disagree on the sensor channels {sorted(names)}")
    sums, count = np.zeros((hi - lo, k.pop())), np.zeros(hi - lo)
    for p in parts:
        sums[p.start - lo:p.stop - lo] += p.sums
        count[p.start - lo:p.stop - lo] += p.count
    return Binned(lo, sums, count, names.pop())


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
    """Fine bins summed into grid bins centred on the grid points: grid bin g covers
    [g - 1/2, g + 1/2) grid steps. Fine bin k covers [k - 1/2, k + 1/2) fine steps, so with an
    even ``factor`` the two fine bins astride a grid bin's edges (k = g * factor +- factor / 2)
    are split half and half between the two grid bins (an odd ``factor`` tiles exactly).
    Summing whole fine bins ``g * factor - factor/2 .. g * factor + factor/2 - 1`` instead would
    centre grid bin g half a fine bin early (0.5 ms at 100 Hz): every feature made from it,
    voice-activity edges and sensor channels, would read late by that much."""
    half = factor // 2
    first = -((-(b.start - half)) // factor)       # ceil((start - half) / factor)
    last = (b.start + len(b.count) - 1 + half) // factor
    n = last - first + 1
    # fine bin index relative to the first grid bin's first fine bin
    off = b.start - (first * factor - half)
    size = (n + 1) * factor
    sums = np.zeros((size, b.sums.shape[1]))
    count = np.zeros(size)
    sums[off:off + len(b.count)] = b.sums
    count[off:off + len(b.count)] = b.count
    w = np.ones(factor)
    if factor % 2 == 0:
        w[0] = 0.5                                   # fine bin g * factor - factor / 2
    S = (sums[:n * factor].reshape(n, factor, -1) * w[None, :, None]).sum(axis=1)
    C = (count[:n * factor].reshape(n, factor) * w[None, :]).sum(axis=1)
    if factor % 2 == 0:                              # ... and g * factor + factor / 2
        S += 0.5 * sums[factor:(n + 1) * factor:factor][:n]
        C += 0.5 * count[factor:(n + 1) * factor:factor][:n]
    return Binned(first, S, C, b.names)


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


def moving_average(v: np.ndarray, seconds: float, rate_hz: float) -> np.ndarray:
    """Moving average of ``v`` over ``seconds`` (n = round(seconds * rate_hz) samples), centred
    on each sample. scipy's ``uniform_filter1d`` of an even size n averages samples
    i - n/2 .. i + n/2 - 1, centred half a step *before* i, so every edge it smooths would read
    half a grid step late (5 ms at 100 Hz); an even n is therefore the mean of that window and
    the one a step later (weights 1/2, 1, ..., 1, 1/2 over n + 1 samples: length n, centred)."""
    n = max(1, int(round(seconds * rate_hz)))
    if n % 2:
        return scipy.ndimage.uniform_filter1d(v, n, mode="nearest")
    return 0.5 * (scipy.ndimage.uniform_filter1d(v, n, mode="nearest")
                  + scipy.ndimage.uniform_filter1d(v, n, mode="nearest", origin=-1))


def two_level(v: np.ndarray, rate_hz: float, smooth_s: float) -> np.ndarray:
    """0/1: a moving average of ``v`` above the midpoint of its 10th and 90th percentiles."""
    s = moving_average(v, smooth_s, rate_hz)
    lo, hi = np.percentile(s, [10, 90])
    if not hi > lo:
        return np.zeros_like(s)
    return (s > (lo + hi) / 2).astype(np.float64)


# ---------------------------------------------------------------- sensor


def sensor_bins(t_ns, values: np.ndarray, rate_hz: float, names=()) -> Binned:
    """Per-fine-bin sums of each channel and of the squared norm (for the high-passed
    magnitude); ``names`` of the channels, carried along."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise FeatureError(f"sensor values must be [samples, channels], got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise FeatureError("sensor values contain NaN or infinity")
    b = bin_sums(t_ns, np.column_stack([v, np.sum(v * v, axis=1)]), rate_hz * FINE)
    names = tuple(names) or tuple(f"c{j}" for j in range(v.shape[1]))
    return Binned(b.start, b.sums, b.count, names)


def sensor_magnitude(b: Binned, rate_hz: float, highpass_s: float = 0.5) -> Feature:
    """Rises of the RMS norm of (channels - their moving average over ``highpass_s``), taken
    between consecutive occupied fine bins, on the grid."""
    s1, s2, n = b.sums[:, :-1], b.sums[:, -1], b.count
    size = max(3, round(highpass_s * rate_hz * FINE) | 1)
    w_n = scipy.ndimage.uniform_filter1d(n, size, mode="nearest")
    w_s = scipy.ndimage.uniform_filter1d(s1, size, axis=0, mode="nearest")
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
    """Motion of one chunk: frame times, differences of its consecutive frames, edge frames;
    with ``flow``: the global motion of consecutive frames (``global_flow``) and the edge
    frames at the flow's resolution."""
    t_ns: np.ndarray        # int64 [k]
    motion: np.ndarray      # float64 [k - 1]
    first: np.ndarray       # float32 [h, w]
    last: np.ndarray
    flow: np.ndarray | None = None         # float64 [k - 1, 4]: tx, ty (widths), rot, zoom
    flow_first: np.ndarray | None = None   # uint8 [H, W]
    flow_last: np.ndarray | None = None


FLOW_WIDTH = 96                    # frames are compared for optical flow at this width


def global_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The similarity motion from grey frame ``a`` to ``b`` (uint8, same size): dense optical
    flow (Farneback), then least squares of ``u = tx + z x - r y``, ``v = ty + z y + r x``
    (x, y from the centre) over the interior, weighted by the texture of ``a``. Returns
    (tx / width, ty / width, r radians, zoom) at the image centre. (Sparse corners tracked by
    Lucas-Kanade are twice as fast but leave three times the error against a gyro.)"""
    h, w = a.shape
    f = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 2, 5, 1.1, 0)
    m = max(2, w // 24)
    u, v = f[m:h - m, m:w - m, 0].astype(np.float64), f[m:h - m, m:w - m, 1].astype(np.float64)
    gy, gx = np.gradient(a.astype(np.float64))
    wt = np.hypot(gx, gy)[m:h - m, m:w - m] + 1e-3
    ys, xs = np.mgrid[m:h - m, m:w - m]
    x = xs - (w - 1) / 2.0
    y = ys - (h - 1) / 2.0
    sw = wt.sum()
    xm, ym = (wt * x).sum() / sw, (wt * y).sum() / sw
    x, y = x - xm, y - ym
    um, vm = (wt * u).sum() / sw, (wt * v).sum() / sw
    rr = (wt * (x * x + y * y)).sum()
    z = (wt * ((u - um) * x + (v - vm) * y)).sum() / rr
    r = (wt * ((v - vm) * x - (u - um) * y)).sum() / rr
    # the fitted motion at the centre of the image (x = -xm, y = -ym)
    tx = um - z * xm + r * ym
    ty = vm - z * ym - r * xm
    return np.array([tx / w, ty / w, r, z])


def flow_frame(img: np.ndarray) -> np.ndarray:
    """A grey frame at ``FLOW_WIDTH`` for ``global_flow``."""
    h, w = img.shape[:2]
    return cv2.resize(img, (FLOW_WIDTH, max(8, round(FLOW_WIDTH * h / w))),
                      interpolation=cv2.INTER_AREA)


def motion_part(t_ns, frames: np.ndarray, flow_frames: np.ndarray | None = None) -> MotionPart:
    """``frames`` [k, h, w] grey (any dtype), already at low resolution, in time order;
    ``flow_frames`` [k, H, W] uint8 at ``FLOW_WIDTH``: also the global flow."""
    f = np.asarray(frames, dtype=np.float32)
    t = np.asarray(t_ns, dtype=np.int64)
    if f.ndim != 3 or len(f) != len(t) or len(f) == 0:
        raise FeatureError(f"need [k, h, w] frames with k = {len(t)} times, got {f.shape}")
    motion = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2)).astype(np.float64)
    if flow_frames is None:
        return MotionPart(t, motion, f[0], f[-1])
    g = np.asarray(flow_frames, np.uint8)
    if len(g) != len(t):
        raise FeatureError(f"{len(g)} flow frames for {len(t)} times")
    flow = np.array([global_flow(g[k], g[k + 1]) for k in range(len(g) - 1)]).reshape(-1, 4)
    return MotionPart(t, motion, f[0], f[-1], flow, g[0], g[-1])


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
        v = scipy.ndimage.gaussian_filter1d(raw, sigma_samples, mode="nearest")
        return v, np.abs(np.gradient(v)), np.abs(np.gradient(raw))
    raw = raw - np.median(raw)
    v = scipy.ndimage.gaussian_filter1d(raw, sigma_samples, mode="nearest")
    scale = max(np.percentile(v, 99.5), 0.2 * np.max(v))   # sparse events still reach ~1
    if not scale > 0:
        scale = 1.0
    v, raw = v / scale, raw / scale
    return np.clip(v, 0.0, 1.0), np.maximum(v, 0.0), np.maximum(raw, 0.0)


# ---------------------------------------------------------------- the ``signals`` family

HIGHPASS_S = 10.0                  # slow components removed from sensor channels and flow
GAP_MIN_S = 0.05                   # cues further apart than this have a gap between them
VOICE_SMOOTH_S = 0.08              # voice activity: moving average of the log power
MIN_SPEECH_S = 0.15                # ... shorter bursts (clicks, knocks) are not speech
MIN_PAUSE_S = 0.12                 # ... shorter dips (between syllables) are not pauses


def interp_grid(t_ns, values, rate_hz: float, name: str) -> Feature:
    """Samples at sorted times -> a continuous feature: linear interpolation at the grid points
    between the first and the last sample."""
    t = np.asarray(t_ns, np.float64)
    v = np.asarray(values, np.float64)
    if len(t) < 2:
        raise FeatureError(f"{name} needs at least 2 samples")
    lo = int(np.ceil(t[0] * rate_hz / NS))
    hi = int(np.floor(t[-1] * rate_hz / NS)) + 1
    _check_span(hi - lo, rate_hz)
    if hi <= lo:
        raise FeatureError(f"{name} spans less than one grid step")
    grid = np.arange(lo, hi) * (NS / rate_hz)
    return Feature(np.interp(grid, t, v), lo, rate_hz, "continuous", name)


def highpass(v: np.ndarray, rate_hz: float, seconds: float = HIGHPASS_S) -> np.ndarray:
    """``v`` minus its moving average over ``seconds`` (along axis 0), the average taken over
    the samples that exist: near the ends the window shrinks to the part inside the stream.

    Padding with the edge sample instead (``mode="nearest"``) gives that one sample up to half
    the window's weight: the last ``seconds / 2`` of a stream are then distorted by whatever
    value it ends on, unlike the same stretch of a longer stream that has samples beyond it
    (a gyro recording past a camera's ends), and the windows there, the ones with the most
    leverage on the drift, were timed off by several ms (drift errors of -40 to -100 ppm on a
    60 s camera/gyro take, of the same sign whatever the gyro's clock)."""
    v = np.asarray(v, np.float64)
    size = max(3, round(seconds * rate_hz) | 1)
    shape = (len(v),) + (1,) * (v.ndim - 1)
    n = scipy.ndimage.uniform_filter1d(np.ones(len(v)), size, mode="constant").reshape(shape)
    return v - scipy.ndimage.uniform_filter1d(v, size, axis=0, mode="constant") / n


def _log_power(p: np.ndarray, below: float = 1e-3) -> np.ndarray:
    """log10 power floored ``below`` its 95th percentile (noise floors compress alike)."""
    floor = max(1e-12, below * float(np.percentile(p, 95)))
    return np.log10(p + floor)


def audio_signals(b: Binned, rate_hz: float) -> dict:
    """The audio ``signals`` (see the module docstring) from fine-bin power sums."""
    fine = _mean_power(b)
    g = coarsen(b)
    loud = _log_power(_mean_power(g))
    out = {"audio_loudness": Feature(loud, g.start, rate_hz, "continuous", "audio_loudness")}
    lf = scipy.ndimage.gaussian_filter1d(_log_power(fine), 2.0, mode="nearest")
    t = _fine_times(b, rate_hz)
    tr, r = rises(t, lf)
    start, grid = splat(tr, r, rate_hz)
    out["audio_flux"] = Feature(grid, start, rate_hz, "continuous", "audio_flux")
    out["speech_activity"] = voice_activity(loud, g.start, rate_hz)
    out["audio_onset"] = audio_onset(b, rate_hz)
    return out


def voice_activity(loud: np.ndarray, start: int, rate_hz: float,
                   smooth_s: float = VOICE_SMOOTH_S) -> Feature:
    """0/1 voice activity from the log power (moving average of ``smooth_s``, threshold half way
    between its 10th and 90th percentiles, hysteresis of 10 % of that range); its edges, found
    to a fraction of a grid step where the smoothed power crosses the threshold, are marks
    (+1 a rise, -1 a fall)."""
    size = max(1, round(smooth_s * rate_hz))
    s = moving_average(loud, smooth_s, rate_hz)
    lo, hi = np.percentile(s, [10, 90])
    if not hi > lo:
        return Feature(np.zeros_like(s), start, rate_hz, "level", "speech_activity",
                       np.zeros(0), np.zeros(0))
    mid, hyst = (lo + hi) / 2, 0.1 * (hi - lo)
    # hysteresis: the state changes only where the far threshold is crossed
    level = np.where(s > mid + hyst, 1, np.where(s < mid - hyst, 0, -1))
    idx = np.flatnonzero(level >= 0)
    if len(idx) == 0:
        on = np.full(len(s), s[0] > mid)
    else:
        on = level[idx][np.maximum(np.searchsorted(idx, np.arange(len(s)), "right") - 1, 0)]
        on[:idx[0]] = level[idx[0]]
        on = on.astype(bool)
    on = _min_runs(on, round(MIN_PAUSE_S * rate_hz), False)     # fill short pauses
    on = _min_runs(on, round(MIN_SPEECH_S * rate_hz), True)      # drop short blips (clicks)
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    marks, sign = [], []
    for k in edges:              # the crossing of ``mid`` nearest the change
        rising = bool(on[k + 1])
        lo_j, hi_j = max(0, k - size), min(len(s) - 1, k + size)
        best = None
        for j in range(lo_j, hi_j):
            a, c = s[j] - mid, s[j + 1] - mid
            if (a <= 0 < c) if rising else (a > 0 >= c):
                x = j + a / (a - c)
                if best is None or abs(x - k) < abs(best - k):
                    best = x
        marks.append(best if best is not None else k + 0.5)
        sign.append(1.0 if rising else -1.0)
    return Feature(on.astype(np.float64), start, rate_hz, "level", "speech_activity",
                   np.asarray(marks, np.float64), np.asarray(sign, np.float64))


def _min_runs(on: np.ndarray, n: int, value: bool) -> np.ndarray:
    """``on`` with the inner runs of ``value`` shorter than ``n`` samples flipped."""
    on = on.copy()
    if n <= 1 or len(on) < 3:
        return on
    change = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    bounds = np.r_[0, change, len(on)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if on[a] == value and b - a < n and a > 0 and b < len(on):
            on[a:b] = not value
    return on


def sensor_signals(b: Binned, rate_hz: float) -> dict:
    """The sensor ``signals``: each channel's per-grid-step mean, high-passed (``ch:<name>``),
    their norm ``sensor_norm`` and the events feature ``sensor_magnitude``."""
    g = coarsen(b)
    k = g.sums.shape[1] - 1
    names = b.names or tuple(f"c{j}" for j in range(k))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = g.sums[:, :k] / g.count[:, None]
    hp = highpass(np.column_stack([_fill_gaps(means[:, j]) for j in range(k)]), rate_hz)
    out = {f"ch:{n}": Feature(hp[:, j], g.start, rate_hz, "continuous", f"ch:{n}")
           for j, n in enumerate(names)}
    out["sensor_norm"] = Feature(np.sqrt(np.sum(hp * hp, axis=1)), g.start, rate_hz,
                                 "continuous", "sensor_norm")
    out["sensor_magnitude"] = sensor_magnitude(b, rate_hz)
    return out


def video_signals(parts: list[MotionPart], rate_hz: float) -> dict:
    """The video ``signals`` from motion parts with flow: ``frame_diff``, ``flow_x``,
    ``flow_y``, ``flow_rot``, ``flow_zoom`` (per second, high-passed), ``flow_speed`` (the norm
    of x, y and rot: an angular rate when the focal length is about the image width) and
    ``video_motion``."""
    parts = sorted((p for p in parts if len(p.t_ns)), key=lambda p: int(p.t_ns[0]))
    if not parts:
        raise FeatureError("the stream has no frames")
    if any(p.flow is None for p in parts):
        raise FeatureError("video chunks were read without optical flow")
    times, diff, flow = [], [], []
    for k, p in enumerate(parts):
        if k:
            q = parts[k - 1]
            if q.flow_last.shape != p.flow_first.shape or q.last.shape != p.first.shape:
                raise FeatureError(f"frame size changes from {q.last.shape} to {p.first.shape}")
            times.append(np.array([q.t_ns[-1], p.t_ns[0]], np.float64))
            diff.append([float(np.abs(p.first - q.last).mean())])
            flow.append(global_flow(q.flow_last, p.flow_first)[None, :])
        times.append(p.t_ns.astype(np.float64))
        diff.append(p.motion)
        flow.append(p.flow)
    t0 = np.concatenate([t[:-1] for t in times])
    t1 = np.concatenate([t[1:] for t in times])
    dt = (t1 - t0) / NS
    if np.any(dt <= 0):
        raise FeatureError("frame times are not strictly increasing")
    mid = (t0 + t1) / 2
    d = np.concatenate(diff) / dt
    fl = np.concatenate(flow) / dt[:, None]
    out = {"frame_diff": interp_grid(mid, d, rate_hz, "frame_diff")}
    comps = {}
    for j, n in enumerate(("flow_x", "flow_y", "flow_rot", "flow_zoom")):
        f = interp_grid(mid, fl[:, j], rate_hz, n)
        comps[n] = Feature(highpass(f.values, rate_hz), f.start, rate_hz, "continuous", n)
    out.update(comps)
    speed = np.sqrt(sum(comps[n].values ** 2 for n in ("flow_x", "flow_y", "flow_rot")))
    out["flow_speed"] = Feature(speed, comps["flow_x"].start, rate_hz, "continuous",
                                "flow_speed")
    out["video_motion"] = motion_energy(parts, rate_hz)
    return out


def syllables(text: str) -> int:
    """A rough syllable count: groups of vowels (Latin script), else a third of the letters."""
    t = text.lower()
    vowels = "aeiouyàáâãäåèéêëìíîïòóôõöùúûüý"
    n, prev = 0, False
    for ch in t:
        v = ch in vowels
        n += v and not prev
        prev = v
    if n == 0:
        n = sum(ch.isalpha() for ch in t) // 3
    return max(1, n)


def text_signals(t_ns, t_end_ns, n_syllables, rate_hz: float) -> dict:
    """The text ``signals``: ``text_activity`` with its marks and ``speech_rate``."""
    act = text_activity(t_ns, t_end_ns, rate_hz)
    s = np.asarray(t_ns, np.int64)
    e = np.asarray(t_end_ns, np.int64)
    order = np.argsort(s, kind="stable")
    s, e = s[order].astype(np.float64), e[order].astype(np.float64)
    syl = np.asarray(n_syllables, np.float64)[order]
    run_end = np.maximum.accumulate(e)
    gap = s[1:] - run_end[:-1]
    marks = [(s[0], 1.0)]
    for k in range(len(gap)):
        if gap[k] > GAP_MIN_S * NS:
            marks += [(run_end[k], -1.0), (s[k + 1], 1.0)]
        elif s[k + 1] > s[k]:
            marks.append((s[k + 1], 0.0))
    marks.append((run_end[-1], -1.0))
    m = np.array(marks)
    pos = m[:, 0] * rate_hz / NS - act.start
    act = Feature(act.values, act.start, rate_hz, "level", "text_activity", pos, m[:, 1])
    # speech rate: syllables per second of each cue, spread over the bins it covers
    n = len(act.values)
    edges = (act.start + np.arange(n + 1) - 0.5) * (NS / rate_hz)
    rate = np.zeros(n)
    for a, b, k in zip(s, e, syl):
        if b <= a:
            continue
        cov = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None)
        rate += cov / (NS / rate_hz) * k / ((b - a) / NS)
    return {"text_activity": act,
            "speech_rate": Feature(rate, act.start, rate_hz, "continuous", "speech_rate")}


# ---------------------------------------------------------------- the ``waveform`` family


@dataclass(frozen=True)
class WavePart:
    """Audio samples low-passed and resampled to the absolute grid ``k / WAVE_RATE_HZ`` s."""
    start: int               # grid index of values[0]
    values: np.ndarray       # float32


def wave_part(block_t_ns, blocks: list[np.ndarray], sample_rate: float,
              wave_rate: float = WAVE_RATE_HZ) -> WavePart | None:
    """One chunk's samples (block b's sample q at t_b + round(q * 1e9 / sample_rate)) low-passed
    at ``WAVE_CUTOFF_HZ`` (linear-phase FIR, delay compensated) and interpolated at the grid
    points between its first and last sample."""
    lens = np.array([len(b) for b in blocks], np.int64)
    if lens.sum() < 2:
        return None
    pcm = np.concatenate([np.asarray(b, np.float64).reshape(-1) for b in blocks])
    if not np.all(np.isfinite(pcm)):
        raise FeatureError("audio samples contain NaN or infinity")
    bt = np.asarray(block_t_ns, np.int64)
    o = int(bt[0])
    within = np.arange(len(pcm)) - np.repeat(np.cumsum(lens) - lens, lens)
    rel = np.repeat(bt - o, lens).astype(np.float64) + np.rint(within * (NS / sample_rate))
    cutoff = min(WAVE_CUTOFF_HZ, 0.4 * wave_rate, 0.45 * sample_rate)
    taps = int(4 * sample_rate / (0.5 * cutoff)) | 1
    h = scipy.signal.firwin(min(taps, 1023), cutoff, fs=sample_rate)
    xf = scipy.signal.oaconvolve(pcm, h, mode="same") if len(pcm) >= len(h) else pcm
    step = NS / wave_rate
    if step != round(step):
        raise FeatureError(f"waveform rate {wave_rate} Hz is not a whole number of ns per step")
    step = int(round(step))
    k0 = -((-(o + int(rel[0]))) // step)
    k1 = (o + int(rel[-1])) // step
    if k1 < k0:
        return None
    grid = (np.arange(k0, k1 + 1, dtype=np.int64) * step - o).astype(np.float64)
    return WavePart(int(k0), np.interp(grid, rel, xf).astype(np.float32))


MAX_WAVE_S = 4 * 3600.0


def merge_wave(parts: list[WavePart], wave_rate: float = WAVE_RATE_HZ) -> Feature:
    parts = [p for p in parts if p is not None and len(p.values)]
    if not parts:
        raise FeatureError("the stream has no samples")
    lo = min(p.start for p in parts)
    hi = max(p.start + len(p.values) for p in parts)
    if hi - lo > MAX_WAVE_S * wave_rate:
        raise FeatureError(f"the stream spans {(hi - lo) / wave_rate:.0f} s, more than the "
                           f"{MAX_WAVE_S:.0f} s the waveform family holds")
    v = np.zeros(hi - lo, np.float32)
    for p in parts:
        v[p.start - lo:p.start - lo + len(p.values)] = p.values
    return Feature(v, lo, wave_rate, "waveform", "audio_waveform")
