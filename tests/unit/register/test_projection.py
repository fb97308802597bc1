"""Sensor -> camera projection against independent numpy models of the camera, and undistortion."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pytest

from mmalign.schemas.camera_calibration import CameraIntrinsics, load_camera_calibration
from mmalign.transforms.register.projection import (
    normalise_pixels,
    project_camera_points,
    project_points,
    project_positions,
    project_sensor_points,
    project_ticks,
    reference_to_camera,
    transform_points,
    undistort_image,
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
    pr = project_points(p_ref, rig, "cam")
    expected = truth(p_cam, np.asarray(K), coeffs)
    err = np.linalg.norm(pr.uv - expected, axis=1)
    inside = ((expected[:, 0] >= 0) & (expected[:, 0] < 640)
              & (expected[:, 1] >= 0) & (expected[:, 1] < 480))
    print(f"\n{model}: max projection error {err.max():.2e} px over {len(err)} points")
    assert err.max() < 0.5
    assert np.array_equal(pr.visible, inside)
    assert np.allclose(pr.depth, p_cam[:, 2])


def test_sensor_points_through_extrinsics_and_pixel_round_trip():
    rig = load_camera_calibration(rig_dict())
    intr = rig.camera("cam").intrinsics
    rng = np.random.default_rng(3)
    uv = np.stack([rng.uniform(20, 620, 500), rng.uniform(20, 460, 500)], axis=1)
    depth = rng.uniform(0.5, 30, 500)
    rays = np.c_[normalise_pixels(uv, intr), np.ones(500)] * depth[:, None]   # camera frame
    # into the lidar frame, then project from there
    cam_from_lidar = np.linalg.inv(rig.to_reference("cam")) @ rig.to_reference("lidar")
    p_lidar = transform_points(rays, np.linalg.inv(cam_from_lidar))
    pr = project_sensor_points(p_lidar, rig, "lidar", "cam")
    err = np.linalg.norm(pr.uv - uv, axis=1)
    print(f"\npixel -> 3D -> pixel round trip: max error {err.max():.2e} px")
    assert err.max() < 0.5 and pr.visible.all()


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


def test_project_ticks_and_positions_to_arrow():
    rig = load_camera_calibration(rig_dict())
    cam_from_lidar = reference_to_camera(rig, "cam") @ rig.to_reference("lidar")
    lidar_from_cam = np.linalg.inv(cam_from_lidar)
    ahead = transform_points(np.array([[0.0, 0.0, 5.0]]), lidar_from_cam)[0]
    behind = transform_points(np.array([[0.0, 0.0, -5.0]]), lidar_from_cam)[0]
    out = project_ticks(np.array([10, 20]), [np.array([ahead, behind]), np.array([ahead])],
                        rig, "lidar", ["cam"])
    assert out.num_rows == 3
    assert out.column("t_ns").to_pylist() == [10, 10, 20]
    assert out.column("point").to_pylist() == [0, 1, 0]
    assert out.column("visible").to_pylist() == [True, False, True]
    assert np.allclose(out.column("u").to_numpy(zero_copy_only=False)[[0, 2]], 331.0)
    assert out.column("u").null_count == 1           # behind the camera: null pixel

    batch = pa.RecordBatch.from_pydict({
        "t_ns": pa.array([1, 2, 3], pa.int64()), "pos": pa.array([0, 1, 2], pa.int64()),
        "px": [ahead[0], np.nan, behind[0]], "py": [ahead[1], 0.0, behind[1]],
        "pz": [ahead[2], 1.0, behind[2]]})
    pos = project_positions(batch, rig, "lidar", ["cam"])
    assert pos.column("pos").to_pylist() == [0, 1, 2]          # every row kept
    assert pos.column("visible").to_pylist() == [True, False, False]
    with pytest.raises(ValueError, match=r"lacks position channels \['qz'\]"):
        project_positions(batch, rig, "lidar", ["cam"], channels=["px", "py", "qz"])
    with pytest.raises(KeyError, match="not in the calibration"):
        project_points(np.zeros((1, 3)), rig, "nocam")


def test_undistort_image_straightens_a_distorted_render(tmp_path):
    intr = CameraIntrinsics(image_size=(640, 480), K=K,
                            distortion={"model": "plumb_bob", "coeffs": DIST})
    k = np.asarray(K)
    # a pinhole image with straight lines, written and read back as PNG
    ideal = np.zeros((480, 640), np.uint8)
    for x in range(0, 640, 40):
        cv2.line(ideal, (x, 0), (x, 479), 255, 3)
    for y in range(0, 480, 40):
        cv2.line(ideal, (0, y), (639, y), 255, 3)
    ideal = cv2.GaussianBlur(ideal, (0, 0), 1.5)
    # render the distorted image: each distorted pixel samples the ideal image where it came from
    grid = np.stack(np.meshgrid(np.arange(640.0), np.arange(480.0)), axis=-1).reshape(-1, 2)
    n = normalise_pixels(grid, intr)
    src = (n @ k[:2, :2].T + k[:2, 2]).astype(np.float32).reshape(480, 640, 2)
    distorted = cv2.remap(ideal, src[..., 0], src[..., 1], cv2.INTER_LINEAR)
    path = tmp_path / "distorted.png"
    cv2.imwrite(str(path), distorted)
    frame = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    fixed, new_k = undistort_image(frame, intr, new_K=k)
    assert np.allclose(new_k, k)
    inner = (slice(60, 420), slice(80, 560))
    before = np.abs(frame[inner].astype(float) - ideal[inner]).mean()
    after = np.abs(fixed[inner].astype(float) - ideal[inner]).mean()
    print(f"\nmean abs difference to the ideal image: distorted {before:.1f}, "
          f"undistorted {after:.1f}")
    assert after < 3.0 and after < before / 5
    _, k0 = undistort_image(frame, intr, alpha=0.0)
    assert k0.shape == (3, 3) and np.isfinite(k0).all()
    with pytest.raises(ValueError, match="image_size"):
        undistort_image(frame[:100], intr)
