"""Sensor -> camera projection, as plain vectorised functions over numpy.

Points are (N, 3) float arrays in metres. A camera rig (schemas/camera_calibration.py) gives each
camera's intrinsics and every camera/sensor pose in the reference frame; projection uses OpenCV
(cv2.projectPoints, or cv2.fisheye.projectPoints for the fisheye model) with distortion.
A projected point is *visible* when it is in front of the camera (depth > min_depth), within the
angles where the camera model maps monotonically onto the image (so a distortion polynomial
cannot fold far-off points back into it) and inside the image: 0 <= u < width,
0 <= v < height (pixel centres at integers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from mmalign.schemas.camera_calibration import CameraIntrinsics, CameraRig

FOV_MARGIN = 0.05      # the camera model must stay monotonic this far (x size) past the border
FOV_DIRECTIONS, FOV_STEPS = 180, 400


@dataclass(frozen=True)
class Projection:
    uv: np.ndarray          # (N, 2) float64 pixels; NaN where not in front / not finite
    depth: np.ndarray       # (N,) float64 z in the camera frame (metres)
    in_front: np.ndarray    # (N,) bool: finite and depth > min_depth
    visible: np.ndarray     # (N,) bool: in front, inside the calibrated FOV and inside the image


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (..., 3) points."""
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:3, :3].T + m[:3, 3]


def reference_to_camera(rig: CameraRig, camera_id: str) -> np.ndarray:
    """4x4 transform reference frame -> camera frame (the inverse of the camera's pose)."""
    rig.camera(camera_id)
    m = rig.to_reference(camera_id)
    inv = np.eye(4)
    inv[:3, :3] = m[:3, :3].T
    inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return inv


def sensor_to_camera(rig: CameraRig, sensor_id: str, camera_id: str) -> np.ndarray:
    """4x4 transform sensor (or camera) frame -> camera frame."""
    return reference_to_camera(rig, camera_id) @ rig.to_reference(sensor_id)


def _distort(xy: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """Normalised (N, 2) coordinates -> pixels through the camera model."""
    p = np.c_[xy, np.ones(len(xy))].reshape(-1, 1, 3)
    k, d, zero = intr.k_array(), intr.distortion.array(), np.zeros(3)
    if intr.distortion.model == "fisheye":
        return cv2.fisheye.projectPoints(p, zero, zero, k, d)[0].reshape(-1, 2)
    return cv2.projectPoints(p, zero, zero, k, d)[0].reshape(-1, 2)


@lru_cache(maxsize=64)
def _fov_table(intr_json: str) -> tuple[np.ndarray, np.ndarray]:
    intr = CameraIntrinsics.model_validate_json(intr_json)
    phi = np.linspace(-np.pi, np.pi, FOV_DIRECTIONS, endpoint=False)
    th = np.linspace(0.0, np.radians(89.5), FOV_STEPS)
    r = np.tan(th)
    xy = np.stack([np.cos(phi)[:, None] * r, np.sin(phi)[:, None] * r], axis=-1).reshape(-1, 2)
    uv = _distort(xy, intr).reshape(FOV_DIRECTIONS, FOV_STEPS, 2)
    k = intr.k_array()
    mw, mh = FOV_MARGIN * intr.width, FOV_MARGIN * intr.height
    with np.errstate(invalid="ignore"):
        outside = ~np.all(np.isfinite(uv), axis=-1) | (uv[..., 0] < -mw) | (uv[..., 1] < -mh) \
            | (uv[..., 0] > intr.width + mw) | (uv[..., 1] > intr.height + mh)
        dist = np.hypot(uv[..., 0] - k[0, 2], uv[..., 1] - k[1, 2])
        folds = np.zeros_like(outside)
        folds[:, 1:] = np.diff(dist, axis=1) <= 0
    bad = outside | folds
    first = np.where(bad.any(axis=1), bad.argmax(axis=1), FOV_STEPS)
    limit = th[np.clip(first - 1, 0, FOV_STEPS - 1)]
    # a direction's limit must also hold for its neighbours (the table is sampled)
    limit = np.minimum(limit, np.minimum(np.roll(limit, 1), np.roll(limit, -1)))
    return phi, limit


def in_field_of_view(points_cam: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """True where a camera-frame point lies within the angles over which the camera model maps
    monotonically onto (a margin around) the image; beyond them a distortion polynomial can
    fold far-off points back into the picture."""
    p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    phi_t, lim = _fov_table(intr.model_dump_json())
    with np.errstate(invalid="ignore", divide="ignore"):
        th = np.arctan2(np.hypot(p[:, 0], p[:, 1]), p[:, 2])
        phi = np.arctan2(p[:, 1], p[:, 0])
        return (p[:, 2] > 0) & (th <= np.interp(phi, phi_t, lim, period=2 * np.pi))


def project_camera_points(points_cam: np.ndarray, intr: CameraIntrinsics,
                          min_depth: float = 1e-6) -> Projection:
    """Project (N, 3) points given in the camera frame into that camera's pixels."""
    p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    z = p[:, 2]
    in_front = np.all(np.isfinite(p), axis=1) & (z > min_depth)
    uv = np.full((len(p), 2), np.nan)
    if in_front.any():
        q = p[in_front]
        k, d = intr.k_array(), intr.distortion.array()
        zero = np.zeros(3)
        if intr.distortion.model == "fisheye":
            proj, _ = cv2.fisheye.projectPoints(q.reshape(-1, 1, 3), zero, zero, k, d)
        else:
            proj, _ = cv2.projectPoints(q.reshape(-1, 1, 3), zero, zero, k, d)
        uv[in_front] = proj.reshape(-1, 2)
    in_fov = in_front & in_field_of_view(p, intr)
    u, v = uv[:, 0], uv[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
    depth = np.where(np.isfinite(z), z, np.nan)
    return Projection(uv=uv, depth=depth, in_front=in_front, visible=in_fov & inside)


def project_sensor_points(points: np.ndarray, rig: CameraRig, sensor_id: str, camera_id: str,
                          min_depth: float = 1e-6) -> Projection:
    """Project (N, 3) points given in sensor ``sensor_id``'s frame into camera ``camera_id``."""
    pc = transform_points(points, sensor_to_camera(rig, sensor_id, camera_id))
    return project_camera_points(pc, rig.camera(camera_id).intrinsics, min_depth)
