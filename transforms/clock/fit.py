"""From two streams' sync features to a clock model: candidates, fine landmarks, a line.

1. coarse search (transforms/clock/search.py): the features chosen for the pair of
   modalities (transforms/clock/pairs.py) are correlated - normalised over the overlap only,
   with a minimum overlap inside the search - over lags within +-``max_offset_s`` of the
   declared clocks and over clock-rate ratios (the common frame-rate ratios and a continuous
   range of +-``max_drift``); the best few distinct lines are candidates;
2. fine stage per candidate (transforms/clock/fine.py): landmark pairs along the line -
   windows of continuous signals cross-correlated, peaks of event features paired along the
   DTW path (banded exact by default, or fastdtw) and then along the line, subtitle marks
   against voice-activity edges - and a robust weighted line through them, twice with a
   narrower search; audio against audio is then refined on the waveforms (sub-millisecond);
3. the candidate with the best fine score wins; its confidence in [0, 1] is a logistic
   function of how consistent, numerous, strong and unambiguous its landmarks are
   (``confidence``, calibrated on generated and real-like recordings: README);
4. a drift at the edge of the searched range is flagged (``at_edge``) and never used.

The fitted model maps the stream's device clock onto the *reference stream's device clock*;
``finalize`` composes it with the reference's own model, or falls back to the declared one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.sync import MAX_PATH_POINTS, SyncEvidence, SyncResult
from mmalign.transforms.clock.features import NS, Feature, condition
from mmalign.transforms.clock.fine import (  # noqa: F401 (landmark helpers re-exported)
    LANDMARK_REL_HEIGHT,
    LANDMARK_SEPARATION_S,
    FitError,
    LandmarkPairs,
    Marks,
    WindowChannel,
    dtw_path,
    event_pairs,
    landmarks,
    match_marks,
    nearest_pairs,
    path_pairs,
    refine,
    robust_fit,
    window_pairs,
)
from mmalign.transforms.clock.pairs import Pair, axis_channels, view
from mmalign.transforms.clock.search import Channel, Line, Track, coarse_candidates, ncc

MAX_DRIFT = 0.05            # default drift range searched: +-5 % (sync.max_drift_ppm)
MIN_OVERLAP_S = 5.0         # overlap the coarse search demands (less for short streams)
MIN_OVERLAP_FRACTION = 0.3  # ... and at least this share of the shorter stream
EDGE_FRACTION = 0.98        # |drift| beyond this share of the range searched is "at the edge"
CANDIDATES = 4              # coarse candidates re-scored by the fine stage
WINDOW_S, WINDOW_STEP_S = 4.0, 1.0   # windows of continuous signals
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)   # boundary positions in a pause tried first
WAVE_WINDOW_S = 0.5
MAX_WAVE_WINDOWS = 600


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
               lag_lo: int, lag_hi: int, min_overlap: int = 2) -> tuple[int, float]:
    """Grid lag L in [lag_lo, lag_hi] maximising the correlation of ref[k] with dev[k - L]
    (absolute grid indices), normalised over the overlap only and over overlaps of at least
    ``min_overlap`` samples; returns (L, normalised correlation)."""
    lags, c, _ = ncc(ref, dev, min_overlap)
    lags = lags + (ref_start - dev_start)
    ok = (lags >= lag_lo) & (lags <= lag_hi) & np.isfinite(c)
    if not ok.any():
        raise SyncError("the streams do not overlap at any offset within max_offset_s of the "
                        "declared clocks; raise sync.max_offset_s")
    k = np.flatnonzero(ok)[np.argmax(c[ok])]
    return int(lags[k]), float(c[k])


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


# ---------------------------------------------------------------- the estimate

# precision classes of landmark pairs (fine.LandmarkPairs.kind)
WINDOWS, EVENTS, MARKS, WAVE = 0, 1, 2, 3
WAVE_PAIR = "audio_waveform~audio_waveform"


@dataclass(frozen=True)
class _Events:
    ref_land: tuple
    dev_land: tuple
    ref_dtw: Track
    dev_dtw: Track
    src: int


@dataclass
class _Context:
    windows: list            # [(WindowChannel, src)]
    events: list             # [_Events]
    marks: tuple | None      # (dev Marks, ref Marks, src)
    waves: tuple | None      # (ref Track, dev Track)
    axes: tuple | None       # (ref axis tracks, dev axis tracks, src)
    rate: float
    dev_span: tuple[float, float]
    ref_span: tuple[float, float]
    engine: str
    band_s: float
    max_drift: float


@dataclass
class _Candidate:
    coarse: Line
    fit: object = None               # fine.Fit
    pairs: LandmarkPairs | None = None
    score: float = 0.0
    consistency: float = 0.0
    quality: float = 0.0
    error: str = ""
    path: tuple | None = None
    cost: float = float("nan")
    lam: float | None = None
    wave: bool = False
    chance: float = 0.0             # share of marks a random line would pair (marks only)
    spread: float = 1.0             # inlier spread / the classes' starting tolerance


def _abs_t0(f: Feature, origin_ns: int) -> float:
    """Relative seconds of ``f``'s first grid point."""
    step = NS / f.rate_hz
    if step == int(step):
        return (f.start * int(step) - origin_ns) / NS
    return (f.start * step - origin_ns) / NS


