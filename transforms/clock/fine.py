"""Fine stage: landmark pairs along a candidate line, and the robust line through them.

Three kinds of landmark pairs (``LandmarkPairs``: stream time, reference time, a quality and
the precision class they belong to), all in relative seconds (transforms/clock/search.py):

- ``window_pairs``: the reference cut into windows; each window is cross-correlated
  (normalised) with the stream's signal resampled along the line, over lags of +-``search_s``;
  the peak, refined by a parabola, times the window to a fraction of a sample. Continuous
  signals at the feature rate, and audio waveforms at ``WAVE_RATE_HZ`` (sub-millisecond).
- ``event_pairs``: peaks of impulse features (and edges of levels), paired along the DTW path
  (the stream resampled along the line first, so the band is about the line) and then along
  the fitted line.
- ``marks_pairs``: subtitle marks against voice-activity edges. A cue start is paired with a
  rise, a cue end before a gap with a fall, and the boundary of touching cues with the pause it
  falls in, at ``fall + lam * (rise - fall)``: ``lam`` (where in its pause the subtitles put a
  boundary) is fitted with the line (``fit_marks``).

``robust_fit`` finds the line: RANSAC on the pairs, then weighted least squares on the inliers,
each precision class weighted by the inverse of its own robust residual variance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.interpolate import CubicSpline
from scipy.signal import find_peaks

from mmalign.transforms.clock.dtw import run_dtw
from mmalign.transforms.clock.search import Line, Track


class FitError(ValueError):
    """Too few landmark pairs for a line."""


@dataclass
class LandmarkPairs:
    t_dev: np.ndarray = field(default_factory=lambda: np.zeros(0))
    t_ref: np.ndarray = field(default_factory=lambda: np.zeros(0))
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    attempted: int = 0          # windows / landmarks that could have made a pair
    src: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # which pair

    def __len__(self) -> int:
        return len(self.t_dev)

    def tagged(self, src: int) -> LandmarkPairs:
        return dataclasses.replace(self, src=np.full(len(self.t_dev), src, np.int64))

    def extend(self, other: LandmarkPairs) -> LandmarkPairs:
        return LandmarkPairs(np.r_[self.t_dev, other.t_dev], np.r_[self.t_ref, other.t_ref],
                             np.r_[self.quality, other.quality], np.r_[self.kind, other.kind],
                             self.attempted + other.attempted, np.r_[self.src, other.src])


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class WindowChannel:
    ref: Track
    dev: Track
    weight: float = 1.0


def _dev_along(dev: Track, line: Line, t_ref: np.ndarray, cubic: bool) -> np.ndarray:
    t = line.dev(t_ref)
    if not cubic:
        return dev.at(t)
    x = (t - dev.t0) * dev.rate
    lo = max(0, int(np.floor(x.min())) - 3)
    hi = min(len(dev.values), int(np.ceil(x.max())) + 4)
    if hi - lo < 4:
        return dev.at(t)
    seg = dev.values[lo:hi].astype(np.float64)
    out = CubicSpline(np.arange(lo, hi), seg)(x)
    out[(x < 0) | (x > len(dev.values) - 1)] = 0.0
    return out


def window_pairs(channels: list[WindowChannel], line: Line, *, window_s: float,
                 step_s: float, search_s: float, span: tuple[float, float],
                 kind: int = 0, cubic: bool = False, min_std: float = 1e-9) -> LandmarkPairs:
    """One landmark pair per reference window over ``span`` (reference times, s) where the
    weighted mean NCC over the channels peaks inside +-``search_s`` (not on its edge)."""
    rate = channels[0].ref.rate
    n = max(4, int(round(window_s * rate)))
    s = max(2, int(np.ceil(search_s * rate)))
    starts = np.arange(span[0], span[1] - window_s + 1e-9, step_s)
    t_dev, t_ref, qual = [], [], []
    attempted = 0
    wsum = sum(c.weight for c in channels)
    for a in starts:
        tr = a + np.arange(n) / rate
        te = a + np.arange(-s, n + s) / rate
        total = np.zeros(2 * s + 1)
        used = 0.0
        for ch in channels:
            r = ch.ref.at(tr)
            d = _dev_along(ch.dev, line, te, cubic)
            r = r - r.mean()
            nr = np.sqrt(np.sum(r * r))
            if not nr > min_std * np.sqrt(n):
                continue
            win = sliding_window_view(d, n)              # [2s + 1, n]: dev shifted by lag
            dm = win - win.mean(axis=1, keepdims=True)
            nd = np.sqrt(np.sum(dm * dm, axis=1))
            with np.errstate(invalid="ignore", divide="ignore"):
                c = (dm @ r) / (nd * nr)
            c = np.where(np.isfinite(c), c, 0.0)
            total += ch.weight * c
            used += ch.weight
        if used < 0.5 * wsum:
            continue
        attempted += 1
        curve = total / used
        i = int(np.argmax(curve))
        if i == 0 or i == len(curve) - 1:
            continue
        den = curve[i - 1] - 2 * curve[i] + curve[i + 1]
        frac = 0.5 * (curve[i - 1] - curve[i + 1]) / den if den < 0 else 0.0
        lag = (i - s + frac) / rate            # ref window starting at a matches dev at
        centre = a + (n - 1) / (2 * rate)      # line.dev(t + lag)
        t_ref.append(centre)
        t_dev.append(float(line.dev(centre + lag)))
        qual.append(float(curve[i]))
    return LandmarkPairs(np.array(t_dev), np.array(t_ref), np.array(qual),
                         np.full(len(t_dev), kind, np.int64), attempted,
                         np.zeros(len(t_dev), np.int64))


# ---------------------------------------------------------------- events


LANDMARK_REL_HEIGHT = 0.3   # landmark prominence, relative to the conditioned scale
LANDMARK_SEPARATION_S = 0.1


def _landmarks(sig: np.ndarray, rate_hz: float) -> np.ndarray:
    top = min(float(np.max(sig)), 1.0) if len(sig) else 0.0
    if not top > 0:
        return np.zeros(0, np.int64)
    peaks, _ = find_peaks(sig, prominence=LANDMARK_REL_HEIGHT * top,
                          distance=max(1, int(LANDMARK_SEPARATION_S * rate_hz)))
    return peaks.astype(np.int64)


def refine(raw: np.ndarray, peaks: np.ndarray, half: int = 1) -> np.ndarray:
    """Sub-sample landmark positions: centroid of ``raw`` within +-``half`` of each peak."""
    offs = np.arange(-half, half + 1)
    idx = np.clip(peaks[:, None] + offs[None, :], 0, len(raw) - 1)
    w = raw[idx]
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (w * idx).sum(axis=1) / tot
    return np.where(tot > 0, c, peaks.astype(np.float64))


def landmarks(sig: np.ndarray, raw: np.ndarray, rate_hz: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """(peak indices, sub-sample positions) of the landmarks of a conditioned feature."""
    peaks = _landmarks(sig, rate_hz)
    return peaks, refine(raw, peaks)


def nearest_pairs(pred: np.ndarray, target: np.ndarray, max_dist: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (i, k): ``target[k]`` nearest to ``pred[i]`` within ``max_dist``; a
    target claimed twice goes to the closer prediction. ``target`` sorted."""
    if len(pred) == 0 or len(target) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = np.clip(np.searchsorted(target, pred), 0, len(target) - 1)
    km = np.clip(k - 1, 0, len(target) - 1)
    k = np.where(np.abs(target[km] - pred) <= np.abs(target[k] - pred), km, k)
    dist = np.abs(target[k] - pred)
    order = np.lexsort((dist, k))
    first = np.r_[True, k[order][1:] != k[order][:-1]]
    keep = np.zeros(len(k), bool)
    keep[order[first]] = True
    ok = keep & (dist <= max_dist)
    return np.flatnonzero(ok), k[ok]


