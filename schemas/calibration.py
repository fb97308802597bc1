"""The session calibration file: clock models per clock domain (and, later, camera geometry).

    clocks:
      mic:  {offset_ms: 120.0, drift_ppm: 50}    # t_ref = t_dev + offset + drift*(t_dev-anchor)
      imu:  {offset_ns: -250000000, drift_ppm: -80, anchor_ns: 0}

A domain that is not listed runs on the reference clock (identity model).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.manifest import ManifestError, _read_mapping, explain


class ClockEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    offset_ns: int | None = None
    offset_ms: float | None = None
    drift_ppm: float = Field(0.0, ge=-10000, le=10000)
    anchor_ns: int = 0

    @model_validator(mode="after")
    def _one_offset(self):
        if self.offset_ns is not None and self.offset_ms is not None:
            raise ValueError("give offset_ns or offset_ms, not both")
        return self

    def model(self) -> ClockModel:
        off = self.offset_ns if self.offset_ns is not None else round((self.offset_ms or 0) * 1e6)
        return ClockModel.declared(off, self.drift_ppm, self.anchor_ns)


class Calibration(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    clocks: dict[str, ClockEntry] = Field(default_factory=dict)

    def clock(self, domain: str) -> ClockModel:
        e = self.clocks.get(domain)
        return e.model() if e else ClockModel()


def load_calibration(path: str | Path | None) -> Calibration:
    if path is None:
        return Calibration()
    path = Path(path)
    data = _read_mapping(path, "calibration file")
    try:
        return Calibration.model_validate(data)
    except ValidationError as e:
        raise ManifestError(explain(path, e)) from None
