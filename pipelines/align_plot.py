"""The align-check pictures: the timeline (``--plot``) and the sync evidence (``--plot-sync``).

Timeline: one lane per stream on the reference clock, one panel per session. A lane's bar is
where the stream has samples (recording: its samples' extent cut at its gaps; text: the cues'
[start, end] spans, so time no cue covers is simply not covered, never a gap), its ticks mark
its own samples' times in both modes (output folders: the distinct samples the aligned rows
used), red spans are gaps (samples missing where the stream should have them), orange marks
under the bar are ticks it could not be aligned to, black crosses its dead letters (placed by
event time, else by their position in the file: pipelines/placement.py) and, on the right, its
clock: declared vs estimated offset and the DTW confidence.

Sync evidence: one PNG per synced stream (``sync_figure``), see pipelines/sync_evidence.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_TICK_MARKS = 1500        # above this many samples a lane shows only its coverage bar


@dataclass
class Lane:
    session: str
    stream: str
    modality: str
    times_ns: np.ndarray                                       # samples, reference clock
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (start, end) ns
    missing_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dead_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clock_note: str = ""
    failed: bool = False                                       # a check on this stream failed
    spans: list[tuple[int, int]] | None = None    # covered spans (default: extent cut at gaps)
    marks: bool = True                            # a mark per sample (audio: the bar only)


def _spans(t: np.ndarray, gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Covered spans: the stream's extent cut at its gaps."""
    if t.size == 0:
        return []
    spans, lo = [], int(t.min())
    for a, b in sorted(gaps):
        if a > lo:
            spans.append((lo, a))
        lo = max(lo, b)
    if int(t.max()) > lo:
        spans.append((lo, int(t.max())))
    return spans


