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
import scipy  # its submodules load on first use: not in a run without DTW-sync
from numpy.lib.stride_tricks import sliding_window_view

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
    out = scipy.interpolate.CubicSpline(np.arange(lo, hi), seg)(x)
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
    peaks, _ = scipy.signal.find_peaks(sig, prominence=LANDMARK_REL_HEIGHT * top,
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


PAUSE_WEIGHT_S = 0.3       # a boundary in a pause of length L weighs 1 / (1 + L / this)


@dataclass
class MarkMatch:
    pairs: LandmarkPairs
    fall: np.ndarray            # per pair: the pause a boundary was placed in (NaN: an edge)
    length: np.ndarray
    chance: float               # share of marks a random line would pair within tol
    score: float                # the RANSAC score of the best line (weighted distinct marks)


def match_marks(dev: Marks, ref: Marks, line: Line, lam: float, search_s: float,
                tol_s: float, max_drift: float, *, kind: int = 2, trials: int = 600,
                seed: int = 0) -> MarkMatch:
    """Pairs of the stream's marks with the reference's edges (see the module docstring).

    A start pairs with a rise, an end with a fall, a boundary with the point
    ``fall + lam * (rise - fall)`` of a pause; every such target within ``search_s`` of where
    ``line`` sends a mark is a candidate. RANSAC over candidate pairs finds the line that
    explains the most *distinct* marks within ``tol_s`` (boundaries in long pauses, whose
    place is less certain, weigh less), and each mark keeps its nearest candidate to it."""
    rises = np.sort(ref.t[ref.sign > 0])
    falls = np.sort(ref.t[ref.sign < 0])
    k = np.searchsorted(rises, falls, "right")
    ok = k < len(rises)
    p_fall, p_rise = falls[ok], rises[k[ok]]
    p_at = p_fall + lam * (p_rise - p_fall)
    pred = line.ref(dev.t)
    ci, tgt, fall, length = [], [], [], []
    for i, (p, sg) in enumerate(zip(pred, dev.sign)):
        if sg != 0:
            target = rises if sg > 0 else falls
            j = np.flatnonzero(np.abs(target - p) <= search_s)
            tgt += list(target[j])
            fall += [np.nan] * len(j)
            length += [np.nan] * len(j)
        else:
            j = np.flatnonzero(np.abs(p_at - p) <= search_s)
            tgt += list(p_at[j])
            fall += list(p_fall[j])
            length += list(p_rise[j] - p_fall[j])
        ci += [i] * len(j)
    ci, tgt = np.array(ci, np.int64), np.array(tgt)
    fall, length = np.array(fall), np.array(length)
    q = np.where(np.isfinite(length), 1.0 / (1.0 + np.nan_to_num(length) / PAUSE_WEIGHT_S), 1.0)
    span = max(1e-9, float(np.ptp(ref.t))) if len(ref.t) else 1.0
    dens = {1: len(rises), -1: len(falls), 0: len(p_fall)}
    chance = [min(1.0, dens[int(np.sign(sg))] * 2 * tol_s / span) for sg in dev.sign]
    p_chance = float(np.mean(chance)) if chance else 1.0
    if len(np.unique(ci)) < 3:
        return MarkMatch(LandmarkPairs(attempted=len(dev.t)), np.zeros(0), np.zeros(0),
                         p_chance, 0.0)
    x = dev.t[ci]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(ci), trials), rng.integers(0, len(ci), trials)
    dx = x[b] - x[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(np.abs(dx) > 1e-6, (tgt[b] - tgt[a]) / dx, line.rho)
    good = (np.abs(rho - 1) <= max_drift) & (ci[a] != ci[b])
    rho_p = rho[good]
    rho = np.r_[rho_p, np.full(len(ci), line.rho)]
    c = np.r_[tgt[a][good] - rho_p * x[a][good], tgt - line.rho * x]
    res = np.abs(tgt[None, :] - rho[:, None] * x[None, :] - c[:, None])
    order = np.argsort(ci, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(ci[order]) != 0])
    # per mark: its best candidate's residual and weight
    best_res = np.minimum.reduceat(res[:, order], starts, axis=1)
    qm = np.maximum.reduceat(q[order], starts)
    score = ((best_res <= tol_s) * qm).sum(axis=1) - (np.minimum(best_res, tol_s) / tol_s
                                                      * qm).sum(axis=1) / (len(starts) + 1)
    w = int(np.argmax(score))
    r = res[w]
    keep = []
    for i in np.unique(ci):
        js = np.flatnonzero((ci == i) & (r <= tol_s))
        if len(js):
            keep.append(js[np.argmin(r[js])])
    keep = np.array(keep, np.int64)
    if len(keep):                  # one mark per reference target: the closer wins
        key = np.round(tgt[keep], 9)
        o = np.lexsort((r[keep], key))
        first = np.r_[True, key[o][1:] != key[o][:-1]]
        keep = np.sort(keep[o[first]])
    n = len(keep)
    lp = LandmarkPairs(x[keep], tgt[keep], q[keep], np.full(n, kind, np.int64), len(dev.t),
                       np.zeros(n, np.int64))
    return MarkMatch(lp, fall[keep], length[keep], p_chance, float(score[w]))


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
            sigma[int(k)] = _robust_sd(y[m] - line.ref(x[m]))
            # each source of a class (the feature pair that made it) weighted by its own
            # spread: windows of per-axis motion are timed more precisely than those of the
            # motion's magnitude, and should not count the same
            for s in np.unique(p.src[m]):
                ms = m & (p.src == s)
                sd = _robust_sd(y[ms] - line.ref(x[ms])) if ms.sum() >= 5 else sigma[int(k)]
                w[ms] = q[ms] / sd ** 2
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


def _robust_sd(r: np.ndarray) -> float:
    return max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-7)


def axis_map(ref: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """The linear map A with ``ref ~ dev @ A`` (least squares), columns standardised first:
    the unknown rotation (and scales, signs) between two devices' axes."""
    A, *_ = np.linalg.lstsq(dev, ref, rcond=None)
    return A