def _track(f: Feature, how: str, origin_ns: int) -> Track:
    return Track(view(f, how), _abs_t0(f, origin_ns), f.rate_hz)


def _marks(f: Feature, origin_ns: int) -> Marks:
    t0 = _abs_t0(f, origin_ns)
    if f.marks is None:
        return Marks(np.zeros(0), np.zeros(0))
    return Marks(t0 + np.asarray(f.marks, np.float64) / f.rate_hz,
                 np.asarray(f.mark_sign, np.float64))


def _overlap(line: Line, ctx: _Context) -> tuple[float, float]:
    return (max(ctx.ref_span[0], float(line.ref(ctx.dev_span[0]))),
            min(ctx.ref_span[1], float(line.ref(ctx.dev_span[1]))))


def _axis_windows(ctx: _Context, line: Line, span) -> list:
    """Per-axis window channels: the stream's axes mapped onto the reference's by the linear
    map fitted along the line (an unknown rotation, scales and signs between the devices)."""
    if ctx.axes is None:
        return []
    refs, devs, src = ctx.axes
    t = np.arange(span[0], span[1], 1.0 / ctx.rate)
    if len(t) < 20:
        return []
    R = np.column_stack([r.at(t) for r in refs])
    D = np.column_stack([d.at(line.dev(t)) for d in devs])
    A, *_ = np.linalg.lstsq(D, R, rcond=None)
    proj = np.column_stack([d.values for d in devs]) @ A
    d0 = devs[0]
    return [(WindowChannel(refs[i], Track(proj[:, i], d0.t0, d0.rate), 1.0 / len(refs)), src)
            for i in range(len(refs))]


