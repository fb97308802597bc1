"""Camera <-> camera registration: generated scenes with known homographies, the Oxford graf pair,
the last-good tracker and the Beam stage with its dead letters and counters."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mmalign.schemas.registration_spec import RegistrationConfig, available_detectors
from mmalign.transforms.register.registration import (
    RegistrationImpossible,
    RegistrationTracker,
    apply_homography,
    corner_error,
    degeneracy,
    register_pair,
    to_gray,
    warp_to_reference,
)
from tests.media import texture
from tests.opencv_doc_data import opencv_doc_data

W, H = 640, 480
H_TRUE = np.array([[0.9, 0.08, 30.0], [-0.06, 0.95, 20.0], [1e-4, -5e-5, 1.0]])


def through_jpeg(img: np.ndarray, tmp_path, name: str) -> np.ndarray:
    """Write and read back a real JPEG file (codec artefacts included)."""
    path = tmp_path / f"{name}.jpg"
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def scene_pair(tmp_path, h_true=H_TRUE, size=(W, H), seed=1, name="scene"):
    """(source frame, reference frame) of one plane, related by h_true (source -> reference)."""
    w, h = size
    canvas = texture(w + 360, h + 320, seed)
    x0, y0 = 180, 160
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
    src = canvas[y0:y0 + h, x0:x0 + w]
    ref = cv2.warpPerspective(canvas, h_true @ np.linalg.inv(shift), (w, h))
    return through_jpeg(src, tmp_path, f"{name}_src"), through_jpeg(ref, tmp_path, f"{name}_ref")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return scene_pair(tmp_path_factory.mktemp("scene"))


@pytest.mark.parametrize("detector", available_detectors())
@pytest.mark.parametrize("refine", ["none", "ecc"])
def test_known_homography_on_textured_scene(pair, detector, refine):
    src, ref = pair
    reg = register_pair(src, ref, RegistrationConfig(detector=detector, refine=refine))
    err = corner_error(reg.H, H_TRUE, (W, H))
    print(f"\n{detector}/{refine}: corner error {err:.3f} px, {reg.quality()}")
    assert err < 2.0
    assert reg.good and reg.refined == (refine == "ecc")
    assert reg.n_inliers >= 100 and reg.inlier_ratio > 0.5 and reg.rmse_px < 2.0


def test_ecc_ignores_an_object_off_the_plane(tmp_path):
    src, ref = scene_pair(tmp_path, seed=4)
    ref = ref.copy()
    occluder = texture(200, 160, seed=99)             # something in front of the plane
    ref[250:410, 380:580] = occluder
    plain = register_pair(src, ref, RegistrationConfig(refine="none"))
    ours = register_pair(src, ref, RegistrationConfig())
    e0, e1 = corner_error(plain.H, H_TRUE, (W, H)), corner_error(ours.H, H_TRUE, (W, H))
    print(f"\nwith occluder: plain {e0:.3f} px, refined {e1:.3f} px")
    assert ours.refined and e1 < 2.0


def test_graf_pair_against_published_homography():
    data = opencv_doc_data()
    src = cv2.imread(str(data / "graf1.png"))
    ref = cv2.imread(str(data / "graf3.png"))
    fs = cv2.FileStorage(str(data / "H1to3p.xml"), cv2.FILE_STORAGE_READ)
    h13 = fs.getNode("H13").mat()
    fs.release()
    size = (src.shape[1], src.shape[0])
    plain = register_pair(src, ref, RegistrationConfig(refine="none"))
    ours = register_pair(src, ref, RegistrationConfig())
    e0, e1 = corner_error(plain.H, h13, size), corner_error(ours.H, h13, size)
    print(f"\ngraf1->graf3 mean corner error: ORB+MAGSAC {e0:.2f} px, ours {e1:.2f} px "
          f"(ecc_cc {ours.ecc_cc:.3f})")
    assert e1 < 1.5
    assert e1 < e0


def test_warp_to_reference_lines_up_with_the_reference(pair):
    src, ref = pair
    warped = warp_to_reference(src, H_TRUE, (W, H))
    cover = warp_to_reference(np.full(src.shape[:2], 255, np.uint8), H_TRUE, (W, H))
    inner = cv2.erode(cover, np.ones((9, 9), np.uint8)) > 0
    diff = np.abs(warped.astype(float) - ref.astype(float))[inner].mean()
    wrong = warp_to_reference(src, np.eye(3), (W, H))
    diff_wrong = np.abs(wrong.astype(float) - ref.astype(float))[inner].mean()
    print(f"\nwarped vs reference mean abs diff {diff:.1f} (unwarped {diff_wrong:.1f})")
    assert diff < 8 and diff_wrong > 4 * diff


def test_impossible_inputs_raise_with_a_reason(pair):
    _, ref = pair
    cases = {
        "no_features": (np.full((H, W), 90, np.uint8), ref),
        "bad_frame": (np.zeros((H, W, 2), np.uint8), ref),
    }
    for reason, (a, b) in cases.items():
        with pytest.raises(RegistrationImpossible) as e:
            register_pair(a, b)
        assert e.value.reason == reason, str(e.value)
    with pytest.raises(RegistrationImpossible, match="not an image array") as e:
        register_pair("frame.jpg", ref)
    assert e.value.reason == "bad_frame"
    with pytest.raises(RegistrationImpossible, match="non-finite"):
        to_gray(np.full((40, 40), np.nan, np.float32))
    assert to_gray(np.full((40, 40, 3), 0.5, np.float32)).max() == 127


def test_unrelated_scenes_are_not_accepted(pair):
    _, ref = pair
    other = texture(W, H, seed=5)
    try:
        reg = register_pair(other, ref, RegistrationConfig(refine="none"))
    except RegistrationImpossible as e:
        assert e.reason in ("too_few_matches", "degenerate")
    else:
        assert not reg.good and set(reg.flags) & {"few_inliers", "low_inlier_ratio"}


def test_degeneracy_checks():
    size = (W, H)
    assert degeneracy(H_TRUE, size) is None
    assert degeneracy(None, size) == "no homography found"
    assert "mirrors" in degeneracy(np.diag([-1.0, 1.0, 1.0]), size)
    assert "area" in degeneracy(np.diag([1e-3, 1e-3, 1.0]), size)
    assert "not finite" in degeneracy(np.full((3, 3), np.nan), size)
    horizon = np.array([[1, 0, 0], [0, 1, 0], [0, -1 / 200, 1.0]])     # line at infinity: y=200
    assert "behind" in degeneracy(horizon, size)
    pts = np.array([[10.0, 20.0], [300, 400]])
    assert np.allclose(apply_homography(np.eye(3), pts), pts)


def test_config_rejects_missing_detector_and_even_filter():
    with pytest.raises(ValueError, match="not in this OpenCV build|ecc_gauss"):
        if "akaze" in available_detectors():
            RegistrationConfig(ecc_gauss=4)
        else:
            RegistrationConfig(detector="akaze")


def _patch_only(src):
    """The source with all but a 120x120 patch blanked: few matches, few inliers."""
    bad = np.full_like(src, 128)
    bad[180:300, 260:380] = src[180:300, 260:380]
    return bad


def test_tracker_keeps_last_good_transform(pair):
    src, ref = pair
    cfg = RegistrationConfig(refine="none", min_inliers=100)
    tr = RegistrationTracker(cfg)
    first = tr.step("cam1", 1000, src, ref)
    assert first.status == "ok" and first.transform_tick_ns == 1000
    weak = tr.step("cam1", 2000, _patch_only(src), ref)
    assert weak.status == "flagged" and "few_inliers" in weak.flags
    assert "stale_transform" in weak.flags
    assert weak.transform_tick_ns == 1000 and np.array_equal(weak.H, first.H)
    assert weak.quality["n_inliers"] < 100
    with pytest.raises(RegistrationImpossible):
        tr.step("cam1", 3000, np.zeros((H, W), np.uint8), ref)
    assert tr.last_good["cam1"][1] == 1000                    # unchanged by the failure
    # a weak first tick of another camera has nothing to fall back on
    fresh = tr.step("cam2", 2000, _patch_only(src), ref)
    assert fresh.status == "flagged" and fresh.H is None and "no_good_transform" in fresh.flags
    # state survives a round trip through plain data
    again = RegistrationTracker.from_state(cfg, tr.state())
    assert np.allclose(again.last_good["cam1"][0], first.H)


def test_small_patch_is_flagged_for_coverage(pair):
    """Enough inliers on one small patch pass the count/ratio/RMSE gates but extrapolate
    badly to the image corners: the coverage gate flags them."""
    src, ref = pair
    full = register_pair(src, ref, RegistrationConfig(refine="none"))
    patch = register_pair(_patch_only(src), ref, RegistrationConfig(refine="none", min_inliers=4))
    print(f"\ncoverage: full frame {full.coverage:.2f}, 120x120 patch {patch.coverage:.3f}")
    assert full.good and full.coverage > 0.5
    assert patch.coverage < 120 * 120 / (W * H) and "low_coverage" in patch.flags
    assert set(patch.flags) == {"low_coverage"}       # the other gates pass


def test_session_mode_registers_once(pair):
    src, ref = pair
    tr = RegistrationTracker(RegistrationConfig(refine="none", mode="session"))
    first = tr.step("cam1", 1, src, ref)
    # later ticks reuse the session transform without looking at the frames
    later = tr.step("cam1", 2, np.zeros((H, W), np.uint8), ref)
    assert later.status == "ok" and later.transform_tick_ns == 1
    assert np.array_equal(later.H, first.H)
