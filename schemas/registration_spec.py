"""The manifest's optional ``registration:`` section: which cameras to register onto which.

    registration:
      reference: cam0            # video stream whose pixels are the common frame
      cameras: [cam1]            # video streams registered onto it (homography cam -> reference)
      mode: session              # session: one transform per session (best of the first
                                 #   session_ticks usable ticks); tick: every tick, keeping the
                                 #   last good transform
      every_n_ticks: 1           # tick mode: register ticks with tick_pos % n == 0, reuse between
      session_ticks: 5           # ticks tried for the session transform
      detector: orb              # ... and any RegistrationConfig field (transforms/registration)
      project:                   # optional: sensor position channels -> camera pixels
        - {sensor: target, channels: [x, y, z], cameras: [cam0, cam1]}

Stream ids are checked against the manifest's streams by ``check_streams``; the projection
needs the calibration file's ``cameras:``/``sensors:`` sections (schemas/camera_calibration.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmalign.schemas.names import Name as ID  # stream ids (the manifest's pattern)
from mmalign.transforms.register.registration import RegistrationConfig

_OWN_FIELDS = ("reference", "cameras", "every_n_ticks", "session_ticks", "project")


class ProjectionSpec(BaseModel):
    """Project a sensor stream's x, y, z channels (sensor frame, metres) into cameras."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    sensor: ID = Field(description="sensor stream id; also its id in the calibration's sensors")
    channels: list[str] | None = Field(None, min_length=3, max_length=3,
                                       description="x, y, z channels; default: the calibration's "
                                                   "position_channels of the sensor")
    cameras: list[ID] | None = Field(None, min_length=1, description="default: every camera "
                                                                     "of the calibration")


class RegistrationSpec(RegistrationConfig):
    """Registration of a session's cameras onto a reference camera (flat: the kernel's
    RegistrationConfig fields sit next to the stream choices). Unknown keys, NaN and inf are
    errors."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    reference: ID
    cameras: list[ID] = Field(min_length=1)
    mode: Literal["tick", "session"] = "session"
    every_n_ticks: int = Field(1, ge=1, le=100000, description="tick mode: register 1 tick in n")
    session_ticks: int = Field(5, ge=1, le=1000, description="ticks tried for the session H")
    project: list[ProjectionSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self):
        if self.reference in self.cameras:
            raise ValueError(f"cameras {self.cameras} include the reference {self.reference!r}; "
                             f"list only the cameras to register onto it")
        dup = sorted({c for c in self.cameras if self.cameras.count(c) > 1})
        if dup:
            raise ValueError(f"cameras {dup} repeat; list each camera once")
        return self

    def kernel_config(self) -> RegistrationConfig:
        """The RegistrationConfig the kernels take (mode included)."""
        return RegistrationConfig(**self.model_dump(exclude=set(_OWN_FIELDS)))

    def check_streams(self, modalities: dict[str, str]) -> None:
        """ValueError naming the field when a stream id is unknown or of the wrong modality;
        ``modalities`` is {stream id: modality} of the manifest."""
        named = [("registration.reference", self.reference, "video")]
        named += [(f"registration.cameras[{i}]", c, "video") for i, c in enumerate(self.cameras)]
        named += [(f"registration.project[{i}].sensor", p.sensor, "sensor")
                  for i, p in enumerate(self.project)]
        for where, sid, modality in named:
            if sid not in modalities:
                raise ValueError(f"field '{where}' names stream {sid!r}, which is not in streams "
                                 f"{sorted(modalities)}; use one of them")
            if modalities[sid] != modality:
                raise ValueError(f"field '{where}' names stream {sid!r}, a {modalities[sid]} "
                                 f"stream; it must be a {modality} stream")
