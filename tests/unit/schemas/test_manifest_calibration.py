"""Calibration numbers: NaN, inf and absurd clocks or camera geometry are one sentence naming the
file and the field (exit 2), never a traceback in validation or later in the clock stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.calibration import ClockEntry, load_calibration
from mmalign.schemas.camera_calibration import load_camera_calibration
from mmalign.schemas.clock import MAX_ABS_TIME_NS
from mmalign.schemas.manifest import ManifestError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "calibration.yaml"
    p.write_text(text)
    return p


def fails(fn, path: Path, *words: str) -> str:
    with pytest.raises(ManifestError) as e:
        fn(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("entry,field", [
    ("offset_ms: .nan", "offset_ms"),
    ("offset_ms: .inf", "offset_ms"),
    ("offset_ms: -.inf", "offset_ms"),
    ("offset_ms: 1.0e+13", "offset_ms"),          # 1e13 ms = 1e19 ns > 2**62
    ("offset_ns: 1e30", "offset_ns"),             # YAML 1.1 reads this as a string
    ("offset_ns: 1.0e+30", "offset_ns"),
    ("offset_ns: .nan", "offset_ns"),
    ("offset_ns: 4611686018427387905", "offset_ns"),   # 2**62 + 1
    ("offset_ns: 12.5", "offset_ns"),
    ("offset_ns: true", "offset_ns"),
    ("anchor_ns: 1e20", "anchor_ns"),
    ("anchor_ns: -1.0e+20", "anchor_ns"),
    ("drift_ppm: .nan", "drift_ppm"),
    ("drift_ppm: .inf", "drift_ppm"),
    ("drift_ppm: 1.0e+9", "drift_ppm"),
    ("drift_ppm: -20000", "drift_ppm"),
    ("offset_ms: 1, ofset_ns: 2", "ofset_ns"),
])
def test_bad_clock_numbers_name_file_and_field(tmp_path, entry, field):
    p = write(tmp_path, f"clocks:\n  mic: {{{entry}}}\n")
    fails(load_calibration, p, f"field 'clocks.mic.{field}'")


def test_clock_bounds_are_inclusive_and_models_stay_in_int64(tmp_path):
    e = ClockEntry(offset_ns=MAX_ABS_TIME_NS, anchor_ns=-MAX_ABS_TIME_NS, drift_ppm=10000)
    m = e.model()
    assert m.offset_ns == 2**62 and m.anchor_ns == -(2**62)
    t = m.to_ref(np.array([0], np.int64))                   # no overflow error
    assert t.dtype == np.int64
    p = write(tmp_path, "clocks:\n  mic: {offset_ns: '1_000', anchor_ns: '5'}\n")
    assert load_calibration(p).clock("mic").offset_ns == 1000


def test_unknown_top_level_key_is_an_error(tmp_path):
    p = write(tmp_path, "clock:\n  mic: {offset_ms: 350}\n")      # typo of clocks
    fails(load_calibration, p, "field 'clock'", "remove it or check its spelling")
    ok = write(tmp_path, "clocks: {}\nreference_frame: rig\ncameras: {}\nsensors: {}\n")
    assert load_calibration(ok).clocks == {}


CAM = {"intrinsics": {"image_size": [320, 240], "K": [[300, 0, 160], [0, 300, 120], [0, 0, 1]],
                      "distortion": {"model": "plumb_bob", "coeffs": [0.1, 0.01, 0, 0, 0]}},
       "extrinsics": {"frame": "rig", "rotation_rvec": [0, 0.1, 0], "translation": [0.1, 0, 0]}}


def _cam(path: list, value) -> dict:
    cam = yaml.safe_load(yaml.safe_dump(CAM))
    node = cam
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return {"cameras": {"cam0": cam}}


@pytest.mark.parametrize("path,value,words", [
    (["intrinsics", "K"], [[float("nan"), 0, 160], [0, 300, 120], [0, 0, 1]], ["non-finite"]),
    (["intrinsics", "K"], [[1e300, 0, 160], [0, 300, 120], [0, 0, 1]], ["magnitude"]),
    (["intrinsics", "K"], [[300, 1e12, 160], [0, 300, 120], [0, 0, 1]], ["magnitude"]),
    (["intrinsics", "distortion", "coeffs"], [float("inf"), 0, 0, 0, 0], ["non-finite"]),
    (["intrinsics", "distortion", "coeffs"], [1e300, 0, 0, 0, 0], ["magnitude"]),
    (["extrinsics", "translation"], [1e300, 0, 0], ["translation", "magnitude"]),
    (["extrinsics", "translation"], [float("-inf"), 0, 0], ["translation", "non-finite"]),
    (["extrinsics", "rotation_rvec"], [1e9, 0, 0], ["rotation_rvec", "magnitude"]),
    (["extrinsics", "rotation_rvec"], [float("nan"), 0, 0], ["rotation_rvec", "non-finite"]),
    (["intrinsics", "image_size"], [1e300, 240], ["image_size"]),
    (["extrinsics", "frame"], "../x", ["not a valid name"]),
])
def test_bad_camera_numbers_name_file_and_field(tmp_path, path, value, words):
    p = write(tmp_path, yaml.safe_dump(_cam(path, value)))
    fails(load_camera_calibration, p, "field 'cameras.cam0", *words)


def test_camera_ids_share_the_name_rule(tmp_path):
    p = write(tmp_path, yaml.safe_dump({"cameras": {"../cam": CAM}}))
    fails(load_camera_calibration, p, "not a valid name")


def test_plausible_camera_numbers_load(tmp_path):
    big = _cam(["extrinsics", "translation"], [6.4e6, 0, 0])     # an Earth-centred frame
    assert load_camera_calibration(big).camera("cam0").extrinsics.t[0] == 6.4e6


# ---------------------------------------------------------------- through the commands


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("cal") / "rec", duration_s=4,
                              seed=4).parent


@pytest.mark.parametrize("entry", ["offset_ms: .nan", "offset_ns: 1.0e+30", "anchor_ns: 1e20",
                                   "drift_ppm: .inf"])
def test_backfill_and_align_check_exit_2_on_broken_clocks(rec, tmp_path, capsys, entry):
    from mmalign.pipelines import align_check, cli

    d = tmp_path / "rec"
    shutil.copytree(rec, d)
    cal = yaml.safe_load((d / "calibration.yaml").read_text())
    cal["clocks"]["mic"] = {}
    text = yaml.safe_dump(cal).replace("mic: {}", f"mic: {{{entry}}}")
    (d / "calibration.yaml").write_text(text)
    out = tmp_path / "out"
    assert cli.main(["backfill", "--manifest", str(d / "manifest.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration.yaml" in err[0] and "clocks.mic" in err[0], err
    assert not out.exists()                       # stopped before anything touched the disk
    assert align_check.main([str(d / "manifest.yaml"), "--no-estimate", "--json"]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert cap.out == "" and len(err) == 1 and "clocks.mic" in err[0], err
    assert "Traceback" not in cap.err
