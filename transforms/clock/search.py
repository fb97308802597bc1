"""Coarse search: candidate lines ``t_ref = rho * t_dev + c`` from correlated signals.

Times here are seconds relative to two origins (the stream's first feature time, and that plus
the declared offset on the reference), so a line is two plain floats: the rate ratio ``rho``
(1 + drift) and the intercept ``c`` (the offset from the declared one at the stream's origin).

For every rate ratio of a grid - the common frame-rate ratios (1001/1000, 25/23.976, 25/24,
...) and a continuous range of +-``max_drift`` whose step keeps the misalignment across the
overlap under the smoothing - the stream's signals are resampled by ``rho`` and correlated with
the reference's: a *normalised* cross-correlation over the overlapping part only (means and
energies of the overlap, from cumulative sums), over lags whose overlap is at least
``min_overlap_s`` and whose offset is within ``max_offset_s`` of the declared one. Each pair of
signals is weighted; the local maxima of the weighted mean are candidates. Two levels: heavily
smoothed signals over the whole grid, then the best candidates again on lightly smoothed
signals around their rate; ``coarse_candidates`` returns the best few distinct lines, which
the fine stage re-scores (a wrong lag with a high correlation is not the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy  # its submodules load on first use: not in a run without DTW-sync

# common clock-rate ratios: NTSC pull-down (1000/1001), PAL speed-up (25/24, 25/23.976), ...
FRAME_RATIOS = (1.0, 1001 / 1000, 25 / 23.976, 25 / 24, 24 / 23.976, 30 / 25, 50 / 48)
LEVELS = ((0.5, 10.0), (0.1, 50.0))     # (smoothing sigma s, sample rate Hz) per level
MAX_RATES = 600                         # rate ratios per level (the step widens beyond)


@dataclass(frozen=True)
class Track:
    """A signal on a regular grid: values[k] at t0 + k / rate (s, relative)."""
    values: np.ndarray
    t0: float
    rate: float

    @property
    def t1(self) -> float:
        return self.t0 + (len(self.values) - 1) / self.rate

    def at(self, t: np.ndarray) -> np.ndarray:
        """Linear interpolation at times ``t`` (0 outside)."""
        x = (np.asarray(t, np.float64) - self.t0) * self.rate
        return np.interp(x, np.arange(len(self.values)), self.values, left=0.0, right=0.0)

    def smoothed(self, sigma_s: float) -> Track:
        s = sigma_s * self.rate
        v = self.values
        if s >= 0.5:
            v = scipy.ndimage.gaussian_filter1d(v, s, mode="nearest")
        return Track(v, self.t0, self.rate)


@dataclass(frozen=True)
class Line:
    """``t_ref = rho * t_dev + c`` (relative seconds)."""
    rho: float
    c: float
    score: float = 0.0
    overlap_s: float = 0.0

    def ref(self, t_dev):
        return self.rho * np.asarray(t_dev, np.float64) + self.c

    def dev(self, t_ref):
        return (np.asarray(t_ref, np.float64) - self.c) / self.rho

    def offset(self, t_dev) -> float:
        """(t_ref - t_dev) at ``t_dev``."""
        return float((self.rho - 1.0) * t_dev + self.c)


# ---------------------------------------------------------------- normalised correlation


def ncc(r: np.ndarray, d: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Normalised cross-correlation of ``r[k]`` with ``d[k - L]`` over the overlap only, for
    every lag L: (lags, ncc, overlap count); ncc is -inf where the overlap is shorter than
    ``min_count`` samples or either side is flat there."""
    r = np.asarray(r, np.float64)
    d = np.asarray(d, np.float64)
    n, m = len(r), len(d)
    lags = scipy.signal.correlation_lags(n, m, mode="full")
    srd = scipy.signal.correlate(r, d, mode="full", method="fft" if n * m > 4096 else "direct")
    cr, cr2 = np.r_[0.0, np.cumsum(r)], np.r_[0.0, np.cumsum(r * r)]
    cd, cd2 = np.r_[0.0, np.cumsum(d)], np.r_[0.0, np.cumsum(d * d)]
    k0, k1 = np.maximum(0, lags), np.minimum(n, m + lags)
    j0, j1 = np.maximum(0, -lags), np.minimum(m, n - lags)
    cnt = (k1 - k0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sr, sd = cr[k1] - cr[k0], cd[j1] - cd[j0]
        vr = cr2[k1] - cr2[k0] - sr * sr / cnt
        vd = cd2[j1] - cd2[j0] - sd * sd / cnt
        out = (srd - sr * sd / cnt) / np.sqrt(vr * vd)
    scale_r = max(float(np.max(cr2[1:] - cr2[:-1])) if n else 0.0, 1e-300)
    scale_d = max(float(np.max(cd2[1:] - cd2[:-1])) if m else 0.0, 1e-300)
    bad = (cnt < max(2, min_count)) | ~(vr > 1e-9 * scale_r) | ~(vd > 1e-9 * scale_d)
    out = np.where(bad | ~np.isfinite(out), -np.inf, out)
    return lags, out, cnt


# ---------------------------------------------------------------- the rate grid


def rate_grid(max_drift: float, step: float) -> np.ndarray:
    """Rate ratios: a continuous grid of ``step`` over 1 +- max_drift, and the frame ratios
    (and their inverses) inside it."""
    n = int(np.ceil(max_drift / step))
    grid = 1.0 + np.linspace(-max_drift, max_drift, 2 * n + 1)
    special = [x for r in FRAME_RATIOS for x in (r, 1.0 / r) if abs(x - 1.0) <= max_drift]
    return np.unique(np.r_[grid, special])


def _rate_step(sigma_s: float, duration_s: float, max_drift: float) -> float:
    """Step keeping the end-to-end misalignment of a half step under ``sigma_s``."""
    step = 2.0 * sigma_s / max(duration_s, 1e-9)
    return max(step, max_drift / (MAX_RATES / 2))


# ---------------------------------------------------------------- the search


@dataclass(frozen=True)
class Channel:
    ref: Track
    dev: Track
    weight: float


def _surface(channels: list[Channel], rho: float, rate: float, c_lo: float, c_hi: float,
             min_overlap_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean NCC over the intercepts c in [c_lo, c_hi] (step 1 / rate) at ratio rho:
    (c, score, overlap s)."""
    nc = int(np.floor((c_hi - c_lo) * rate)) + 1
    cs = c_lo + np.arange(max(nc, 1)) / rate
    total = np.zeros(len(cs))
    wsum = np.zeros(len(cs))
    over = np.zeros(len(cs))
    for ch in channels:
        r, d = ch.ref, ch.dev
        rv = r.values
        nd = int(np.floor((d.t1 - d.t0) * rho * rate)) + 1
        if nd < 2 or len(rv) < 2:
            continue
        dv = d.at(d.t0 + np.arange(nd) / (rho * rate))
        lags, v, cnt = ncc(rv, dv, int(np.ceil(min_overlap_s * rate)))
        base = r.t0 - rho * d.t0                  # c of lag 0
        cl = base + lags / rate
        vi = np.interp(cs, cl, v, left=-np.inf, right=-np.inf)
        ok = np.isfinite(vi)
        total[ok] += ch.weight * vi[ok]
        wsum[ok] += ch.weight
        over = np.maximum(over, np.interp(cs, cl, cnt, left=0, right=0) / rate)
    wall = sum(ch.weight for ch in channels)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(wsum >= 0.5 * wall, total / wsum, -np.inf)
    return cs, score, over


def _peaks(cs, score, over, rho, k: int, sep: float) -> list[Line]:
    ok = np.isfinite(score)
    if not ok.any():
        return []
    s = np.where(ok, score, -np.inf)
    is_max = np.r_[True, s[1:] >= s[:-1]] & np.r_[s[:-1] >= s[1:], True] & ok
    idx = np.flatnonzero(is_max)
    idx = idx[np.argsort(-s[idx])]
    out: list[Line] = []
    for i in idx:
        if all(abs(cs[i] - q.c) > sep for q in out):
            # parabolic refinement of the intercept
            c = cs[i]
            if 0 < i < len(s) - 1 and np.isfinite(s[i - 1]) and np.isfinite(s[i + 1]):
                den = s[i - 1] - 2 * s[i] + s[i + 1]
                if den < 0:
                    c += 0.5 * (s[i - 1] - s[i + 1]) / den * (cs[1] - cs[0])
            out.append(Line(float(rho), float(c), float(s[i]), float(over[i])))
        if len(out) >= k:
            break
    return out


def _distinct(lines: list[Line], sep_s: float, span: tuple[float, float], k: int
              ) -> list[Line]:
    """Best-first lines that differ from every better one by more than ``sep_s`` somewhere
    over the stream's ``span``."""
    out: list[Line] = []
    a, b = span
    for q in sorted(lines, key=lambda x: -x.score):
        if all(max(abs(q.offset(a) - p.offset(a)), abs(q.offset(b) - p.offset(b))) > sep_s
               for p in out):
            out.append(q)
        if len(out) >= k:
            break
    return out


def coarse_candidates(channels: list[Channel], *, max_drift: float, max_offset_s: float,
                      min_overlap_s: float, k: int = 4) -> list[Line]:
    """The best ``k`` distinct candidate lines (see the module docstring). ``channels``' tracks
    are at their native rate; offsets are relative to the declared one (c = 0, rho = 1)."""
    if not channels:
        return []
    d0 = min(ch.dev.t0 for ch in channels)
    d1 = max(ch.dev.t1 for ch in channels)
    r_span = max(ch.ref.t1 for ch in channels) - min(ch.ref.t0 for ch in channels)
    duration = max(1e-3, min(d1 - d0, r_span))
    tm = (d0 + d1) / 2

    def c_range(rho):          # |offset at the middle| <= max_offset_s
        return -max_offset_s - (rho - 1) * tm, max_offset_s - (rho - 1) * tm

    (s1, f1), (s2, f2) = LEVELS
    lvl1 = [Channel(_resample(ch.ref.smoothed(s1), f1), ch.dev.smoothed(s1), ch.weight)
            for ch in channels]
    step1 = _rate_step(s1, duration, max_drift)
    found: list[Line] = []
    for rho in rate_grid(max_drift, step1):
        cs, score, over = _surface(lvl1, rho, f1, *c_range(rho), min_overlap_s)
        found += _peaks(cs, score, over, rho, 3, 4 * s1)
    first = _distinct(found, 2 * s1, (d0, d1), 2 * k)
    lvl2 = [Channel(_resample(ch.ref.smoothed(s2), f2), ch.dev.smoothed(s2), ch.weight)
            for ch in channels]
    step2 = _rate_step(s2, duration, max_drift)
    refined: list[Line] = []
    for q in first:
        n = max(1, int(np.ceil(step1 / step2)))
        for rho in q.rho + np.linspace(-step1, step1, 2 * n + 1):
            if abs(rho - 1) > max_drift:
                continue
            lo, hi = c_range(rho)
            cm = q.offset(tm) - (rho - 1) * tm       # same offset at the middle
            w = 3 * s1 + step1 * duration / 2
            cs, score, over = _surface(lvl2, rho, f2, max(lo, cm - w), min(hi, cm + w),
                                       min_overlap_s)
            refined += _peaks(cs, score, over, rho, 1, 4 * s2)
    return _distinct(refined or first, 2 * s2, (d0, d1), k)


def _resample(t: Track, rate: float) -> Track:
    n = int(np.floor((t.t1 - t.t0) * rate)) + 1
    return Track(t.at(t.t0 + np.arange(n) / rate), t.t0, rate)
