"""Timestamp plausibility: the one rule that decides whether a record's time can be believed.

A decoded time is a number a file or a device wrote; one absurd value (a CSV row in the year
2500, an index line of 9e18 ns, a subtitle cue at hour 2,000,000) must not become a loop bound
downstream. Before bucketing, every record's time (both ends of a text segment) passes

- an **absolute bound**: ``|t| <= max_abs_ns`` (default and ceiling ``MAX_ABS_TIME_NS`` =
  2**62 ns, about 146 years either side of 0: sums of a time, a clock offset and a margin stay
  inside int64), and
- a **relative bound**: ``|t - centre| <= max_span_ns`` (default 24 h), where the centre is
  the stream's median time in the session (``stream_centres``: the weighted median of its
  chunks' medians, so a few absurd rows cannot move it). Where no stream-wide centre is known
  (a streaming job sees one chunk at a time), the chunk's own median is the centre.

A record outside either bound is a dead letter ``validate/implausible_timestamp``. The rule is
configured per session in the manifest (``validation:``) and documented in the README.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mmalign.schemas.clock import MAX_ABS_TIME_NS

DEFAULT_MAX_SPAN_NS = 24 * 3600 * 1_000_000_000


@dataclass(frozen=True)
class TimestampRule:
    """The plausible range of a session's record times."""
    max_abs_ns: int = MAX_ABS_TIME_NS
    max_span_ns: int = DEFAULT_MAX_SPAN_NS

    def __post_init__(self):
        if not 0 < self.max_abs_ns <= MAX_ABS_TIME_NS:
            raise ValueError(f"max_abs_ns must be in (0, {MAX_ABS_TIME_NS}]")
        if self.max_span_ns <= 0:
            raise ValueError("max_span_ns must be positive")

    def describe(self) -> str:
        return (f"|t| <= {self.max_abs_ns} ns and within {self.max_span_ns / 3.6e12:g} h of "
                f"the stream's median time")


def absolute_ok(t: np.ndarray, rule: TimestampRule) -> np.ndarray:
    t = np.asarray(t, np.int64)
    return (t <= rule.max_abs_ns) & (t >= -rule.max_abs_ns)


def chunk_centre(t: np.ndarray, rule: TimestampRule) -> tuple[int, int] | None:
    """(median, count) of a chunk's absolutely plausible times, or None if it has none."""
    t = np.asarray(t, np.int64)
    t = t[absolute_ok(t, rule)]
    if t.size == 0:
        return None
    return int(np.partition(t, t.size // 2)[t.size // 2]), int(t.size)


def weighted_median(parts: Iterable[tuple[int, int] | None]) -> int | None:
    """The weighted median of (value, weight) pairs (the lower one on a tie); None if empty."""
    pairs = sorted(p for p in parts if p is not None and p[1] > 0)
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    seen = 0
    for value, w in pairs:
        seen += w
        if 2 * seen >= total:
            return value
    return pairs[-1][0]


def implausible(t: np.ndarray, centre: int | None, rule: TimestampRule) -> np.ndarray:
    """Mask of the times outside the rule; ``centre`` None: the times' own median."""
    t = np.asarray(t, np.int64)
    ok = absolute_ok(t, rule)
    if centre is None:
        c = chunk_centre(t, rule)
        centre = None if c is None else c[0]
    if centre is not None:
        # both |t| and |centre| <= 2**62 on the rows that count: the difference fits int64
        c = np.int64(min(max(centre, -rule.max_abs_ns), rule.max_abs_ns))
        d = np.abs(np.where(ok, t, c) - c)
        ok &= d <= rule.max_span_ns
    return ~ok