def _fine(cand: Line, ctx: _Context) -> _Candidate:
    out = _Candidate(cand)
    line = cand
    rate = ctx.rate
    ev_tol = max(3.0 / rate, 0.04)
    search, w_tol, m_tol, m_pair = 0.4, 0.1, 0.08, 0.5
    lam = 0.5
    fit = None
    pairs = LandmarkPairs()
    for it in range(3):
        span = _overlap(line, ctx)
        if span[1] - span[0] < 1.0:
            out.error = "the streams hardly overlap on this candidate"
            return out
        pairs = LandmarkPairs()
        wch = ctx.windows + (_axis_windows(ctx, line, span) if it else [])
        by_src: dict = {}
        for ch, src in wch:
            by_src.setdefault(src, []).append(ch)
        for src, chs in by_src.items():
            wp = window_pairs(chs, line, window_s=WINDOW_S, step_s=WINDOW_STEP_S,
                              search_s=search, span=span, kind=WINDOWS)
            pairs = pairs.extend(wp.tagged(src))
        for ev in ctx.events:
            path = None
            if it == 0:
                pr, pd, cost = dtw_path(ev.ref_dtw, ev.dev_dtw, line, span, ctx.engine,
                                        ctx.band_s)
                path = (pr, pd)
                if out.path is None:
                    out.path, out.cost = path, cost
            tol0 = max(0.1, ev_tol) if it == 0 else ev_tol
            ep = event_pairs(ev.ref_land, ev.dev_land, line, tol_s=tol0, kind=EVENTS,
                             path=path)
            if path is not None:
                # the DTW path may wander inside its band where impacts are sparse (a short
                # clip): pairs along the coarse line instead, when a line explains more
                ep = _more_consistent(ep, event_pairs(ev.ref_land, ev.dev_land, line,
                                                      tol_s=tol0, kind=EVENTS),
                                      tol0, ctx.max_drift * 1.05)
            pairs = pairs.extend(ep.tagged(ev.src))
        fall = length = None
        if ctx.marks is not None:
            dm, rm, src = ctx.marks
            # where in its pause a touching boundary sits: the best of a grid first, then
            # the median of the inliers' positions
            lams = LAMBDAS if it == 0 else (lam,)
            tries = [match_marks(dm, rm, line, x, m_pair, m_tol, ctx.max_drift * 1.05,
                                 kind=MARKS) for x in lams]
            k = int(np.argmax([m.score for m in tries]))
            lam, mm = lams[k], tries[k]
            fall, length, out.chance = mm.fall, mm.length, mm.chance
            pairs = pairs.extend(mm.pairs.tagged(src))
        tol = {WINDOWS: w_tol, EVENTS: ev_tol, MARKS: m_tol}
        try:
            fit = robust_fit(pairs, tol, ctx.max_drift * 1.05)
        except FitError as e:
            out.error = str(e)
            return out
        line = fit.line
        if fall is not None:            # where in their pauses the boundaries sit
            n_other = len(pairs) - len(fall)
            b = np.isfinite(fall) & (length > 0) & fit.inliers[n_other:]
            if b.sum() >= 3:
                tr = line.ref(pairs.t_dev[n_other:][b])
                lam = float(np.clip(np.median((tr - fall[b]) / length[b]), 0.0, 1.0))
                out.lam = lam
        sig = fit.sigma      # narrower each time, never wider (spread is no licence)
        search = float(np.clip(6.0 * sig.get(WINDOWS, 0.02), 4.0 / rate, search))
        w_tol = float(np.clip(5.0 * sig.get(WINDOWS, 0.02), 0.015, w_tol))
        m_tol = float(np.clip(4.0 * sig.get(MARKS, 0.03), 0.04, m_tol))
        m_pair = float(np.clip(5.0 * sig.get(MARKS, 0.03), 0.1, m_pair))
    out.fit, out.pairs = fit, pairs
    if ctx.waves is not None:
        _wave_refine(out, ctx)
    _score(out)
    return out


def _more_consistent(a: LandmarkPairs, b: LandmarkPairs, tol: float,
                     max_drift: float) -> LandmarkPairs:
    """Of two pairings of the same landmarks, the one whose robust line has more inliers
    (``a`` on a tie)."""
    def inliers(p: LandmarkPairs) -> int:
        try:
            return int(robust_fit(p, tol, max_drift).inliers.sum())
        except FitError:
            return 0
    return b if inliers(b) > inliers(a) else a


def _wave_refine(out: _Candidate, ctx: _Context) -> None:
    """Audio against audio: windows of the waveforms cross-correlated along the line; used
    when most windows agree (else the feature-rate fit stands)."""
    ref, dev = ctx.waves
    line = out.fit.line
    span = _overlap(line, ctx)
    span = (max(span[0], ref.t0), min(span[1], ref.t1))
    length = span[1] - span[0]
    if length < 2 * WAVE_WINDOW_S:
        return
    step = max(WAVE_WINDOW_S, length / MAX_WAVE_WINDOWS)
    sd = min(out.fit.sigma.values()) if out.fit.sigma else 0.005
    search = min(0.02, max(0.002, 6.0 * sd))
    wp = window_pairs([WindowChannel(ref, dev)], line, window_s=WAVE_WINDOW_S, step_s=step,
                      search_s=search, span=span, kind=WAVE, cubic=True)
    wp = wp.tagged(-1)
    if len(wp) < 6:
        return
    try:
        f1 = robust_fit(wp, max(0.001, 2.0 * sd), ctx.max_drift * 1.05)
        f2 = robust_fit(wp, max(0.0003, 5.0 * f1.sigma.get(WAVE, 0.001)), ctx.max_drift * 1.05)
    except FitError:
        return
    inl = f2.inliers
    if inl.sum() >= max(6, 0.5 * wp.attempted) and np.median(wp.quality[inl]) >= 0.3:
        out.fit, out.pairs, out.wave = f2, wp, True


