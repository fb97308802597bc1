"""The clock model: how a stream's device clock maps onto the session's reference clock.

    t_ref = t_dev + offset + drift * (t_dev - anchor)

i.e. t_ref = offset' + (1 + drift) * t_dev with the drift pivoting on ``anchor_ns`` so that
int64 nanosecond epoch times keep full precision. ``drift`` is a fraction (100 ppm = 1e-4).
Models come from the calibration file (``declared``), from DTW-sync (``estimated``), or are
the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa


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

    def as_dict(self) -> dict:
        return {"offset_ns": self.offset_ns, "drift_ppm": self.drift_ppm,
                "anchor_ns": self.anchor_ns, "source": self.source,
                "confidence": self.confidence}


# -- the clock stage ------------------------------------------------------------------------

TIME_COLUMNS = ("t_ns", "t_end_ns")   # columns rewritten onto the reference clock


def apply_clock(chunk, model: ClockModel):
    """The chunk with its times on the reference clock; device times kept as ``t_dev_ns``."""
    if chunk.clock == "reference":
        return chunk
    data = chunk.data
    dev = data.column("t_ns")
    for name in TIME_COLUMNS:
        if name in data.schema.names:
            i = data.schema.get_field_index(name)
            ref = model.to_ref(data.column(name).to_numpy(zero_copy_only=False))
            data = data.set_column(i, name, pa.array(ref, pa.int64()))
    data = data.append_column("t_dev_ns", dev)
    prev = None if chunk.prev_t_ns is None else int(model.to_ref([chunk.prev_t_ns])[0])
    return chunk.with_data(data, clock="reference", prev_t_ns=prev,
                           meta={**chunk.meta, "clock": model.as_dict()})


class ApplyClockFn(beam.DoFn):
    """Chunks onto the reference clock. Models by (session, stream): the ``estimated`` side
    input (DTW-sync) wins over the ``declared`` ones (calibration file); else identity."""

    def __init__(self, declared: dict):
        self.declared = declared

    def process(self, chunk, estimated=None):
        key = (chunk.session_id, chunk.stream_id)
        model = (estimated or {}).get(key) or self.declared.get(key) or ClockModel()
        beam.metrics.Metrics.counter("clock", f"{chunk.modality}.records").inc(chunk.num_records)
        yield apply_clock(chunk, model)
