"""The manifest's optional ``registration:`` section: which cameras to register onto which.

    registration:
      reference: cam0            # video stream whose pixels are the common frame
      cameras: [cam1]            # video streams registered onto it (homography cam -> reference)
      mode: session              # session: one transform per session (best of the first
                                 #   session_ticks usable ticks); tick: every tick, keeping the
                                 #   last good transform
      every_n_ticks: 1           # tick mode: register ticks with tick_pos % n == 0, reuse between
      session_ticks: 5           # ticks tried for the session transform
      detector: orb              # ... and any RegistrationConfig field (below)
      project:                   # optional: sensor position channels -> camera pixels
        - {sensor: target, channels: [x, y, z], cameras: [cam0, cam1]}

Stream ids are checked against the manifest's streams by ``check_streams``; the projection
needs the calibration file's ``cameras:``/``sensors:`` sections (schemas/camera_calibration.py).
"""

from __future__ import annotations

from typing import Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmalign.schemas.names import Name as ID  # stream ids (the manifest's pattern)

_OWN_FIELDS = ("reference", "cameras", "every_n_ticks", "session_ticks", "project")
_DETECTORS = {"orb": "ORB_create", "sift": "SIFT_create", "akaze": "AKAZE_create"}


def available_detectors() -> list[str]:
    """Feature detectors the installed OpenCV ships."""
    return [name for name, fn in _DETECTORS.items() if hasattr(cv2, fn)]


class RegistrationConfig(BaseModel):
    """How the registration kernels (transforms/register/registration.py) detect, match, fit,
    refine and judge a homography."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: Literal["orb", "sift", "akaze"] = "orb"
    max_features: int = Field(5000, ge=16, le=100000)
    ratio: float = Field(0.8, gt=0, lt=1, description="Lowe ratio test threshold")
    method: Literal["magsac", "usac_accurate", "usac_default", "ransac"] = "magsac"
    ransac_threshold_px: float = Field(3.0, gt=0)
    max_iters: int = Field(10000, ge=10)
    confidence: float = Field(0.999, gt=0, lt=1)
    refine: Literal["none", "ecc"] = "ecc"
    ecc_levels: int = Field(2, ge=1, le=6, description="pyramid levels (1 = full resolution)")
    ecc_gauss: int = Field(1, ge=1, le=31, description="ECC Gaussian filter size (odd)")
    ecc_iters: int = Field(50, ge=1, description="ECC iterations per level")
    ecc_eps: float = Field(1e-4, gt=0, description="ECC stops when cc improves less")
    ecc_max_side: int = Field(1024, ge=64, description="ECC runs at most at this long side")
    ecc_residual_mask: bool = Field(True, description="ECC only where the feature fit agrees")
    ecc_rounds: int = Field(3, ge=1, le=10, description="ECC rounds, mask recomputed each round")
    max_ecc_shift_px: float = Field(10.0, gt=0, description="reject ECC moving corners more")
    min_inliers: int = Field(15, ge=4, description="below: flagged")
    min_inlier_ratio: float = Field(0.2, ge=0, le=1, description="below: flagged")
    max_rmse_px: float = Field(2.5, gt=0, description="above: flagged")
    min_coverage: float = Field(0.15, ge=0, le=1, description="below: flagged (inliers' convex "
                                "hull / source image area: a small patch extrapolates badly)")
    mode: Literal["tick", "session"] = Field(
        "tick", description="register every tick, or once per session then reuse")

    @model_validator(mode="after")
    def _checks(self):
        have = available_detectors()
        if self.detector not in have:
            raise ValueError(f"detector {self.detector!r} is not in this OpenCV build "
                             f"({cv2.__version__}); use one of {have}")
        if self.ecc_gauss % 2 == 0:
            raise ValueError(f"ecc_gauss must be odd, got {self.ecc_gauss}")
        return self


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