# the tolerance each precision class starts from: a fit's spread is judged against it
TOL0 = {WINDOWS: 0.1, EVENTS: 0.04, MARKS: 0.08, WAVE: 0.002}


def _score(c: _Candidate) -> None:
    p, fit = c.pairs, c.fit
    inl = fit.inliers
    n = int(inl.sum())
    raw = min(1.0, n / max(1, p.attempted))
    marks = float(np.mean(p.kind == MARKS)) if len(p) else 0.0
    chance = c.chance * marks            # pairs a random line would have made
    c.consistency = max(0.0, (raw - chance) / (1.0 - chance)) if chance < 1 else 0.0
    c.quality = float(np.mean(np.clip(p.quality[inl], 0, 1))) if n else 0.0
    c.score = c.consistency * c.quality * (1.0 - np.exp(-n / 6.0))
    kinds = p.kind[inl]
    c.spread = float(np.mean([fit.sigma.get(int(k), TOL0[int(k)]) / TOL0[int(k)]
                              for k in kinds])) if n else 1.0


def fit_stats(c: _Candidate, margin: float) -> dict:
    """What the confidence is a function of (see ``confidence``)."""
    return {"consistency": c.consistency, "quality": c.quality,
            "n_inliers": int(c.fit.inliers.sum()), "margin": margin, "spread": c.spread}


def confidence(stats: dict) -> float:
    """How much to trust a fit, in [0, 1]: a logistic function of its consistency (inlier
    landmark pairs / the windows and landmarks that could have paired, corrected for chance),
    quality (mean correlation of the inlier windows; 1 for events and marks), support (log of
    the number of inliers), margin (1 - the best *other* candidate line's fine score / this
    one's) and spread (the inliers' residual spread / the tolerance their class starts from).
    The coefficients are fitted by benchmarks/bench_sync_confidence.py on generated and
    real-like recordings, correct and wrong fits (README: the ROC)."""
    x = (1.0, stats["consistency"], stats["quality"], np.log1p(stats["n_inliers"]),
         stats["margin"], min(1.0, stats["spread"]))
    z = float(np.dot(CONF_COEF, x))
    return float(1.0 / (1.0 + np.exp(-z)))


# intercept, consistency, quality, log(1 + inliers), margin, spread: fitted by
# benchmarks/bench_sync_confidence.py on 45 fits (20 correct, 25 wrong; AUC 0.998, 5-fold
# held out 0.996; at 0.5: all correct fits accepted, 1 wrong of 25)
CONF_COEF = (-7.90, 3.89, 0.42, 1.28, 3.94, -4.10)


def _contexts(ref_set: dict, dev_set: dict, pairs: list[Pair], o_dev: int, o_ref: int,
              ref_wave: Feature | None, dev_wave: Feature | None, modalities, engine: str,
              band_s: float, max_drift: float) -> tuple[list[Channel], _Context]:
    channels, windows, events, marks, axes = [], [], [], None, None
    rate = None
    for src, p in enumerate(pairs):
        fr, fd = ref_set[p.ref], dev_set[p.dev]
        if fr.rate_hz != fd.rate_hz:
            raise SyncError(f"features have different rates ({fr.rate_hz}, {fd.rate_hz} Hz)")
        rate = fr.rate_hz
        tr, td = _track(fr, p.ref_view, o_ref), _track(fd, p.dev_view, o_dev)
        if p.weight > 0:
            channels.append(Channel(tr, td, p.weight))
        if p.use == "windows":
            windows.append((WindowChannel(_track(fr, p.ref_view, o_ref),
                                          _track(fd, p.dev_view, o_dev), 1.0), src))
        elif p.use == "events":
            _, rl, rr = condition(fr)
            _, dl, dr = condition(fd)
            events.append(_Events((rl, rr, _abs_t0(fr, o_ref), rate),
                                  (dl, dr, _abs_t0(fd, o_dev), rate),
                                  _track(fr, "raw", o_ref), _track(fd, "raw", o_dev), src))
        elif p.use == "marks":
            marks = (_marks(fd, o_dev), _marks(fr, o_ref), src)
    if modalities is not None:
        ra, da = axis_channels(modalities[1], ref_set), axis_channels(modalities[0], dev_set)
        if len(ra) >= 2 and len(da) >= 2:
            axes = ([_track(ref_set[n], "raw", o_ref) for n in ra],
                    [_track(dev_set[n], "raw", o_dev) for n in da], len(pairs))
    waves = None
    if ref_wave is not None and dev_wave is not None:
        waves = (Track(ref_wave.values.astype(np.float64), _abs_t0(ref_wave, o_ref),
                       ref_wave.rate_hz),
                 Track(dev_wave.values.astype(np.float64), _abs_t0(dev_wave, o_dev),
                       dev_wave.rate_hz))
    used = [(ref_set[p.ref], dev_set[p.dev]) for p in pairs]
    dev_span = (min(_abs_t0(d, o_dev) for _, d in used),
                max(_abs_t0(d, o_dev) + (len(d.values) - 1) / d.rate_hz for _, d in used))
    ref_span = (min(_abs_t0(r, o_ref) for r, _ in used),
                max(_abs_t0(r, o_ref) + (len(r.values) - 1) / r.rate_hz for r, _ in used))
    ctx = _Context(windows, events, marks, waves, axes, rate, dev_span, ref_span, engine,
                   band_s, max_drift)
    return channels, ctx