def path_pairs(r_peaks: np.ndarray, d_pos: np.ndarray, path_i: np.ndarray,
               path_j: np.ndarray, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, k) of reference landmark i and stream landmark k that the warping path links:
    the stream landmark nearest to where the path sends the reference one."""
    a = np.searchsorted(path_i, r_peaks, "left")
    b = np.searchsorted(path_i, r_peaks, "right") - 1
    j0 = (path_j[a] + path_j[b]) / 2.0
    return nearest_pairs(j0, d_pos, max_dist)


def _peaks(sig: np.ndarray, raw: np.ndarray, rate: float) -> np.ndarray:
    return landmarks(sig, raw, rate)[1]


def event_pairs(ref_land: tuple[np.ndarray, np.ndarray, float, float],
                dev_land: tuple[np.ndarray, np.ndarray, float, float], line: Line, *,
                tol_s: float, kind: int = 1, path: tuple[np.ndarray, np.ndarray] | None = None
                ) -> LandmarkPairs:
    """Peaks of two conditioned impulse (or level-slope) signals, each given as (landmark
    signal, raw signal, t0, rate), paired one to one: the stream's peak nearest to where the
    line (or, when given, the DTW ``path`` of (reference time, stream time) points) sends the
    reference's, within ``tol_s``."""
    r_sig, r_raw, r_t0, r_rate = ref_land
    d_sig, d_raw, d_t0, d_rate = dev_land
    r_t = r_t0 + _peaks(r_sig, r_raw, r_rate) / r_rate
    d_t = d_t0 + _peaks(d_sig, d_raw, d_rate) / d_rate
    lo, hi = line.dev(r_t0), line.dev(r_t0 + (len(r_sig) - 1) / r_rate)
    d_in = d_t[(d_t >= lo) & (d_t <= hi)]
    r_in = r_t[(line.dev(r_t) >= d_t0) & (line.dev(r_t) <= d_t0 + (len(d_sig) - 1) / d_rate)]
    if path is not None and len(path[0]):
        pred = np.interp(r_in, path[0], path[1])
    else:
        pred = line.dev(r_in)
    i, k = nearest_pairs(pred, np.sort(d_in), tol_s / line.rho)
    d_sorted = np.sort(d_in)
    attempted = min(len(r_in), len(d_in))
    return LandmarkPairs(d_sorted[k], r_in[i], np.ones(len(i)), np.full(len(i), kind, np.int64),
                         attempted, np.zeros(len(i), np.int64))


