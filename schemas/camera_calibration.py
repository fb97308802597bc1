"""Camera geometry in the session calibration file: intrinsics per camera, extrinsics per camera
and sensor, all tied to one named reference frame.

    reference_frame: rig                  # optional, default "rig"
    cameras:
      cam0:
        intrinsics:
          image_size: [640, 480]          # width, height in pixels
          K: [[600, 0, 320], [0, 600, 240], [0, 0, 1]]
          distortion: {model: plumb_bob, coeffs: [k1, k2, p1, p2, k3]}
        extrinsics:                       # pose of cam0 in `frame`: p_frame = R p_cam + t
          frame: rig                      # the reference frame or another camera/sensor id
          rotation: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]   # or rotation_rvec / quaternion_wxyz
          translation: [0.1, 0, 0]        # metres
    sensors:
      lidar:
        extrinsics: {frame: cam0, rotation_rvec: [0, 0, 0], translation: [0, 0, 0.2]}
        position_channels: [x, y, z]      # optional: a position channel of a sensor stream

Camera coordinates follow OpenCV: x right, y down, z forward. ``load_camera_calibration``
returns a validated ``CameraRig`` or raises ``ManifestError`` naming the file, field and fix.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmalign.schemas.fs import as_path
from mmalign.schemas.manifest import ID, ManifestError, _read_mapping, explain

# distortion model -> allowed coefficient counts (OpenCV order k1 k2 p1 p2 [k3 [k4 k5 k6 ...]])
DISTORTION_COEFFS: dict[str, tuple[int, ...]] = {
    "none": (0,),
    "plumb_bob": (4, 5),     # a.k.a. radtan / Brown-Conrady
    "rational": (8,),
    "thin_prism": (12,),
    "tilted": (14,),
    "fisheye": (4,),         # Kannala-Brandt k1..k4, cv2.fisheye
}
ROTATION_TOL = 1e-4          # max |R^T R - I| and |det R - 1| accepted as a rotation
QUATERNION_TOL = 1e-3        # max |1 - |q|| accepted (q is then normalised)
# the largest plausible magnitudes: beyond them a number is a typo or a unit mix-up, and the
# projection would overflow or lose all precision
MAX_FOCAL_PX = 1e6           # |fx|, |fy|, |skew| in pixels
MAX_DISTORTION = 1e6         # |coefficient|
MAX_TRANSLATION_M = 1e8      # |t| per axis, metres (Earth-centred frames are ~6.4e6 m)
MAX_RVEC_RAD = 1e3           # |rotation_rvec| in radians


def _finite(a: np.ndarray, what: str, limit: float | None = None, unit: str = "") -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} has non-finite values (NaN or inf); give finite numbers")
    if limit is not None and a.size and float(np.max(np.abs(a))) > limit:
        raise ValueError(f"{what} has a value of magnitude {float(np.max(np.abs(a))):.6g}{unit}, "
                         f"more than the {limit:g}{unit} a calibration may hold; check the "
                         f"number and its unit")
    return a


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distortion(_Strict):
    model: Literal["none", "plumb_bob", "rational", "thin_prism", "tilted", "fisheye"] = "none"
    coeffs: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _count(self):
        allowed = DISTORTION_COEFFS[self.model]
        if len(self.coeffs) not in allowed:
            counts = " or ".join(map(str, allowed))
            raise ValueError(f"distortion model {self.model!r} takes {counts}"
                             f" coefficients, got {len(self.coeffs)}; fix coeffs or the model")
        _finite(np.asarray(self.coeffs, dtype=np.float64), "distortion coeffs", MAX_DISTORTION)
        return self

    def array(self) -> np.ndarray:
        """Coefficients as OpenCV wants them (float64, shape (n,))."""
        return np.asarray(self.coeffs, dtype=np.float64)


class CameraIntrinsics(_Strict):
    image_size: tuple[int, int] = Field(description="width, height in pixels")
    K: list[list[float]] = Field(description="3x3 camera matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]")
    distortion: Distortion = Field(default_factory=Distortion)

    @field_validator("image_size")
    @classmethod
    def _size(cls, v):
        if min(v) < 8 or max(v) > 65536:
            raise ValueError(f"image_size {list(v)} must be [width, height] between 8 and 65536")
        return v

    @field_validator("K")
    @classmethod
    def _k(cls, v):
        k = np.asarray(v, dtype=np.float64)
        if k.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {k.shape}; "
                             f"give [[fx,0,cx],[0,fy,cy],[0,0,1]]")
        _finite(k, "K")
        _finite(k[:2, :2], "K's focal lengths and skew", MAX_FOCAL_PX, " px")
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise ValueError(f"K focal lengths fx={k[0, 0]}, fy={k[1, 1]} must be > 0")
        if abs(k[1, 0]) > 1e-9 or np.max(np.abs(k[2] - [0, 0, 1])) > 1e-9:
            raise ValueError("K must have the form [[fx,s,cx],[0,fy,cy],[0,0,1]]")
        return v

    @model_validator(mode="after")
    def _principal_point(self):
        w, h = self.image_size
        cx, cy = self.K[0][2], self.K[1][2]
        if not (0 < cx < w and 0 < cy < h):
            raise ValueError(f"principal point ({cx}, {cy}) lies outside the {w}x{h} image; "
                             f"check K's cx, cy and that image_size is [width, height]")
        return self

    @property
    def width(self) -> int:
        return self.image_size[0]

    @property
    def height(self) -> int:
        return self.image_size[1]

    def k_array(self) -> np.ndarray:
        return np.asarray(self.K, dtype=np.float64)

    @classmethod
    def from_opencv(cls, K, dist, image_size: tuple[int, int],
                    fisheye: bool = False) -> CameraIntrinsics:
        """From cv2.calibrateCamera / fisheye.calibrate output (trailing zero terms dropped)."""
        d = np.asarray(dist, dtype=np.float64).ravel()
        if fisheye:
            model = "fisheye"
        else:
            n = len(d)
            model = {0: "none", 4: "plumb_bob", 5: "plumb_bob", 8: "rational", 12: "thin_prism",
                     14: "tilted"}.get(n)
            if model is None:
                raise ValueError(f"{n} distortion coefficients match no OpenCV model")
        return cls(image_size=(int(image_size[0]), int(image_size[1])),
                   K=np.asarray(K, dtype=np.float64).tolist(),
                   distortion=Distortion(model=model, coeffs=d.tolist()))


def rotation_from_quaternion(q_wxyz) -> np.ndarray:
    w, x, y, z = np.asarray(q_wxyz, dtype=np.float64) / np.linalg.norm(q_wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_from_rvec(rvec) -> np.ndarray:
    """Rodrigues vector (axis * angle, radians) -> 3x3 rotation."""
    r = np.asarray(rvec, dtype=np.float64)
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


class Extrinsics(_Strict):
    """Pose of a camera or sensor in ``frame``: p_frame = R @ p_local + t (metres)."""
    frame: ID | None = Field(None, description="target frame; default: the rig's reference frame")
    rotation: list[list[float]] | None = None
    rotation_rvec: list[float] | None = None
    quaternion_wxyz: list[float] | None = None
    translation: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])

    @field_validator("rotation")
    @classmethod
    def _rot(cls, v):
        if v is None:
            return v
        r = np.asarray(v, dtype=np.float64)
        if r.shape != (3, 3):
            raise ValueError(f"rotation must be a 3x3 matrix, got shape {r.shape}")
        _finite(r, "rotation")
        ortho = float(np.max(np.abs(r.T @ r - np.eye(3))))
        det = float(np.linalg.det(r))
        if ortho > ROTATION_TOL or abs(det - 1) > ROTATION_TOL:
            raise ValueError(f"rotation is not a rotation (max |R^T R - I| = {ortho:.3g}, "
                             f"det = {det:.6g}); give an orthonormal matrix with det +1 "
                             f"(a reflection or scaled matrix is not allowed), or use "
                             f"rotation_rvec")
        return v

    @field_validator("rotation_rvec", "translation")
    @classmethod
    def _vec3(cls, v, info):
        if v is None:
            return v
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (3,):
            raise ValueError(f"{info.field_name} must have 3 numbers, got {len(v)}")
        if info.field_name == "translation":
            _finite(a, "translation", MAX_TRANSLATION_M, " m")
        else:
            _finite(a, "rotation_rvec", MAX_RVEC_RAD, " rad")
        return v

    @field_validator("quaternion_wxyz")
    @classmethod
    def _quat(cls, v):
        if v is None:
            return v
        q = np.asarray(v, dtype=np.float64)
        if q.shape != (4,):
            raise ValueError(f"quaternion_wxyz must have 4 numbers [w, x, y, z], got {len(v)}")
        _finite(q, "quaternion_wxyz")
        if abs(np.linalg.norm(q) - 1) > QUATERNION_TOL:
            raise ValueError(f"quaternion_wxyz has norm {np.linalg.norm(q):.6g}, not 1; "
                             f"give a unit quaternion [w, x, y, z]")
        return v

    @model_validator(mode="after")
    def _one_rotation(self):
        given = [n for n in ("rotation", "rotation_rvec", "quaternion_wxyz")
                 if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of rotation, rotation_rvec, quaternion_wxyz, not {given}")
        return self

    @cached_property
    def R(self) -> np.ndarray:
        if self.rotation is not None:
            return np.asarray(self.rotation, dtype=np.float64)
        if self.rotation_rvec is not None:
            return rotation_from_rvec(self.rotation_rvec)
        if self.quaternion_wxyz is not None:
            return rotation_from_quaternion(self.quaternion_wxyz)
        return np.eye(3)

    @property
    def t(self) -> np.ndarray:
        return np.asarray(self.translation, dtype=np.float64)

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous transform local -> frame."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.R, self.t
        return m

    @classmethod
    def from_matrix(cls, m: np.ndarray, frame: str | None = None) -> Extrinsics:
        m = np.asarray(m, dtype=np.float64)
        return cls(frame=frame, rotation=m[:3, :3].tolist(), translation=m[:3, 3].tolist())


class CameraSpec(_Strict):
    intrinsics: CameraIntrinsics
    extrinsics: Extrinsics = Field(default_factory=Extrinsics)


class SensorSpec(_Strict):
    extrinsics: Extrinsics = Field(default_factory=Extrinsics)
    position_channels: list[str] | None = Field(
        None, min_length=3, max_length=3, description="x, y, z channels of a position stream")


class CameraRig(BaseModel):
    """Cameras and sensors with their poses; other calibration sections (clocks) are ignored."""
    model_config = ConfigDict(extra="ignore", frozen=True)
    reference_frame: ID = "rig"
    cameras: dict[ID, CameraSpec] = Field(default_factory=dict)
    sensors: dict[ID, SensorSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _frames(self):
        both = sorted(set(self.cameras) & set(self.sensors))
        if both:
            raise ValueError(f"ids {both} are both a camera and a sensor; rename one")
        if self.reference_frame in self.cameras or self.reference_frame in self.sensors:
            raise ValueError(f"reference_frame {self.reference_frame!r} is also a camera/sensor "
                             f"id; give the reference frame its own name")
        for node in list(self.cameras) + list(self.sensors):
            self._chain(node)      # raises on unknown frames and cycles
        return self

    def _spec(self, node: str) -> CameraSpec | SensorSpec:
        if node in self.cameras:
            return self.cameras[node]
        if node in self.sensors:
            return self.sensors[node]
        raise KeyError(f"{node!r} is not a camera or sensor of this rig "
                       f"(cameras {sorted(self.cameras)}, sensors {sorted(self.sensors)})")

    def _chain(self, node: str) -> list[str]:
        """Nodes from ``node`` up to (excluding) the reference frame."""
        chain, cur = [], node
        while cur != self.reference_frame:
            if cur in chain:
                raise ValueError(f"extrinsics frames of {node!r} form a cycle {chain + [cur]}; "
                                 f"make one of them point at {self.reference_frame!r}")
            if cur not in self.cameras and cur not in self.sensors:
                kind = "cameras" if chain[-1] in self.cameras else "sensors"
                raise ValueError(f"{kind}.{chain[-1]}.extrinsics.frame names {cur!r}, which is "
                                 f"not {self.reference_frame!r} or a camera/sensor id; fix frame")
            chain.append(cur)
            cur = self._spec(cur).extrinsics.frame or self.reference_frame
        return chain

    def to_reference(self, node: str) -> np.ndarray:
        """4x4 transform node -> reference frame (composed along the frame chain)."""
        m = np.eye(4)
        if node == self.reference_frame:
            return m
        self._spec(node)            # KeyError naming the known ids
        for n in self._chain(node):
            m = self._spec(n).extrinsics.matrix() @ m
        return m

    def camera(self, camera_id: str) -> CameraSpec:
        if camera_id not in self.cameras:
            raise KeyError(f"camera {camera_id!r} is not in the calibration "
                           f"(cameras {sorted(self.cameras)})")
        return self.cameras[camera_id]

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


def load_camera_calibration(source: str | Path | dict) -> CameraRig:
    """The ``cameras:``/``sensors:`` sections of a calibration file (or an already-read mapping)."""
    if isinstance(source, dict):
        label, data = Path("<calibration mapping>"), source
    else:
        label = as_path(source)          # a local file or an object-store URI
        data = _read_mapping(label, "calibration file")
    try:
        return CameraRig.model_validate(data)
    except ValidationError as e:
        raise ManifestError(explain(label, e)) from None