def estimate_signals(ref_set: dict, dev_set: dict, pairs: list[Pair], *,
                     engine: str = "banded", band_s: float = 1.0, max_offset_s: float = 10.0,
                     prior_offset_ns: int = 0, max_drift: float = MAX_DRIFT,
                     ref_wave: Feature | None = None, dev_wave: Feature | None = None,
                     modalities: tuple[str, str] | None = None, stream_id: str = "",
                     reference: str = "", stats: dict | None = None) -> SyncResult:
    """The stream's device clock -> the reference's device clock, from the features ``pairs``
    name in the two streams' ``signals`` sets (see the module docstring). Raises
    ``SyncError`` when the streams cannot be matched at all. ``stats``, when given, receives
    what the confidence was computed from (``fit_stats``)."""
    feats = [dev_set[p.dev] for p in pairs]
    o_dev = int(min(f.times_ns([0])[0] for f in feats))
    o_ref = o_dev + int(prior_offset_ns)
    channels, ctx = _contexts(ref_set, dev_set, pairs, o_dev, o_ref, ref_wave, dev_wave,
                              modalities, engine, band_s, max_drift)
    shorter = min(ctx.dev_span[1] - ctx.dev_span[0], ctx.ref_span[1] - ctx.ref_span[0])
    if shorter < 2.0:
        raise SyncError(f"a stream spans only {shorter:.1f} s; sync needs at least 2 s")
    min_overlap = min(max(MIN_OVERLAP_S, MIN_OVERLAP_FRACTION * shorter), 0.8 * shorter)
    cands = coarse_candidates(channels, max_drift=max_drift, max_offset_s=max_offset_s,
                              min_overlap_s=min_overlap, k=CANDIDATES)
    if not cands:
        raise SyncError(f"the streams do not overlap by {min_overlap:.1f} s at any offset "
                        "within max_offset_s of the declared clocks; raise sync.max_offset_s")
    done = [_fine(c, ctx) for c in cands]
    good = [c for c in done if c.fit is not None]
    if not good:
        raise SyncError(f"{done[0].error} (features {_pair_names(pairs)})")
    good.sort(key=lambda c: -c.score)
    best = good[0]
    span = ctx.dev_span
    # another candidate is a different fit when it parts from the best by more than the
    # tolerance of the best's landmarks (subtitle boundaries: their place in a pause)
    kinds = {int(k) for k in best.pairs.kind[best.fit.inliers]}
    apart = max([0.05] + [TOL0[k] for k in kinds])
    others = [c for c in good[1:] if max(abs(c.fit.line.offset(t) - best.fit.line.offset(t))
                                         for t in span) > apart]
    second = others[0].score if others else 0.0
    margin = float(np.clip(1.0 - second / best.score, 0.0, 1.0)) if best.score > 0 else 0.0
    return _result(best, margin, ctx, pairs, o_dev, o_ref, prior_offset_ns, stream_id,
                   reference, engine, stats)


def _pair_names(pairs: list[Pair]) -> str:
    return ", ".join(p.name for p in pairs)


