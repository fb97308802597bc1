"""From two sync features to a clock model: coarse offset, banded DTW, landmark fit.

1. coarse offset: FFT cross-correlation of the two features over lags within
   +-``max_offset_s`` of the prior (the declared clocks), so offsets wider than the band work;
2. the overlapping parts go through DTW (banded exact by default, or fastdtw) inside a
   Sakoe-Chiba band of ``band_s`` around that offset;
3. landmarks (peaks of impulse features, edges of level features) of the reference are paired
   with the nearest stream landmark around where the warping path sends them, each refined to a
   fraction of a grid step (centroid around the peak);
4. RANSAC then least squares fit ``t_ref - t_dev = offset + drift * (t_dev - anchor)`` to the
   pairs; then every landmark is re-paired along the fitted line (within the inlier tolerance)
   and the line refitted, twice, so pairs where the path strayed between events are recovered.
   Confidence in [0, 1] = support * consistency * precision (see ``_confidence``).

The fitted model maps the stream's device clock onto the *reference stream's device clock*;
``finalize`` composes it with the reference's own model, or falls back to the declared one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.signal import correlate, correlation_lags, find_peaks

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.sync import MAX_PATH_POINTS, SyncEvidence, SyncResult
from mmalign.transforms.clock.dtw import run_dtw
from mmalign.transforms.clock.features import NS, Feature, condition

MAX_DRIFT = 1e-3            # |drift| above 1000 ppm is not a clock, it is a wrong match
MIN_OVERLAP_S = 5.0
LANDMARK_REL_HEIGHT = 0.3   # landmark prominence, relative to the conditioned scale
LANDMARK_SEPARATION_S = 0.1


class SyncError(ValueError):
    """The two streams cannot be synchronised; the message says why."""


# ---------------------------------------------------------------- clock algebra


def compose(outer: ClockModel, inner: ClockModel, source: str = "estimated") -> ClockModel:
    """``outer(inner(t))`` as one model anchored at ``inner.anchor_ns``."""
    a, o_i, d_i = inner.anchor_ns, inner.offset_ns, inner.drift
    o = o_i + outer.offset_ns + outer.drift * (a + o_i - outer.anchor_ns)
    return ClockModel(round(o), d_i + outer.drift + d_i * outer.drift, a, source,
                      inner.confidence)


def prior_offset_ns(stream_declared: ClockModel, ref_declared: ClockModel, t_ns: int) -> int:
    """Declared offset from the stream's device clock to the reference's device clock at t."""
    return int(ref_declared.to_dev(stream_declared.to_ref([t_ns]))[0]) - int(t_ns)


# ---------------------------------------------------------------- steps


def coarse_lag(ref: np.ndarray, ref_start: int, dev: np.ndarray, dev_start: int,
               lag_lo: int, lag_hi: int) -> tuple[int, float]:
    """Grid lag L in [lag_lo, lag_hi] maximising the correlation of ref[k] with dev[k - L]
    (absolute grid indices); returns (L, normalised correlation)."""
    r, d = ref - ref.mean(), dev - dev.mean()
    c = correlate(r, d, mode="full", method="fft")
    lags = correlation_lags(len(r), len(d), mode="full") + (ref_start - dev_start)
    ok = (lags >= lag_lo) & (lags <= lag_hi)
    if not ok.any():
        raise SyncError("the streams do not overlap at any offset within max_offset_s of the "
                        "declared clocks; raise sync.max_offset_s")
    k = np.flatnonzero(ok)[np.argmax(c[ok])]
    norm = np.sqrt(np.sum(r * r) * np.sum(d * d))
    return int(lags[k]), float(c[k] / norm) if norm > 0 else 0.0


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


def ransac_line(x: np.ndarray, y: np.ndarray, tol: float, max_slope: float = MAX_DRIFT,
                trials: int = 400, seed: int = 0) -> tuple[float, float, np.ndarray]:
    """Robust ``y = c + s * x`` with |s| <= max_slope: the pair line with the most inliers
    (|residual| <= tol), then least squares on its inliers (twice). Returns (c, s, inliers)."""
    n = len(x)
    if n < 3:
        raise SyncError(f"only {n} landmark pairs matched; need at least 3")
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, trials), rng.integers(0, n, trials)
    dx = x[j] - x[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(np.abs(dx) > 0, (y[j] - y[i]) / dx, 0.0)
    s = np.clip(s, -max_slope, max_slope)
    c = y[i] - s * x[i]
    # single points with zero slope too: offsets are what matter most
    s = np.r_[s, np.zeros(n)]
    c = np.r_[c, y]
    res = np.abs(y[None, :] - c[:, None] - s[:, None] * x[None, :])
    score = (res <= tol).sum(axis=1) - np.minimum(res, tol).sum(axis=1) / (tol * (n + 1))
    best = int(np.argmax(score))
    inl = res[best] <= tol
    cc, ss = c[best], s[best]
    for _ in range(2):
        if inl.sum() >= 2 and np.ptp(x[inl]) > 0:
            ss, cc = np.polyfit(x[inl], y[inl], 1)
            ss = float(np.clip(ss, -max_slope, max_slope))
            cc = float(np.mean(y[inl] - ss * x[inl]))
        else:
            ss, cc = 0.0, float(np.median(y[inl]))
        inl = np.abs(y - cc - ss * x) <= tol
    return float(cc), float(ss), inl


def _confidence(n_inliers: int, n_side: int, rms: float, tol: float) -> float:
    """support (saturating in the number of inliers) * consistency (share of the sparser
    side's landmarks explained) * precision (residual RMS against the inlier tolerance)."""
    if n_inliers == 0 or n_side == 0:
        return 0.0
    support = 1.0 - np.exp(-n_inliers / 4.0)
    consistency = min(1.0, n_inliers / n_side)
    precision = 1.0 / (1.0 + (rms / tol) ** 2)
    return float(np.clip(support * consistency * precision, 0.0, 1.0))


# ---------------------------------------------------------------- the estimate


def estimate_clock(ref: Feature, dev: Feature, *, engine: str = "banded", band_s: float = 1.0,
                   max_offset_s: float = 10.0, prior_offset_ns: int = 0,
                   tol_s: float | None = None, stream_id: str = "",
                   reference: str = "") -> SyncResult:
    """The stream's device clock -> the reference's device clock, from their features.
    Raises ``SyncError`` when the streams cannot be matched at all."""
    if ref.rate_hz != dev.rate_hz:
        raise SyncError(f"features have different rates ({ref.rate_hz}, {dev.rate_hz} Hz)")
    rate = ref.rate_hz
    step_ns = NS / rate
    tol = tol_s if tol_s is not None else max(3.0 / rate, 0.04)
    r_dtw, r_land, r_raw = condition(ref)
    d_dtw, d_land, d_raw = condition(dev)
    lag0 = round(prior_offset_ns / step_ns)
    span = int(np.ceil(max_offset_s * rate))
    lag, _ = coarse_lag(r_dtw, ref.start, d_dtw, dev.start, lag0 - span, lag0 + span)
    # overlap in absolute reference-grid indices
    a = max(ref.start, dev.start + lag)
    b = min(ref.start + len(r_dtw), dev.start + lag + len(d_dtw))
    if (b - a) < MIN_OVERLAP_S * rate:
        raise SyncError(f"the streams overlap for only {(b - a) / rate:.1f} s at the coarse "
                        f"offset; need {MIN_OVERLAP_S:.0f} s")
    ri, di = slice(a - ref.start, b - ref.start), slice(a - lag - dev.start, b - lag - dev.start)
    half = max(1, round(band_s * rate))
    res = run_dtw(r_dtw[ri], d_dtw[di], engine, half_width=half)
    rp, r_pos = landmarks(r_land[ri], r_raw[ri], rate)
    dp, d_pos = landmarks(d_land[di], d_raw[di], rate)
    t_ref_all = (a + r_pos) * step_ns                  # device times, float ns
    t_dev_all = (a - lag + d_pos) * step_ns
    i, k = path_pairs(rp, d_pos, res.path_i, res.path_j,
                      max(3.0, LANDMARK_SEPARATION_S * rate))
    if len(i) < 3:
        raise SyncError(f"only {len(i)} landmarks matched between the streams (features "
                        f"{dev.name}, {ref.name}); they share too few events")
    anchor = round(float(np.mean(t_dev_all[k])))
    x, y = (t_dev_all[k] - anchor) / NS, (t_ref_all[i] - t_dev_all[k]) / NS
    c, s, inl = ransac_line(x, y, tol)
    # re-pair every landmark along the fitted line (the path may have strayed between events)
    xd = (t_dev_all - anchor) / NS
    for _ in range(2):
        k, i = nearest_pairs(xd * NS + anchor + (c + s * xd) * NS, t_ref_all, tol * NS)
        if len(i) < 3:
            break
        x, y = (t_dev_all[k] - anchor) / NS, (t_ref_all[i] - t_dev_all[k]) / NS
        c, s, inl = ransac_line(x, y, tol)
    n_side = min(len(rp), len(dp))
    resid = y[inl] - c - s * x[inl]
    rms = float(np.sqrt(np.mean(resid ** 2))) if inl.any() else float("inf")
    conf = _confidence(int(inl.sum()), n_side, rms, tol)
    model = ClockModel(round(c * NS), s, anchor, "estimated", conf)
    keep = np.unique(np.linspace(0, len(res.path_i) - 1, MAX_PATH_POINTS).round().astype(int))
    evidence = SyncEvidence(
        tuple(int(v) for v in np.round(x * NS + anchor)),
        tuple(int(v) for v in np.round((x + y) * NS + anchor)),
        tuple(float(v) for v in (y - c - s * x) * 1e3), tuple(bool(v) for v in inl),
        tuple(int(round(v)) for v in (a - lag + res.path_j[keep]) * step_ns),
        tuple(int(round(v)) for v in (a + res.path_i[keep]) * step_ns))
    return SyncResult(stream_id, reference, model, conf, False, "", engine,
                      f"{dev.name}~{ref.name}", round(lag * step_ns),
                      res.cost / max(1, len(res.path_i)), len(x), int(inl.sum()),
                      rms * 1e3, float(np.max(np.abs(resid))) * 1e3 if inl.any() else np.inf,
                      model, evidence=evidence)


def finalize(result: SyncResult, ref_model: ClockModel, declared: ClockModel,
             min_confidence: float) -> SyncResult:
    """The model the clock stage uses: the estimate composed with the reference stream's own
    model when confident enough, else the declared model marked ``fallback``."""
    est = result.estimate
    if est is not None and result.confidence >= min_confidence:
        model = compose(ref_model, est)
        return dataclasses.replace(result, model=model, fell_back=False, reason="")
    reason = result.reason or (f"confidence {result.confidence:.2f} is below min_confidence "
                               f"{min_confidence:.2f}")
    return dataclasses.replace(result, fell_back=True, reason=reason,
                               model=fallback_model(declared, result.confidence))


def fallback_model(declared: ClockModel, confidence: float | None) -> ClockModel:
    return dataclasses.replace(declared, source="fallback", confidence=confidence)


def failed(stream_id: str, reference: str, declared: ClockModel, reason: str,
           engine: str = "banded") -> SyncResult:
    """A stream that could not be estimated: declared model, marked, with the reason."""
    return SyncResult(stream_id, reference, fallback_model(declared, 0.0), 0.0, True, reason,
                      engine)
