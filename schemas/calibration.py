"""The session calibration file: clock models per clock domain (camera geometry:
schemas/camera_calibration.py).

    clocks:
      mic:  {offset_ms: 120.0, drift_ppm: 50}    # t_ref = t_dev + offset + drift*(t_dev-anchor)
      imu:  {offset_ns: -250000000, drift_ppm: -80, anchor_ns: 0}

A domain that is not listed runs on the reference clock (identity model). Offsets and anchors
are bounded by ``MAX_ABS_TIME_NS`` (schemas/clock.py), drifts by +-10000 ppm; NaN and inf are
errors, so a model never overflows int64 later in the clock stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmalign.schemas.clock import MAX_ABS_TIME_NS, ClockModel
from mmalign.schemas.fs import as_path
from mmalign.schemas.manifest import ManifestError, TimeNs, _read_mapping, explain

MAX_DRIFT_PPM = 10_000          # 1 %: a clock further off than that is not a clock


class ClockEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    offset_ns: TimeNs | None = None
    offset_ms: float | None = Field(None, ge=-MAX_ABS_TIME_NS / 1e6, le=MAX_ABS_TIME_NS / 1e6)
    drift_ppm: float = Field(0.0, ge=-MAX_DRIFT_PPM, le=MAX_DRIFT_PPM)
    anchor_ns: TimeNs = 0

    @model_validator(mode="after")
    def _one_offset(self):
        if self.offset_ns is not None and self.offset_ms is not None:
            raise ValueError("give offset_ns or offset_ms, not both")
        return self

    def model(self) -> ClockModel:
        off = self.offset_ns if self.offset_ns is not None else round((self.offset_ms or 0) * 1e6)
        return ClockModel.declared(off, self.drift_ppm, self.anchor_ns)


class Calibration(BaseModel):
    """The calibration file: ``clocks:`` here; ``reference_frame``, ``cameras:`` and
    ``sensors:`` are validated by schemas/camera_calibration.py. Other keys are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    clocks: dict[str, ClockEntry] = Field(default_factory=dict)
    reference_frame: Any = None
    cameras: Any = None
    sensors: Any = None

    def clock(self, domain: str) -> ClockModel:
        e = self.clocks.get(domain)
        return e.model() if e else ClockModel()


def load_calibration(path: str | Path | None) -> Calibration:
    """The clocks of a calibration file (an empty Calibration for None); ManifestError with
    one sentence naming the file and the field when it cannot be used."""
    if path is None:
        return Calibration()
    path = as_path(path)             # a local file or an object-store URI
    data = _read_mapping(path, "calibration file")
    try:
        return Calibration.model_validate(data)
    except ValidationError as e:
        raise ManifestError(explain(path, e, data)) from None
