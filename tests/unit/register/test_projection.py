"""Sensor -> camera projection against independent numpy models of the camera, and undistortion."""

from __future__ import annotations

import numpy as np
import pytest

from mmalign.schemas.camera_calibration import CameraIntrinsics, load_camera_calibration
from mmalign.transforms.register.projection import (
    project_camera_points,
    project_sensor_points,
    reference_to_camera,
    transform_points,
)

K = [[620.0, 0.0, 331.0], [0.0, 615.0, 236.0], [0.0, 0.0, 1.0]]
DIST = [-0.28, 0.09, 0.0012, -0.0008, -0.012]
FISHEYE = [0.05, -0.01, 0.002, -0.0005]


def brown_conrady(p_cam: np.ndarray, k: np.ndarray, d: list[float]) -> np.ndarray:
    """Pinhole + radial/tangential distortion written out from the model's equations."""
    k1, k2, p1, p2, k3 = d
    x, y = p_cam[:, 0] / p_cam[:, 2], p_cam[:, 1] / p_cam[:, 2]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=1)


def kannala_brandt(p_cam: np.ndarray, k: np.ndarray, d: list[float]) -> np.ndarray:
    a, b = p_cam[:, 0] / p_cam[:, 2], p_cam[:, 1] / p_cam[:, 2]
    r = np.hypot(a, b)
    th = np.arctan(r)
    thd = th * (1 + d[0] * th ** 2 + d[1] * th ** 4 + d[2] * th ** 6 + d[3] * th ** 8)
    s = np.where(r > 0, thd / np.where(r > 0, r, 1), 1.0)
    return np.stack([k[0, 0] * a * s + k[0, 2], k[1, 1] * b * s + k[1, 2]], axis=1)


def rig_dict(model="plumb_bob", coeffs=DIST):
    return {"cameras": {
        "cam": {"intrinsics": {"image_size": [640, 480], "K": K,
                               "distortion": {"model": model, "coeffs": coeffs}},
                "extrinsics": {"rotation_rvec": [0.05, -0.3, 0.02],
                               "translation": [0.4, -0.1, 0.2]}}},
        "sensors": {"lidar": {"extrinsics": {"frame": "cam", "rotation_rvec": [0.0, 0.1, 0.0],
                                             "translation": [0.0, 0.0, 0.1]},
                              "position_channels": ["px", "py", "pz"]}}}


def points_in_view(n: int, rng) -> np.ndarray:
    """Points in the camera frame spread over most of the image, 1-20 m away."""
    z = rng.uniform(1, 20, n)
    x = rng.uniform(-0.45, 0.45, n) * z
    y = rng.uniform(-0.33, 0.33, n) * z
    return np.stack([x, y, z], axis=1)


@pytest.mark.parametrize("model,coeffs,truth", [("plumb_bob", DIST, brown_conrady),
                                                 ("fisheye", FISHEYE, kannala_brandt)])
def test_projection_matches_camera_model(model, coeffs, truth):
    rig = load_camera_calibration(rig_dict(model, coeffs))
    rng = np.random.default_rng(7)
    p_cam = points_in_view(2000, rng)
    # express the points in the reference frame through the camera's pose, then project back
    p_ref = transform_points(p_cam, rig.to_reference("cam"))
    pr = project_camera_points(transform_points(p_ref, reference_to_camera(rig, "cam")),
                               rig.camera("cam").intrinsics)
    expected = truth(p_cam, np.asarray(K), coeffs)
    err = np.linalg.norm(pr.uv - expected, axis=1)
    inside = ((expected[:, 0] >= 0) & (expected[:, 0] < 640)
              & (expected[:, 1] >= 0) & (expected[:, 1] < 480))
    print(f"\n{model}: max projection error {err.max():.2e} px over {len(err)} points")
    assert err.max() < 0.5
    assert np.array_equal(pr.visible, inside)
    assert np.allclose(pr.depth, p_cam[:, 2])


def test_sensor_points_through_extrinsics():
    rig = load_camera_calibration(rig_dict())
    p_cam = points_in_view(500, np.random.default_rng(3))
    # into the lidar frame, then project from there: the pixels of the camera-frame points
    cam_from_lidar = np.linalg.inv(rig.to_reference("cam")) @ rig.to_reference("lidar")
    p_lidar = transform_points(p_cam, np.linalg.inv(cam_from_lidar))
    pr = project_sensor_points(p_lidar, rig, "lidar", "cam")
    expected = brown_conrady(p_cam, np.asarray(K), DIST)
    inside = ((expected[:, 0] >= 0) & (expected[:, 0] < 640)
              & (expected[:, 1] >= 0) & (expected[:, 1] < 480))
    err = np.linalg.norm(pr.uv - expected, axis=1)
    print(f"\nlidar -> camera -> pixels: max error {err.max():.2e} px")
    assert err.max() < 0.5 and np.array_equal(pr.visible, inside)
    with pytest.raises(KeyError, match="not in the calibration"):
        reference_to_camera(rig, "nocam")


def test_visibility_behind_outside_and_folded_distortion():
    # strong barrel distortion: far off-axis points fold back into the image under the polynomial
    intr = CameraIntrinsics(image_size=(640, 480), K=K,
                            distortion={"model": "plumb_bob", "coeffs": [-0.45, 0, 0, 0, 0]})
    pts = np.array([[0.0, 0.0, 2.0],      # centre
                    [0.0, 0.0, -2.0],     # behind
                    [0.0, 0.0, 0.0],      # at the optical centre
                    [1.55, 0.0, 1.0],     # 57 degrees off axis: outside the image's FOV
                    [np.nan, 0.0, 1.0],   # not finite
                    [0.8, 0.0, 1.0]])     # off the image edge
    pr = project_camera_points(pts, intr)
    assert pr.visible.tolist() == [True, False, False, False, False, False]
    assert pr.in_front.tolist() == [True, False, False, True, False, True]
    folded = pr.uv[3]
    assert 0 <= folded[0] < 640 and 0 <= folded[1] < 480, "the polynomial folds this point in"
    assert np.isnan(pr.uv[1]).all() and np.isnan(pr.uv[4]).all()
