"""The align-check timeline picture: one lane per stream on the reference clock.

Each lane shows where the stream has samples (bar), its gaps (red spans), the ticks it could not
be aligned to (orange marks under the bar), its dead letters (black crosses) and, on the right,
its clock: declared vs estimated offset and the DTW confidence. One panel per session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    t0 = min(int(t.min()) for t in all_t) if all_t else 0

    def s(v):
        return (np.asarray(v, np.float64) - t0) / 1e9

    for ax, session in zip(axes[:, 0], sessions):
        mine = [lane for lane in lanes if lane.session == session]
        for y, lane in enumerate(reversed(mine)):
            bars = [(s(a), s(b) - s(a)) for a, b in _spans(lane.times_ns, lane.gaps)]
            ax.broken_barh(bars, (y - 0.3, 0.6), facecolors="#9ecae1", edgecolors="none")
            if 0 < lane.times_ns.size <= MAX_TICK_MARKS:
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
                ax.annotate(lane.clock_note, xy=(1.005, y), xycoords=("axes fraction", "data"),
                            va="center", fontsize=8,
                            color="#de2d26" if lane.failed else "#333333")
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels([lane.stream for lane in reversed(mine)])
        for tick, lane in zip(ax.get_yticklabels(), reversed(mine)):
            if lane.failed:
                tick.set_color("#de2d26")
        ax.set_ylim(-0.8, max(len(mine), 1) - 0.2)
        ax.set_xlabel("reference time, s from the first sample")
        ax.set_title(f"session {session}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    handles = [matplotlib.patches.Patch(color="#9ecae1", label="samples"),
               matplotlib.patches.Patch(color="#de2d26", label="gap"),
               matplotlib.lines.Line2D([], [], color="#fd8d3c", marker="|", ls="",
                                       label="tick not aligned"),
               matplotlib.lines.Line2D([], [], color="black", marker="x", ls="",
                                       label="dead letter")]
    fig.legend(handles=handles, loc="upper right", ncol=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.72, top=0.9, bottom=0.08, hspace=0.5)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path
