"""The clock model: how a stream's device clock maps onto the session's reference clock.

    t_ref = t_dev + offset + drift * (t_dev - anchor)

i.e. t_ref = offset' + (1 + drift) * t_dev with the drift pivoting on ``anchor_ns`` so that
int64 nanosecond epoch times keep full precision. ``drift`` is a fraction (100 ppm = 1e-4).
Models come from the calibration file (``declared``), from DTW-sync (``estimated``), or are
the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The largest |time| (device or reference, ns) the pipeline accepts: 2**62 ns is ~146 years
# either side of 0, so sums of a time, a clock offset and a margin stay inside int64.
MAX_ABS_TIME_NS = 2**62
# The largest |drift| any clock model may carry (10 %): the calibration file allows +-1 %, a
# DTW-sync estimate up to its ``sync.max_drift_ppm`` (at most this); the audio-window policy
# treats blocks as contiguous through any drift up to it.
MAX_DRIFT = 0.1


@dataclass(frozen=True)
class ClockModel:
    offset_ns: int = 0
    drift: float = 0.0
    anchor_ns: int = 0
    source: str = "identity"          # identity | declared | estimated | fallback
    confidence: float | None = None   # for estimated models, in [0, 1]

    @classmethod
    def declared(cls, offset_ns: int = 0, drift_ppm: float = 0.0, anchor_ns: int = 0):
        return cls(int(offset_ns), float(drift_ppm) * 1e-6, int(anchor_ns), "declared")

    @property
    def drift_ppm(self) -> float:
        return self.drift * 1e6

    @property
    def is_identity(self) -> bool:
        return self.offset_ns == 0 and self.drift == 0.0

    def to_ref(self, t_dev_ns) -> np.ndarray:
        t = np.asarray(t_dev_ns, dtype=np.int64)
        if self.drift == 0.0:
            return t + np.int64(self.offset_ns)
        skew = np.rint(self.drift * (t - np.int64(self.anchor_ns)).astype(np.float64))
        return t + np.int64(self.offset_ns) + skew.astype(np.int64)

    def to_dev(self, t_ref_ns) -> np.ndarray:
        t = np.asarray(t_ref_ns, dtype=np.int64)
        if self.drift == 0.0:
            return t - np.int64(self.offset_ns)
        # invert t_ref - anchor - offset = (1 + drift) (t_dev - anchor)
        rel = (t - np.int64(self.anchor_ns) - np.int64(self.offset_ns)).astype(np.float64)
        return np.int64(self.anchor_ns) + np.rint(rel / (1.0 + self.drift)).astype(np.int64)

    def to_dict(self) -> dict:
        """The model as a plain dict (drift in ppm): ``from_dict`` reads it back."""
        return {"offset_ns": self.offset_ns, "drift_ppm": self.drift_ppm,
                "anchor_ns": self.anchor_ns, "source": self.source,
                "confidence": self.confidence}


    @classmethod
    def from_dict(cls, d: dict) -> ClockModel:
        """The model of a ``to_dict`` dict; missing keys take the defaults (the identity)."""
        conf = d.get("confidence")
        return cls(int(d.get("offset_ns", 0)), _drift(float(d.get("drift_ppm", 0.0))),
                   int(d.get("anchor_ns", 0)), str(d.get("source", "identity")),
                   None if conf is None else float(conf))


def _drift(ppm: float) -> float:
    """The drift fraction whose ``drift * 1e6`` is ``ppm`` exactly when one exists (so a
    written model reads back to the same dict), else ``ppm * 1e-6``."""
    first = ppm * 1e-6
    for d in (first, ppm / 1e6, np.nextafter(first, -np.inf), np.nextafter(first, np.inf)):
        if float(d) * 1e6 == ppm:
            return float(d)
    return first
