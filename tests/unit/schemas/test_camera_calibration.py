"""Camera calibration contract: loading, validation errors (file, field, fix), real stereo data."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import yaml

from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.camera_calibration import (
    CameraIntrinsics,
    CameraRig,
    Extrinsics,
    load_camera_calibration,
    rotation_from_quaternion,
    rotation_from_rvec,
)
from mmalign.schemas.manifest import ManifestError
from mmalign.transforms.register.projection import project_sensor_points, transform_points
from tests.opencv_doc_data import opencv_doc_data

GOOD = {
    "clocks": {"cam1": {"offset_ms": 12.5}},
    "reference_frame": "rig",
    "cameras": {
        "cam0": {"intrinsics": {"image_size": [640, 480],
                                "K": [[600, 0, 320], [0, 610, 240], [0, 0, 1]],
                                "distortion": {"model": "plumb_bob",
                                               "coeffs": [-0.1, 0.01, 0.001, -0.001, 0.0]}}},
        "cam1": {"intrinsics": {"image_size": [1280, 720],
                                "K": [[900, 0, 640], [0, 900, 360], [0, 0, 1]]},
                 "extrinsics": {"frame": "cam0", "rotation_rvec": [0, 0.2, 0],
                                "translation": [0.3, 0, 0]}},
    },
    "sensors": {
        "imu": {"extrinsics": {"frame": "cam1", "quaternion_wxyz": [0.9238795, 0, 0, 0.3826834],
                               "translation": [0, 0.05, 0]}},
        "gps": {"position_channels": ["x", "y", "z"]},
    },
}


@pytest.fixture
def calib_file(tmp_path):
    p = tmp_path / "calibration.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    return p


def test_load_file_and_clock_sections_coexist(calib_file):
    rig = load_camera_calibration(calib_file)
    assert set(rig.cameras) == {"cam0", "cam1"} and set(rig.sensors) == {"imu", "gps"}
    assert rig.camera("cam1").intrinsics.width == 1280
    assert rig.camera("cam0").intrinsics.distortion.array().shape == (5,)
    # the clock loader still reads the same file
    assert load_calibration(calib_file).clock("cam1").offset_ns == 12_500_000


def test_rotation_forms_agree_and_chain_composes():
    rv = np.array([0.1, -0.2, 0.3])
    R = rotation_from_rvec(rv)
    assert np.allclose(R, cv2.Rodrigues(rv)[0], atol=1e-12)
    q = [np.cos(0.25), 0, 0, np.sin(0.25)]            # 0.5 rad about z
    assert np.allclose(rotation_from_quaternion(q), cv2.Rodrigues(np.array([0, 0, 0.5]))[0])
    rig = load_camera_calibration(GOOD)
    # imu -> cam1 -> cam0 -> rig; compose by hand
    m_imu = Extrinsics(**GOOD["sensors"]["imu"]["extrinsics"]).matrix()
    m_cam1 = Extrinsics(**GOOD["cameras"]["cam1"]["extrinsics"]).matrix()
    assert np.allclose(rig.to_reference("imu"), m_cam1 @ m_imu)
    p = np.array([[0.0, 0.0, 0.0]])
    assert np.allclose(transform_points(p, rig.to_reference("imu")), [[0.3, 0.05, 0]])
    assert np.allclose(rig.to_reference("gps"), np.eye(4))


def test_round_trip_through_dict():
    rig = load_camera_calibration(GOOD)
    again = load_camera_calibration(rig.to_dict())
    assert again == rig
    for node in ("cam0", "cam1", "imu", "gps"):
        assert np.allclose(again.to_reference(node), rig.to_reference(node))


def _bad(path: list, value):
    d = copy.deepcopy(GOOD)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


BAD_CASES = [
    ("scaled rotation", ["cameras", "cam1", "extrinsics"],
     {"rotation": (2 * np.eye(3)).tolist()}, "rotation", "not a rotation"),
    ("reflection", ["cameras", "cam1", "extrinsics"],
     {"rotation": np.diag([1.0, 1.0, -1.0]).tolist()}, "rotation", "det"),
    ("NaN in K", ["cameras", "cam0", "intrinsics", "K"],
     [[600, 0, 320], [0, float("nan"), 240], [0, 0, 1]], "K", "non-finite"),
    ("K not 3x3", ["cameras", "cam0", "intrinsics", "K"], [[600, 0, 320], [0, 600, 240]],
     "K", "3x3"),
    ("negative focal", ["cameras", "cam0", "intrinsics", "K"],
     [[-600, 0, 320], [0, 600, 240], [0, 0, 1]], "K", "> 0"),
    ("coefficient count", ["cameras", "cam0", "intrinsics", "distortion", "coeffs"],
     [0.1, 0.2, 0.3], "distortion", "takes 4 or 5"),
    ("unknown model", ["cameras", "cam0", "intrinsics", "distortion", "model"], "kb9",
     "distortion.model", "plumb_bob"),
    ("principal point outside", ["cameras", "cam0", "intrinsics", "image_size"], [300, 200],
     "intrinsics", "principal point"),
    ("translation length", ["cameras", "cam1", "extrinsics", "translation"], [1, 2],
     "translation", "3 numbers"),
    ("non-unit quaternion", ["sensors", "imu", "extrinsics", "quaternion_wxyz"], [1, 1, 0, 0],
     "quaternion_wxyz", "unit quaternion"),
    ("two rotation forms", ["sensors", "imu", "extrinsics", "rotation_rvec"], [0, 0, 0],
     "extrinsics", "give one of"),
    ("unknown frame", ["cameras", "cam1", "extrinsics", "frame"], "cam9",
     "(top level)", "cameras.cam1.extrinsics.frame names 'cam9'"),
    ("missing intrinsics", ["cameras", "cam0", "intrinsics"], KeyError, "intrinsics",
     "add it"),
    ("typo field", ["cameras", "cam0", "intrinsic"], {}, "cam0.intrinsic", "spelling"),
]


@pytest.mark.parametrize("name,path,value,field,text", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_calibration_names_file_field_and_fix(tmp_path, name, path, value, field, text):
    p = tmp_path / "calib.yaml"
    p.write_text(yaml.safe_dump(_bad(path, value)))
    with pytest.raises(ManifestError) as e:
        load_camera_calibration(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and text in msg, msg
    assert "\n" not in msg


def test_cycle_is_rejected():
    d = copy.deepcopy(GOOD)
    d["cameras"]["cam0"]["extrinsics"] = {"frame": "cam1"}
    with pytest.raises(ManifestError, match="cycle"):
        load_camera_calibration(d)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_camera_calibration(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("cameras: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_camera_calibration(p)


def _chessboard_points(data):
    pattern = (9, 6)
    obj = np.zeros((54, 3), np.float32)
    obj[:, :2] = np.mgrid[0:9, 0:6].T.reshape(-1, 2)       # unit = one square
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-3)
    objs, left, right = [], [], []
    for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14):
        a = cv2.imread(str(data / f"left{i:02d}.jpg"), cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(str(data / f"right{i:02d}.jpg"), cv2.IMREAD_GRAYSCALE)
        fa, ca = cv2.findChessboardCorners(a, pattern)
        fb, cb = cv2.findChessboardCorners(b, pattern)
        if fa and fb:
            objs.append(obj)
            left.append(cv2.cornerSubPix(a, ca, (11, 11), (-1, -1), crit))
            right.append(cv2.cornerSubPix(b, cb, (11, 11), (-1, -1), crit))
    return objs, left, right, (a.shape[1], a.shape[0])


def test_stereo_chessboard_calibration_to_validated_rig():
    data = opencv_doc_data()
    objs, left, right, size = _chessboard_points(data)
    assert len(objs) >= 10
    rms_l, Kl, dl, rvecs, tvecs = cv2.calibrateCamera(objs, left, size, None, None)
    rms_r, Kr, dr, _, _ = cv2.calibrateCamera(objs, right, size, None, None)
    rms_s, _, _, _, _, R, T, _, _ = cv2.stereoCalibrate(objs, left, right, Kl, dl, Kr, dr, size,
                                                        flags=cv2.CALIB_FIX_INTRINSIC)
    print(f"\nmono RMS left {rms_l:.3f} px, right {rms_r:.3f} px; stereo RMS {rms_s:.3f} px; "
          f"T = {T.ravel().round(3)} squares")
    assert rms_l < 1.0 and rms_r < 1.0 and rms_s < 1.0
    # p_right = R p_left + T  ->  pose of the right camera in the left camera's frame
    pose_right = np.eye(4)
    pose_right[:3, :3], pose_right[:3, 3] = R.T, (-R.T @ T).ravel()
    rig = CameraRig(reference_frame="rig", cameras={
        "left": {"intrinsics": CameraIntrinsics.from_opencv(Kl, dl, size)},
        "right": {"intrinsics": CameraIntrinsics.from_opencv(Kr, dr, size),
                  "extrinsics": Extrinsics.from_matrix(pose_right, frame="left")},
    })
    rig = load_camera_calibration(rig.to_dict())          # through the validating loader
    base = rig.to_reference("right")[:3, 3]
    angle = np.degrees(np.arccos(np.clip((np.trace(rig.to_reference("right")[:3, :3]) - 1) / 2,
                                         -1, 1)))
    # the right camera sits ~3.3 squares to the right of the left one, nearly parallel
    assert 2.5 < np.linalg.norm(base) < 4.5
    assert base[0] > 0.95 * np.linalg.norm(base)
    assert angle < 5.0
    # the board seen by the left camera, projected into the right camera through the rig,
    # lands on the corners detected in the right image
    errs = []
    for obj, rv, tv, cr in zip(objs, rvecs, tvecs, right):
        in_left = transform_points(obj, np.r_[np.c_[cv2.Rodrigues(rv)[0], tv], [[0, 0, 0, 1]]])
        pr = project_sensor_points(in_left, rig, "left", "right")
        assert pr.visible.all()
        errs.append(np.linalg.norm(pr.uv - cr.reshape(-1, 2), axis=1))
    mean_err = float(np.mean(np.concatenate(errs)))
    print(f"board corners projected left -> right through the rig: mean error {mean_err:.3f} px")
    assert mean_err < 1.5
