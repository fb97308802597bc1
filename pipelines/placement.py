"""Where things sit on the reference clock, read from aligned rows: a stream's own samples, the
spans it covers, and dead letters (which may carry no event time: decode-stage letters of a
row, cue or frame that did not parse).

Used by align-check's timeline (output folders) and ``mmalign view``; plain numpy/Arrow.

A letter is placed by, in order: its ``event_time_ns`` (device clock) through the stream's
clock model; its ``position`` (``row=N``, ``frame=N``, ``cue=N``, ``sample=N``, ...)
interpolated between the positions the aligned rows name with their reference times (the same
file when the rows say which); a whole-file letter (``file``) or one with no usable position at
the start of the stream's samples (else of the session's ticks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mmalign.schemas.aligned import (
    CUES,
    DT_NS,
    POS,
    POS_RIGHT,
    SAMPLE_END,
    SAMPLE_RATE,
    SAMPLE_START,
    SRC,
    STATUS,
    T_NS,
    TICK_NS,
    VALUE_STATUSES,
    column,
)
from mmalign.schemas.clock import ClockModel


@dataclass
class StreamTimes:
    """A stream's samples as the aligned rows name them: (position, reference time, file)."""
    pos: np.ndarray          # int64 source positions (frame, row, cue, first sample)
    t_ns: np.ndarray         # int64 reference times of those samples
    src: np.ndarray          # object: the file of each (None when the rows do not say)

    def sorted_unique(self) -> StreamTimes:
        if not self.pos.size:
            return self
        keys = np.array([f"{s}\0{p}" for s, p in zip(self.src, self.pos)], object)
        _, first = np.unique(keys, return_index=True)
        order = first[np.argsort(self.t_ns[first], kind="stable")]
        return StreamTimes(self.pos[order], self.t_ns[order], self.src[order])


def _col(t: pa.Table, name: str):
    return t.column(name).to_numpy(zero_copy_only=False) if name in t.column_names else None


def _ok(t: pa.Table, stream: str) -> np.ndarray:
    st = t.column(column(stream, STATUS)).to_pylist()
    return np.isin(np.asarray(st, object), VALUE_STATUSES)


def stream_times(rows: pa.Table, stream: str) -> StreamTimes:
    """The distinct samples the rows of ``stream`` used, with their reference times:
    nearest/one_to_one ``__pos`` at ``__t_ns``; interpolate the nearer bracketing row
    (``__pos`` or ``__pos_right`` by the sign of ``__dt_ns``) at tick + dt; audio windows'
    first sample at the window's start; text cues at the ticks that show them."""
    empty = StreamTimes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object))
    if column(stream, STATUS) not in rows.column_names or rows.num_rows == 0:
        return empty
    ok = _ok(rows, stream)
    ticks = rows.column(TICK_NS).to_numpy()
    src = _col(rows, column(stream, SRC))
    src = np.asarray(src if src is not None else [None] * rows.num_rows, object)
    pos, t_ns = _col(rows, column(stream, POS)), _col(rows, column(stream, T_NS))
    dt, right = _col(rows, column(stream, DT_NS)), _col(rows, column(stream, POS_RIGHT))
    start, end = _col(rows, column(stream, SAMPLE_START)), _col(rows, column(stream, SAMPLE_END))
    cues = _col(rows, column(stream, CUES))
    if pos is not None and t_ns is not None:
        p, t = pos[ok], t_ns[ok]
    elif pos is not None and dt is not None:
        d = dt[ok].astype(np.int64)
        p = np.where(d <= 0, pos[ok], right[ok] if right is not None else pos[ok])
        t = ticks[ok] + d
    elif start is not None and end is not None:
        s, e = start[ok].astype(np.float64), end[ok].astype(np.float64)
        rate = _col(rows, column(stream, SAMPLE_RATE))
        sr = rate[ok].astype(np.float64) if rate is not None else np.full(s.size, np.nan)
        p = start[ok]
        t = ticks[ok] - np.where(sr > 0, (e - s) / 2 / sr * 1e9, 0.0)
    elif cues is not None:
        ps, ts, ss = [], [], []
        for k in np.flatnonzero(ok):
            for c in cues[k] if cues[k] is not None else ():
                ps.append(int(c))
                ts.append(int(ticks[k]))
                ss.append(src[k])
        return StreamTimes(np.asarray(ps, np.int64), np.asarray(ts, np.int64),
                           np.asarray(ss, object))
    else:
        return empty
    keep = ~(np.isnan(p.astype(np.float64)) | np.isnan(t.astype(np.float64)))
    return StreamTimes(p[keep].astype(np.int64), np.round(t[keep]).astype(np.int64),
                       src[ok][keep])


def covered_spans(rows: pa.Table, stream: str, pad_ns: int | None = None
                  ) -> list[tuple[int, int]]:
    """Runs of consecutive ticks where the stream has a value, each widened by half a tick
    interval on both sides (``pad_ns``; default: half the median tick interval), so a value
    seen at a single tick still shows."""
    if column(stream, STATUS) not in rows.column_names or rows.num_rows == 0:
        return []
    ticks = rows.column(TICK_NS).to_numpy()
    ok = _ok(rows, stream)
    if pad_ns is None:
        pad_ns = int(np.median(np.diff(ticks)) // 2) if ticks.size > 1 else 0
    spans, k = [], 0
    while k < ticks.size:
        if not ok[k]:
            k += 1
            continue
        j = k
        while j + 1 < ticks.size and ok[j + 1]:
            j += 1
        spans.append((int(ticks[k]) - pad_ns, int(ticks[j]) + pad_ns))
        k = j + 1
    return spans


def position_number(position: str | None) -> int | None:
    """N of ``row=N`` / ``frame=N`` / ``cue=N`` / ...; None for ``file`` or nothing."""
    if not position or "=" not in position:
        return None
    value = position.partition("=")[2]
    return int(value) if value.lstrip("-").isdigit() else None


def place_letter(letter: dict, times: StreamTimes, model: ClockModel,
                 fallback_ns: int) -> int:
    """Reference time of one dead letter (a ``read_dead_letters`` row as a dict)."""
    ev = letter.get("event_time_ns")
    if ev is not None:
        return int(model.to_ref([int(ev)])[0])
    n = position_number(letter.get("position"))
    if n is not None and times.pos.size:
        uri = letter.get("source_uri")
        same = times.src == uri
        pick = same if same.sum() >= 1 else np.ones(times.pos.size, bool)
        p, t = times.pos[pick].astype(np.float64), times.t_ns[pick].astype(np.float64)
        order = np.argsort(p, kind="stable")
        p, t = p[order], t[order]
        if p.size == 1 or p[-1] == p[0]:
            return int(t[0])
        # inside: linear between the neighbouring positions; outside: the nearest end's rate
        if n < p[0] or n > p[-1]:
            rate = (t[-1] - t[0]) / (p[-1] - p[0])
            end = 0 if n < p[0] else -1
            return int(round(t[end] + (n - p[end]) * rate))
        return int(round(np.interp(n, p, t)))
    return int(times.t_ns.min()) if times.t_ns.size else int(fallback_ns)


def place_letters(letters: list[dict], times: StreamTimes, model: ClockModel,
                  fallback_ns: int) -> np.ndarray:
    return np.asarray([place_letter(d, times, model, fallback_ns) for d in letters], np.int64)