def _result(best: _Candidate, margin: float, ctx: _Context, pairs: list[Pair], o_dev: int,
            o_ref: int, prior_ns: int, stream_id: str, reference: str,
            engine: str, stats: dict | None) -> SyncResult:
    fit, p = best.fit, best.pairs
    inl = fit.inliers
    n_inl = int(inl.sum())
    st = fit_stats(best, margin)
    if stats is not None:
        stats.update(st)
    conf = confidence(st)
    line = fit.line
    anchor_rel = float(np.mean(p.t_dev[inl])) if n_inl else float(np.mean(ctx.dev_span))
    anchor = o_dev + int(round(anchor_rel * NS))
    a_rel = (anchor - o_dev) / NS
    offset_ns = int(prior_ns) + int(round(((line.rho - 1.0) * a_rel + line.c) * NS))
    drift = line.rho - 1.0
    model = ClockModel(offset_ns, drift, anchor, "estimated", conf)
    names: dict[str, int] = {}
    for s in p.src[inl]:
        nm = WAVE_PAIR if s < 0 else (pairs[s].name if s < len(pairs) else "axes")
        names[nm] = names.get(nm, 0) + 1
    feat = "+".join(sorted(names, key=lambda k: -names[k])) or _pair_names(pairs)
    resid = fit.residual
    keep = np.unique(np.linspace(0, len(best.path[0]) - 1, MAX_PATH_POINTS).round().astype(int)
                     ) if best.path is not None and len(best.path[0]) else np.zeros(0, int)
    evidence = SyncEvidence(
        tuple(int(round(v * NS)) + o_dev for v in p.t_dev),
        tuple(int(round(v * NS)) + o_ref for v in p.t_ref),
        tuple(float(v) * 1e3 for v in resid), tuple(bool(v) for v in inl),
        tuple(int(round(v * NS)) + o_dev for v in (best.path[1][keep] if len(keep) else [])),
        tuple(int(round(v * NS)) + o_ref for v in (best.path[0][keep] if len(keep) else [])))
    mid = float(np.mean(ctx.dev_span))
    coarse_ns = int(prior_ns) + int(round(best.coarse.offset(mid) * NS))
    reason, warnings = "", ()
    if abs(drift) >= EDGE_FRACTION * ctx.max_drift:
        reason = (f"the drift estimate {drift * 1e6:+.0f} ppm is at the edge of the range "
                  f"searched (+-{ctx.max_drift * 1e6:.0f} ppm): the clocks may differ more, or "
                  "the match is wrong; raise sync.max_drift_ppm if they can")
        warnings = (reason,)
    return SyncResult(stream_id, reference, model, conf, False, reason, engine, feat, coarse_ns,
                      best.cost, len(p), n_inl, fit.rms * 1e3,
                      float(np.max(np.abs(resid[inl]))) * 1e3 if n_inl else float("inf"),
                      model, warnings=warnings, evidence=evidence)


def estimate_clock(ref: Feature, dev: Feature, *, engine: str = "banded", band_s: float = 1.0,
                   max_offset_s: float = 10.0, prior_offset_ns: int = 0,
                   max_drift: float = MAX_DRIFT, stream_id: str = "",
                   reference: str = "", stats: dict | None = None) -> SyncResult:
    """One feature of each stream (the ``events`` or ``activity`` family): its peaks or edges
    paired (``estimate_signals`` with one pair). Raises ``SyncError`` when the streams cannot
    be matched at all."""
    if ref.rate_hz != dev.rate_hz:
        raise SyncError(f"features have different rates ({ref.rate_hz}, {dev.rate_hz} Hz)")
    use = "windows" if "continuous" in (ref.kind, dev.kind) else "events"
    rn, dn = "ref:" + ref.name, "dev:" + dev.name
    pair = Pair(dn, rn, 1.0, use)
    r = estimate_signals({rn: ref}, {dn: dev}, [pair], engine=engine, band_s=band_s,
                         max_offset_s=max_offset_s, prior_offset_ns=prior_offset_ns,
                         max_drift=max_drift, stream_id=stream_id, reference=reference,
                         stats=stats)
    return dataclasses.replace(r, features=f"{dev.name}~{ref.name}")


def finalize(result: SyncResult, ref_model: ClockModel, declared: ClockModel,
             min_confidence: float) -> SyncResult:
    """The model the clock stage uses: the estimate composed with the reference stream's own
    model when confident enough and not flagged (a ``reason``: a drift at the edge of the
    range), else the declared model marked ``fallback``."""
    est = result.estimate
    if est is not None and result.confidence >= min_confidence and not result.reason:
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
