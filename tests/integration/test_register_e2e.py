"""`mmalign backfill` as a user runs it, on a generated recording whose manifest asks for
registration: cam1's homography against the generator's, and broken configs stop with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned
from mmalign.transforms.register.registration import corner_error
from tests.cli import run_mmalign

pytestmark = pytest.mark.slow
GOOD_CAMERA = {"intrinsics": {"image_size": [320, 240],
                              "K": [[300, 0, 160], [0, 300, 120], [0, 0, 1]]}}


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rege2e")
    manifest = generate_recording(tmp / "rec", seed=11, duration_s=6.0, registration=True)
    return {"tmp": tmp, "manifest": manifest}


def test_backfill_registers_cam1_onto_cam0(rec):
    out = rec["tmp"] / "out"
    r = run_mmalign("backfill", "--manifest", str(rec["manifest"]), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    gt = json.loads((rec["manifest"].parent / "ground_truth.json").read_text())
    h = np.linalg.inv(np.array(gt["homography_cam0_to_cam1"]))      # ours: cam1 -> cam0
    a = read_aligned(out / "aligned").to_pandas()
    assert a.tick_ns.tolist() == gt["streams"]["cam0"]["frames"]["t_true_ns"]   # all ticks kept
    ok = a[a.cam1__reg_status == "ok"]
    assert (ok.cam1__status == "ok").all()
    assert set(a.cam1__reg_status) <= {"ok", "no_frame"}
    assert (a.cam1__reg_status == "no_frame").sum() == (a.cam1__status != "ok").sum()
    errs = [corner_error(np.reshape(x, (3, 3)), h / h[2, 2], (320, 240)) for x in ok.cam1__H]
    print(f"\nmmalign backfill: cam1 -> cam0 corner error max {max(errs):.3f} px over "
          f"{len(errs)} ticks (session mode, ORB + MAGSAC + ECC)")
    assert max(errs) < 2.0
    assert all(acc["balanced"] for acc in summary["accounting"].values())
    assert summary["counters"]["register.ok"] == len(ok)
    assert not any(k.startswith("register/") for k in summary["dead_letters_by_reason"])


def broken(rec, name: str, calibration: dict | None = None, registration: dict | None = None):
    d = rec["manifest"].parent
    m = yaml.safe_load(rec["manifest"].read_text())
    if calibration is not None:
        cal = yaml.safe_load((d / "calibration.yaml").read_text())
        cal.update(calibration)
        (d / f"calibration_{name}.yaml").write_text(yaml.safe_dump(cal))
        m["calibration"] = f"calibration_{name}.yaml"
    if registration is not None:
        m["registration"] = registration
    path = d / f"manifest_{name}.yaml"
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    return path


CASES = {
    "not_rotation": ({"cameras": {"cam0": GOOD_CAMERA, "cam1": {
        **GOOD_CAMERA, "extrinsics": {"frame": "cam0", "rotation": [[1, 0, 0], [0, 2, 0],
                                                                    [0, 0, 1]]}}}},
                     None, "cameras.cam1.extrinsics.rotation", "not a rotation"),
    "nan": ({"cameras": {"cam0": {"intrinsics": {
        "image_size": [320, 240], "K": [[300, 0, 160], [0, float("nan"), 120], [0, 0, 1]]}}}},
            None, "cameras.cam0.intrinsics.K", "non-finite"),
    "shape": ({"sensors": {"imu": {"extrinsics": {"frame": "cam0", "translation": [0.1, 0]}}},
               "cameras": {"cam0": GOOD_CAMERA}},
              None, "sensors.imu.extrinsics.translation", "must have 3 numbers"),
    "unknown_camera": (None, {"reference": "cam0", "cameras": ["cam7"]},
                       "registration.cameras[0]", "not in streams"),
    "bad_option": (None, {"reference": "cam0", "cameras": ["cam1"], "ratio": 1.5},
                   "registration.ratio", "less than 1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_config_stops_with_exit_2(rec, name, capsys):
    """In-process through the CLI's main (the process exit code is checked once below)."""
    from mmalign.pipelines.cli import main
    calibration, registration, field, text = CASES[name]
    path = broken(rec, name, calibration, registration)
    code = main(["backfill", "--manifest", str(path), "--out", str(rec["tmp"] / f"out_{name}")])
    msg = capsys.readouterr().err.strip()
    print(f"\n{name}: {msg}")
    assert code == 2
    assert len(msg.splitlines()) == 1 and field in msg and text in msg
    assert (f"calibration_{name}.yaml" in msg) if calibration else True
    assert not (rec["tmp"] / f"out_{name}" / "aligned").exists()


def test_broken_calibration_exit_code_of_the_process(rec):
    path = broken(rec, "proc", CASES["not_rotation"][0])
    r = run_mmalign("backfill", "--manifest", str(path), "--out", str(rec["tmp"] / "out_proc"))
    assert r.returncode == 2 and "cameras.cam1.extrinsics.rotation" in r.stderr
