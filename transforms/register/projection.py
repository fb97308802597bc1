"""Sensor -> camera projection and undistortion, as plain vectorised functions over numpy/Arrow.

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
import pyarrow as pa

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


_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


def normalise_pixels(uv: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """Undistort pixels to normalised camera coordinates (x/z, y/z), shape (N, 2)."""
    pts = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
    k, d = intr.k_array(), intr.distortion.array()
    if intr.distortion.model == "fisheye":
        out = cv2.fisheye.undistortPoints(pts, k, d, criteria=_UNDISTORT_CRITERIA)
    elif hasattr(cv2, "undistortPointsIter"):           # OpenCV 4.x
        out = cv2.undistortPointsIter(pts, k, d, None, None, _UNDISTORT_CRITERIA)
    else:                                                # OpenCV 5: criteria on undistortPoints
        out = cv2.undistortPoints(pts, k, d, criteria=_UNDISTORT_CRITERIA)
    return out.reshape(-1, 2)


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


def project_points(points_ref: np.ndarray, rig: CameraRig, camera_id: str,
                   min_depth: float = 1e-6) -> Projection:
    """Project (N, 3) reference-frame points into camera ``camera_id``."""
    pc = transform_points(points_ref, reference_to_camera(rig, camera_id))
    return project_camera_points(pc, rig.camera(camera_id).intrinsics, min_depth)


def project_sensor_points(points: np.ndarray, rig: CameraRig, sensor_id: str, camera_id: str,
                          min_depth: float = 1e-6) -> Projection:
    """Project (N, 3) points given in sensor ``sensor_id``'s frame into camera ``camera_id``."""
    pc = transform_points(points, sensor_to_camera(rig, sensor_id, camera_id))
    return project_camera_points(pc, rig.camera(camera_id).intrinsics, min_depth)


PROJECTED_SCHEMA = pa.schema([
    ("t_ns", pa.int64()), ("pos", pa.int64()), ("point", pa.int32()), ("camera_id", pa.string()),
    ("u", pa.float64()), ("v", pa.float64()), ("depth", pa.float64()), ("visible", pa.bool_()),
])


def project_ticks(t_ns: np.ndarray, points: list[np.ndarray], rig: CameraRig, sensor_id: str,
                  camera_ids: list[str], pos: np.ndarray | None = None) -> pa.RecordBatch:
    """Project a point list per tick (tick i: points[i] of shape (N_i, 3), sensor frame) into each
    camera in one OpenCV call per camera. Long format: one row per (tick, point, camera)."""
    t = np.asarray(t_ns, dtype=np.int64)
    if len(points) != len(t):
        raise ValueError(f"project_ticks: {len(t)} ticks but {len(points)} point lists")
    arrays = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in points]
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros((0, 3))
    tick = np.repeat(np.arange(len(t)), counts)
    point = (np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
    pos = np.arange(len(t), dtype=np.int64) if pos is None else np.asarray(pos, dtype=np.int64)
    cols: dict[str, list] = {f.name: [] for f in PROJECTED_SCHEMA}
    for cam in camera_ids:
        pr = project_sensor_points(flat, rig, sensor_id, cam)
        cols["t_ns"].append(t[tick])
        cols["pos"].append(pos[tick])
        cols["point"].append(point)
        cols["camera_id"].append(np.full(len(flat), cam, dtype=object))
        cols["u"].append(pr.uv[:, 0])
        cols["v"].append(pr.uv[:, 1])
        cols["depth"].append(pr.depth)
        cols["visible"].append(pr.visible)
    data = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    return pa.RecordBatch.from_pydict(
        {f.name: pa.array(data[f.name], type=f.type, from_pandas=f.type == pa.float64())
         for f in PROJECTED_SCHEMA}, schema=PROJECTED_SCHEMA)


def project_positions(batch: pa.RecordBatch, rig: CameraRig, sensor_id: str,
                      camera_ids: list[str], channels: list[str] | None = None) -> pa.RecordBatch:
    """Project a position channel (one x, y, z point per sensor row) into each camera.

    ``channels`` default to the sensor's ``position_channels`` in the calibration. A row with a
    non-finite position is kept with null u, v and visible = False.
    """
    spec = rig.sensors.get(sensor_id)
    channels = channels or (spec.position_channels if spec else None)
    if not channels:
        raise ValueError(f"sensor {sensor_id!r} has no position_channels in the calibration; "
                         f"add position_channels: [x, y, z] or pass channels")
    missing = [c for c in channels if c not in batch.schema.names]
    if missing:
        raise ValueError(f"sensor {sensor_id!r} batch lacks position channels {missing}; "
                         f"its columns are {batch.schema.names}")
    xyz = np.stack([batch.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                    for c in channels], axis=1)
    t = batch.column("t_ns").to_numpy(zero_copy_only=False)
    pos = batch.column("pos").to_numpy(zero_copy_only=False)
    return project_ticks(t, list(xyz[:, None, :]), rig, sensor_id, camera_ids, pos=pos)


def undistort_image(frame: np.ndarray, intr: CameraIntrinsics, alpha: float = 0.0,
                    new_K: np.ndarray | None = None,
                    interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted frame and its camera matrix: ``new_K`` if given, else OpenCV's optimal one
    (alpha 0: only valid pixels, 1: all source pixels kept)."""
    h, w = frame.shape[:2]
    if (w, h) != tuple(intr.image_size):
        raise ValueError(f"frame is {w}x{h} but the calibration's image_size is "
                         f"{intr.width}x{intr.height}; undistort frames of the calibrated size")
    k, d = intr.k_array(), intr.distortion.array()
    if intr.distortion.model == "fisheye":
        new_k = new_K if new_K is not None else \
            cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(k, d, (w, h), np.eye(3),
                                                                   balance=alpha)
        m1, m2 = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), new_k, (w, h),
                                                     cv2.CV_32FC1)
    else:
        new_k = new_K if new_K is not None else \
            cv2.getOptimalNewCameraMatrix(k, d, (w, h), alpha, (w, h))[0]
        m1, m2 = cv2.initUndistortRectifyMap(k, d, np.eye(3), new_k, (w, h), cv2.CV_32FC1)
    return cv2.remap(frame, m1, m2, interpolation), new_k