def dtw_path(ref: Track, dev: Track, line: Line, span: tuple[float, float], engine: str,
             band_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """DTW of the reference against the stream resampled along the line, over ``span``:
    (reference times, stream times) of the path, mean cost per step."""
    rate = ref.rate
    tr = np.arange(span[0], span[1], 1.0 / rate)
    if len(tr) < 4:
        return np.zeros(0), np.zeros(0), float("nan")
    x = ref.at(tr)
    y = dev.at(line.dev(tr))
    res = run_dtw(x, y, engine, half_width=max(1, round(band_s * rate)))
    return tr[res.path_i], line.dev(tr[res.path_j]), res.cost / max(1, len(res.path_i))


# ---------------------------------------------------------------- subtitle marks


@dataclass(frozen=True)
class Marks:
    t: np.ndarray       # times (relative s)
    sign: np.ndarray    # +1 start / rise, -1 end / fall, 0 boundary


def match_marks(dev: Marks, ref: Marks, line: Line, lam: float, search_s: float,
                tol_s: float, max_drift: float, *, kind: int = 2, trials: int = 600,
                seed: int = 0) -> tuple[LandmarkPairs, np.ndarray, np.ndarray, float]:
    """Pairs of the stream's marks with the reference's edges (see the module docstring).

    Every compatible edge (a rise for a start, a fall for an end, a pause for a boundary)
    within ``search_s`` of where ``line`` sends a mark is a candidate; RANSAC over candidate
    pairs finds the line explaining the most *distinct* marks within ``tol_s`` (a boundary
    explained anywhere inside its pause), and each mark keeps its nearest candidate to it
    (a boundary at ``fall + lam * (rise - fall)``). Returns the pairs, per pair the pause
    (fall, length) of a boundary (NaN for edges), and the chance that a mark placed at random
    has a candidate within ``tol_s`` (so consistency can be corrected for chance)."""
    rises = np.sort(ref.t[ref.sign > 0])
    falls = np.sort(ref.t[ref.sign < 0])
    k = np.searchsorted(rises, falls, "right")
    ok = k < len(rises)
    p_fall, p_rise = falls[ok], rises[k[ok]]
    pred = line.ref(dev.t)
    ci, lo, hi, fall, length = [], [], [], [], []
    for i, (p, sg) in enumerate(zip(pred, dev.sign)):
        if sg != 0:
            target = rises if sg > 0 else falls
            j = np.flatnonzero(np.abs(target - p) <= search_s)
            ci += [i] * len(j)
            lo += list(target[j])
            hi += list(target[j])
            fall += [np.nan] * len(j)
            length += [np.nan] * len(j)
        else:
            d = np.maximum(0.0, np.maximum(p_fall - p, p - p_rise))
            j = np.flatnonzero(d <= search_s)
            ci += [i] * len(j)
            lo += list(p_fall[j])
            hi += list(p_rise[j])
            fall += list(p_fall[j])
            length += list(p_rise[j] - p_fall[j])
    ci, lo, hi = np.array(ci, np.int64), np.array(lo), np.array(hi)
    fall, length = np.array(fall), np.array(length)
    span = max(1e-9, float(np.ptp(ref.t))) if len(ref.t) else 1.0
    chance = []
    for sg in dev.sign:
        if sg > 0:
            chance.append(len(rises) * 2 * tol_s / span)
        elif sg < 0:
            chance.append(len(falls) * 2 * tol_s / span)
        else:
            chance.append(float(np.sum(p_rise - p_fall + 2 * tol_s)) / span)
    p_chance = float(np.clip(np.mean(chance), 0.0, 1.0)) if chance else 1.0
    empty = LandmarkPairs(attempted=len(dev.t))
    if len(np.unique(ci)) < 3:
        return empty, np.zeros(0), np.zeros(0), p_chance
    x = dev.t[ci]
    mid = (lo + hi) / 2
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(ci), trials), rng.integers(0, len(ci), trials)
    dx = x[b] - x[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(np.abs(dx) > 1e-6, (mid[b] - mid[a]) / dx, line.rho)
    good = (np.abs(rho - 1) <= max_drift) & (ci[a] != ci[b])
    rho_p = rho[good]
    rho = np.r_[rho_p, np.full(len(ci), line.rho)]
    c = np.r_[mid[a][good] - rho_p * x[a][good], mid - line.rho * x]
    y = rho[:, None] * x[None, :] + c[:, None]
    res = np.maximum(0.0, np.maximum(lo[None, :] - y, y - hi[None, :]))     # interval distance
    order = np.argsort(ci, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(ci[order]) != 0])
    best_per = np.minimum.reduceat(res[:, order], starts, axis=1)            # per mark
    score = (best_per <= tol_s).sum(axis=1) - np.minimum(best_per, tol_s).sum(axis=1) / (
        tol_s * (len(starts) + 1))
    w = int(np.argmax(score))
    bl = Line(float(rho[w]), float(c[w]))
    target = np.where(np.isfinite(fall), fall + lam * np.nan_to_num(length), lo)
    r = np.abs(target - bl.ref(x))
    r_int = res[w]
    keep_i, keep_j = [], []
    for i in np.unique(ci):
        js = np.flatnonzero((ci == i) & (r_int <= tol_s))
        if len(js):
            keep_i.append(i)
            keep_j.append(js[np.argmin(r[js])])
    # one mark per reference edge / pause: the closer wins
    keep_j = np.array(keep_j, np.int64)
    if len(keep_j):
        key = np.round(lo[keep_j], 9)
        o = np.lexsort((r[keep_j], key))
        first = np.r_[True, key[o][1:] != key[o][:-1]]
        keep_j = np.sort(keep_j[o[first]])
    n = len(keep_j)
    lp = LandmarkPairs(x[keep_j], target[keep_j], np.ones(n), np.full(n, kind, np.int64),
                       len(dev.t), np.zeros(n, np.int64))
    return lp, fall[keep_j], length[keep_j], p_chance