def plot_timeline(lanes: list[Lane], path: str, size_px: tuple[int, int] = (1400, 800),
                  title: str = "") -> str:
    """Write the timeline PNG of exactly ``size_px`` pixels; returns the path."""
    import matplotlib  # lazy: matplotlib only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = list(dict.fromkeys(lane.session for lane in lanes)) or [""]
    dpi = 100
    fig, axes = plt.subplots(len(sessions), 1, figsize=(size_px[0] / dpi, size_px[1] / dpi),
                             dpi=dpi, squeeze=False)
    all_t = [lane.times_ns for lane in lanes if lane.times_ns.size]
    all_t += [np.asarray([a for a, _ in lane.spans], np.int64) for lane in lanes if lane.spans]
    t0 = min(int(t.min()) for t in all_t) if all_t else 0

    def s(v):
        return (np.asarray(v, np.float64) - t0) / 1e9

    for ax, session in zip(axes[:, 0], sessions):
        mine = [lane for lane in lanes if lane.session == session]
        for y, lane in enumerate(reversed(mine)):
            spans = lane.spans if lane.spans is not None else _spans(lane.times_ns, lane.gaps)
            bars = [(s(a), s(b) - s(a)) for a, b in spans]
            ax.broken_barh(bars, (y - 0.3, 0.6), facecolors="#9ecae1", edgecolors="none")
            if lane.marks and 0 < lane.times_ns.size <= MAX_TICK_MARKS:
                ax.vlines(s(lane.times_ns), y - 0.3, y + 0.3, colors="#3182bd", linewidth=0.4)
            if lane.gaps:
                ax.broken_barh([(s(a), s(b) - s(a)) for a, b in lane.gaps], (y - 0.3, 0.6),
                               facecolors="#de2d26", edgecolors="none")
            if lane.missing_ns.size:
                ax.plot(s(lane.missing_ns), np.full(lane.missing_ns.size, y - 0.4), "|",
                        color="#fd8d3c", markersize=5)
            if lane.dead_ns.size:
                ax.plot(s(lane.dead_ns), np.full(lane.dead_ns.size, y + 0.4), "x",
                        color="black", markersize=6)
            if lane.clock_note:
                ax.annotate(_short(lane.clock_note, 60), xy=(1.005, y),
                            xycoords=("axes fraction", "data"),
                            va="center", fontsize=8,
                            color="#de2d26" if lane.failed else "#333333")
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels([lane.stream for lane in reversed(mine)])
        for tick, lane in zip(ax.get_yticklabels(), reversed(mine)):
            if lane.failed:
                tick.set_color("#de2d26")
        ax.set_ylim(-0.8, max(len(mine), 1) - 0.2)
        ax.set_xlabel("reference time, s from the first sample")
        ax.set_title(_short(f"session {session}", 90), fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    handles = [matplotlib.patches.Patch(color="#9ecae1", label="samples (coverage, | each)"),
               matplotlib.patches.Patch(color="#de2d26", label="gap"),
               matplotlib.lines.Line2D([], [], color="#fd8d3c", marker="|", ls="",
                                       label="tick not aligned"),
               matplotlib.lines.Line2D([], [], color="black", marker="x", ls="",
                                       label="dead letter")]
    fig.legend(handles=handles, loc="upper right", ncol=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(_short(title, 100), x=0.01, ha="left", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.72, top=0.9, bottom=0.08, hspace=0.5)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- sync evidence (--plot-sync)

SYNC_SIZE_PX = (1400, 1000)
SYNC_WINDOW_S = 8.0          # the feature panels show this much around the middle landmark


def _short(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (one line: titles never wrap)."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    keep = width - 1
    return text[:keep - keep // 2] + "…" + text[len(text) - keep // 2:]


def _window(pic, window_s: float) -> tuple[float, float]:
    """(lo, hi) reference-device ns of the feature panels: around the middle inlier landmark,
    inside the reference curve."""
    e = pic.evidence
    refs = np.asarray(e.pair_ref_ns, np.float64)
    inl = np.asarray(e.inlier, bool)
    if pic.reference_curve is not None:
        t = pic.reference_curve.t_ns
        lo_all, hi_all = float(t[0]), float(t[-1])
    elif refs.size:
        lo_all, hi_all = float(refs.min()), float(refs.max())
    else:
        return 0.0, window_s * 1e9
    centre = float(np.median(refs[inl])) if inl.any() else (lo_all + hi_all) / 2
    half = window_s * 1e9 / 2
    lo = max(lo_all, centre - half)
    hi = min(hi_all, lo + 2 * half)
    return max(lo_all, hi - 2 * half), hi


def sync_figure(pic, size_px: tuple[int, int] = SYNC_SIZE_PX, window_s: float = SYNC_WINDOW_S):
    """The matplotlib Figure of one ``SyncPicture`` (pipelines/sync_evidence.py): the
    reference and stream feature curves before and after the fitted clock, the landmark
    offsets with the fitted line and the DTW path, and the residuals after the fit. The
    residual points carry ``gid="residuals"`` (inliers) / ``"residual_outliers"``."""
    import matplotlib  # lazy: matplotlib only for --plot / --plot-sync (the [plot] extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = pic.result
    dpi = 100
    fig, axes = plt.subplots(4, 1, figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi,
                             gridspec_kw={"height_ratios": [1, 1, 1.3, 1.1]})
    state = f"FELL BACK ({r.reason})" if r.fell_back else "estimated"
    fit = pic.fit
    line = (f"offset {fit.offset_ns / 1e6:+.1f} ms at {fit.anchor_ns / 1e9:.2f} s, drift "
            f"{fit.drift_ppm:+.1f} ppm" if fit is not None else "no fit")
    title = (f"{pic.session}/{pic.stream} vs {pic.reference} ({r.features or 'features'}): "
             f"{line}, confidence {r.confidence:.2f}, {state}")
    fig.suptitle(_short(title, 150), x=0.01, ha="left", fontsize=10)
    lo, hi = _window(pic, window_s)
    t0 = lo

    def s(v):
        return (np.asarray(v, np.float64) - t0) / 1e9

    def curve(ax, times, values, **kw):
        t = np.asarray(times, np.float64)
        keep = (t >= lo) & (t <= hi)
        ax.plot(s(t[keep]), np.asarray(values)[keep], lw=0.9, **kw)

    ref_name = pic.reference_curve.name if pic.reference_curve else "reference"
    dev_name = pic.stream_curve.name if pic.stream_curve else "stream"
    for ax, which in zip(axes[:2], ("before", "after")):
        if pic.reference_curve is not None:
            curve(ax, pic.reference_curve.t_ns, pic.reference_curve.values, color="#3182bd",
                  label=f"{pic.reference} ({ref_name})")
        got = pic.before() if which == "before" else pic.after()
        if got is not None:
            curve(ax, got[0], got[1], color="#e6550d", alpha=0.8,
                  label=f"{pic.stream} ({dev_name})")
        label = ("before the fit: the stream's own device clock" if which == "before" else
                 "after the fit: the stream mapped onto the reference's device clock")
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_xlim(0, (hi - lo) / 1e9)
        ax.set_ylabel("feature")
        if pic.reference_curve is None and got is None:
            ax.text(0.5, 0.5, _short(f"no feature curves: {pic.note}", 120),
                    transform=ax.transAxes, ha="center", va="center", fontsize=9)
        else:
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    axes[1].set_xlabel(f"reference device time, s from {t0 / 1e9:.2f} s")

    e = pic.evidence
    dev = np.asarray(e.pair_dev_ns, np.float64)
    off = pic.pair_offsets_ms()
    res = np.asarray(e.residual_ms, np.float64)
    inl = np.asarray(e.inlier, bool)
    ax = axes[2]
    if len(e.path_dev_ns):
        ax.plot(np.asarray(e.path_dev_ns, np.float64) / 1e9, pic.path_offsets_ms(),
                color="#bdbdbd", lw=0.8, label="DTW path", gid="dtw_path")
    if dev.size:
        ax.plot(dev[inl] / 1e9, off[inl], "o", ms=3.5, color="#3182bd",
                label=f"landmark pairs, inliers ({int(inl.sum())})", gid="pair_offsets")
        if (~inl).any():
            ax.plot(dev[~inl] / 1e9, off[~inl], "x", ms=4, color="#de2d26",
                    label=f"outliers ({int((~inl).sum())})")
        grid = np.linspace(dev.min(), dev.max(), 50)
        ax.plot(grid / 1e9, pic.line_offset_ms(grid), color="black", lw=1.2,
                label=f"fitted line: {line}", gid="fitted_line")
    else:
        ax.text(0.5, 0.5, "no landmark pairs: " + _short(r.reason or "no fit", 110),
                transform=ax.transAxes, ha="center", va="center", fontsize=9)
    if dev.size:
        span = max(100.0, 4 * float(np.abs(res).max()) if res.size else 0.0)
        mid = pic.line_offset_ms(dev)
        ax.set_ylim(float(np.nanmin(mid)) - span, float(np.nanmax(mid)) + span)
    ax.set_title("landmark pairs: reference - stream device time (the DTW path clipped to "
                 "the view)", fontsize=9, loc="left")
    ax.set_ylabel("offset, ms")
    ax.grid(alpha=0.3)
    if dev.size or len(e.path_dev_ns):
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax = axes[3]
    if dev.size:
        ax.axhline(0, color="black", lw=0.8)
        ax.plot(dev[inl] / 1e9, res[inl], "o", ms=3.5, color="#3182bd", gid="residuals",
                label=f"inliers: rms {r.residual_rms_ms:.2f} ms, max {r.residual_max_ms:.2f} ms")
        if (~inl).any():
            ax.plot(dev[~inl] / 1e9, res[~inl], "x", ms=4, color="#de2d26",
                    gid="residual_outliers", label="outliers")
            span = np.abs(res[inl]).max() if inl.any() else 1.0
            ax.set_ylim(-3 * span - 1, 3 * span + 1)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_title("residuals after the fit (sync.json)", fontsize=9, loc="left")
    ax.set_ylabel("residual, ms")
    ax.set_xlabel(f"{pic.stream} device time, s")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.93, bottom=0.05, hspace=0.45)
    return fig


def sync_png_name(session: str, stream: str) -> str:
    return f"sync-{session}-{stream}.png"


def plot_sync(pictures, folder: str, size_px: tuple[int, int] = SYNC_SIZE_PX,
              window_s: float = SYNC_WINDOW_S) -> list[str]:
    """One PNG per ``SyncPicture`` in ``folder`` (created); returns the paths."""
    import matplotlib.pyplot as plt  # lazy: see sync_figure

    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for pic in pictures:
        fig = sync_figure(pic, size_px, window_s)
        path = str(Path(folder) / sync_png_name(pic.session, pic.stream))
        fig.savefig(path, dpi=100, format="png", pil_kwargs={"optimize": True})
        plt.close(fig)
        paths.append(path)
    return paths