# ---------------------------------------------------------------- the robust line


@dataclass(frozen=True)
class Fit:
    line: Line
    inliers: np.ndarray
    residual: np.ndarray       # (t_ref - line(t_dev)) per pair, s
    rms: float                 # weighted rms of the inlier residuals, s
    sigma: dict                # precision class -> robust residual sd (s)


def robust_fit(p: LandmarkPairs, tol_s: float | dict, max_drift: float, *,
               min_pairs: int = 3, trials: int = 400, seed: int = 0) -> Fit:
    """The line through the pairs: RANSAC (pair lines with |rho - 1| <= max_drift, and single
    pairs at rate 1), then weighted least squares on the inliers (within ``tol_s``: one value,
    or one per precision class) with a weight per precision class = 1 / its robust residual
    variance; three times."""
    n = len(p)
    if n < min_pairs:
        raise FitError(f"only {n} landmark pairs matched; need at least {min_pairs}")
    if isinstance(tol_s, dict):
        tol_s = np.array([tol_s[int(k)] for k in p.kind], np.float64)
    x, y = p.t_dev, p.t_ref
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, trials), rng.integers(0, n, trials)
    dx = x[j] - x[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(np.abs(dx) > 0, (y[j] - y[i]) / dx, 1.0)
    ok = np.abs(rho - 1.0) <= max_drift
    rho, c = rho[ok], (y[i] - rho * x[i])[ok]
    rho = np.r_[rho, np.ones(n)]
    c = np.r_[c, y - x]
    q = np.clip(p.quality, 0.05, 1.0)
    res = np.abs(y[None, :] - c[:, None] - rho[:, None] * x[None, :])
    tol = np.broadcast_to(np.asarray(tol_s, np.float64), (n,))
    score = ((res <= tol) * q[None, :]).sum(axis=1) - \
        (np.minimum(res, tol) / tol * q[None, :]).sum(axis=1) / (n + 1)
    b = int(np.argmax(score))
    line = Line(float(rho[b]), float(c[b]))
    inl = np.abs(y - line.ref(x)) <= tol
    sigma: dict = {}
    for _ in range(3):
        if inl.sum() < 2:
            break
        w = np.zeros(n)
        for k in np.unique(p.kind):
            m = inl & (p.kind == k)
            if not m.any():
                continue
            r = y[m] - line.ref(x[m])
            sd = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-7)
            sigma[int(k)] = sd
            w[m] = q[m] / sd ** 2
        if np.ptp(x[inl]) > 0 and inl.sum() >= 3:
            A = np.column_stack([x[inl], np.ones(inl.sum())])
            sw = np.sqrt(w[inl])
            sol, *_ = np.linalg.lstsq(A * sw[:, None], y[inl] * sw, rcond=None)
            rho_f = float(np.clip(sol[0], 1 - max_drift, 1 + max_drift))
            c_f = float(np.sum(w[inl] * (y[inl] - rho_f * x[inl])) / np.sum(w[inl]))
            line = Line(rho_f, c_f)
        inl = np.abs(y - line.ref(x)) <= tol
    resid = y - line.ref(x)
    if inl.any():
        wi = np.array([1.0 / sigma.get(int(k), 1.0) ** 2 for k in p.kind[inl]])
        rms = float(np.sqrt(np.sum(wi * resid[inl] ** 2) / np.sum(wi)))
    else:
        rms = float("inf")
    return Fit(line, inl, resid, rms, sigma)


def axis_map(ref: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """The linear map A with ``ref ~ dev @ A`` (least squares), columns standardised first:
    the unknown rotation (and scales, signs) between two devices' axes."""
    A, *_ = np.linalg.lstsq(dev, ref, rcond=None)
    return A
