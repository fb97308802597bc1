"""The register stage on the real aligned output of a generated recording: session and tick
mode against the generator's homography, bad frames flagged or dead-lettered, and a sensor
position projected into the cameras against a pinhole + distortion model written out here."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path

import apache_beam as beam
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from mmalign.pipelines import backfill
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.manifest import ManifestError, load_manifest
from mmalign.schemas.registration_spec import RegistrationSpec
from mmalign.transforms.register.registration import corner_error
from mmalign.transforms.register.stage import (
    RegisterAligned,
    registration_plans,
    session_registration,
)

pytestmark = pytest.mark.slow
SIZE = (320, 240)
K0 = [[300.0, 0.0, 161.0], [0.0, 298.0, 119.0], [0.0, 0.0, 1.0]]
DIST0 = [-0.12, 0.03, 0.001, -0.0005, 0.0]
K1 = [[280.0, 0.0, 158.0], [0.0, 281.0, 122.0], [0.0, 0.0, 1.0]]
TARGET_RVEC = [0.02, -0.05, 0.01]          # target sensor pose in cam0
TARGET_T = [0.05, -0.02, 0.1]
P0, VEL = np.array([-0.4, -0.25, 3.0]), np.array([0.12, 0.07, 0.2])   # metres, metres/s
BLACK_POS, PATCH_POS, GONE_POS = 1, 40, 60  # cam1 frames spoiled after the alignment run


def target_csv(path: Path, end_s: float) -> None:
    """A position sensor moving on a straight line (sensor frame), 100 Hz, reference clock."""
    t = np.arange(0, int(end_s * 100) + 1) * 10_000_000
    p = P0 + np.outer(t / 1e9, VEL)
    lines = ["t_ns,x,y,z"] + [f"{ti},{x:.17g},{y:.17g},{z:.17g}" for ti, (x, y, z) in zip(t, p)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regstage")
    manifest_path = generate_recording(tmp / "rec", seed=5, duration_s=6.0)
    d = manifest_path.parent
    gt = json.loads((d / "ground_truth.json").read_text())
    target_csv(d / "target.csv", gt["true_end_ns"] / 1e9 + 1.0)
    m = yaml.safe_load(manifest_path.read_text())
    m["streams"].append({"id": "target", "modality": "sensor", "files": ["target.csv"],
                         "options": {"time_column": "t_ns", "channels": ["x", "y", "z"]}})
    manifest_path.write_text(yaml.safe_dump(m, sort_keys=False))
    cal = yaml.safe_load((d / "calibration.yaml").read_text())
    cal["cameras"] = {
        "cam0": {"intrinsics": {"image_size": list(SIZE), "K": K0,
                                "distortion": {"model": "plumb_bob", "coeffs": DIST0}}},
        "cam1": {"intrinsics": {"image_size": list(SIZE), "K": K1},
                 "extrinsics": {"frame": "cam0", "rotation_rvec": [0.0, 0.08, 0.0],
                                "translation": [0.3, 0.0, 0.0]}}}
    cal["sensors"] = {"target": {"extrinsics": {"frame": "cam0", "rotation_rvec": TARGET_RVEC,
                                                "translation": TARGET_T},
                                 "position_channels": ["x", "y", "z"]}}
    (d / "calibration.yaml").write_text(yaml.safe_dump(cal, sort_keys=False))
    backfill.run([manifest_path], tmp / "out", run_id="align-only")
    # spoil cam1 frames now that they are aligned: black, mostly blank, deleted
    cam1 = d / "cam1"
    img = cv2.imread(str(cam1 / f"{BLACK_POS:06d}.png"))
    cv2.imwrite(str(cam1 / f"{BLACK_POS:06d}.png"), np.zeros_like(img))
    img = cv2.imread(str(cam1 / f"{PATCH_POS:06d}.png"))
    patch = np.full_like(img, 128)
    patch[80:160, 120:200] = img[80:160, 120:200]
    cv2.imwrite(str(cam1 / f"{PATCH_POS:06d}.png"), patch)
    (cam1 / f"{GONE_POS:06d}.png").unlink()
    files = sorted((tmp / "out" / "aligned").glob("*/part-*.parquet"))
    tables = [pq.read_table(f) for f in files]
    tables = [((t.column("session_id")[0].as_py(), t.column("bucket")[0].as_py()), t)
              for t in tables]
    h = np.linalg.inv(np.array(gt["homography_cam0_to_cam1"]))
    return {"tmp": tmp, "manifest": load_manifest(manifest_path), "tables": tables,
            "H_true": h / h[2, 2], "gt": gt}


def run_stage(rec, plans, name: str):
    """RegisterAligned over the aligned tables on the DirectRunner: (rows, dead, counters)."""
    out_dir = rec["tmp"] / name
    out_dir.mkdir()

    def dump(x, kind):
        (out_dir / f"{kind}-{uuid.uuid4().hex}.pkl").write_bytes(pickle.dumps(x))

    with beam.Pipeline() as p:
        res = (p | beam.Create(rec["tables"]) | RegisterAligned(plans, run_id=name))
        res.main | "Main" >> beam.Map(dump, "main")
        res.dead | "Dead" >> beam.Map(dump, "dead")
    main = [pickle.loads(f.read_bytes()) for f in out_dir.glob("main-*.pkl")]
    dead = [pickle.loads(f.read_bytes()) for f in out_dir.glob("dead-*.pkl")]
    cnt = {}
    for c in p.result.metrics().query()["counters"]:
        if c.key.metric.namespace == "register":
            cnt[c.key.metric.name] = cnt.get(c.key.metric.name, 0) + c.committed
    import pyarrow as pa
    rows = pa.concat_tables([t for _, t in main]).sort_by("tick_ns").to_pandas()
    return rows, dead, cnt


def plans_for(rec, **spec):
    m = rec["manifest"].model_copy(update={"registration": RegistrationSpec(**spec)})
    return {m.session: session_registration(m)}


def test_session_mode_one_transform_per_session(rec):
    plans = plans_for(rec, reference="cam0", cameras=["cam1"], mode="session")
    rows, dead, cnt = run_stage(rec, plans, "session")
    n_in = sum(t.num_rows for _, t in rec["tables"])
    assert len(rows) == n_in                                 # every tick kept
    ok = rows[rows.cam1__reg_status == "ok"]
    hs = {tuple(h) for h in ok.cam1__H}
    assert len(hs) == 1                                      # one H for the session
    err = corner_error(np.reshape(ok.cam1__H.iloc[0], (3, 3)), rec["H_true"], SIZE)
    print(f"\nsession mode: corner error {err:.3f} px, {len(ok)} ok ticks, "
          f"{ok.cam1__reg_inliers.iloc[0]} inliers")
    assert err < 2.0
    first_ticks = rows[(rows.cam1__status == "ok")].tick_ns.iloc[:5].tolist()
    assert ok.cam1__reg_tick_ns.iloc[0] in first_ticks
    # the black candidate frame: failed, H null, one dead letter per such tick
    black = rows[rows.cam1__pos == BLACK_POS]
    assert len(black) >= 1 and (black.cam1__reg_status == "failed:no_features").all()
    assert black.cam1__H.isna().all()
    assert sorted(d.event_time_ns for d in dead) == sorted(black.tick_ns)
    assert all(d.stage == "register" and d.reason == "no_features" and d.stream_id == "cam1"
               and d.position == f"frame={BLACK_POS}" for d in dead)
    missing = rows[rows.cam1__status != "ok"]
    assert (missing.cam1__reg_status == "no_frame").all() and missing.cam1__H.isna().all()
    assert cnt["ok"] + cnt.get("flagged", 0) + cnt["dead"] + cnt.get("no_frame", 0) == n_in
    assert cnt["dead"] == len(dead)


def test_tick_mode_tracks_flags_and_dead_letters(rec):
    plans = plans_for(rec, reference="cam0", cameras=["cam1"], mode="tick", refine="none")
    rows, dead, cnt = run_stage(rec, plans, "tick")
    assert len(rows) == sum(t.num_rows for _, t in rec["tables"])
    ok = rows[rows.cam1__reg_status == "ok"]
    errs = [corner_error(np.reshape(h, (3, 3)), rec["H_true"], SIZE) for h in ok.cam1__H]
    print(f"\ntick mode (features only, no ECC): corner error max {max(errs):.3f} px, median "
          f"{np.median(errs):.3f} px over {len(errs)} ticks")
    assert max(errs) < 3.0 and np.median(errs) < 1.0 and len(ok) > 0.9 * len(rows)
    assert (ok.cam1__reg_tick_ns == ok.tick_ns).all()        # every tick registered itself
    # mostly blank frame: below quality, the last good transform is kept and flagged
    weak = rows[rows.cam1__pos == PATCH_POS]
    assert len(weak) >= 1 and (weak.cam1__reg_status == "stale_transform").all()
    assert (weak.cam1__reg_coverage < 0.15).all() and weak.cam1__H.notna().all()
    for _, r in weak.iterrows():
        prev = rows[rows.tick_ns == r.cam1__reg_tick_ns].iloc[0]
        assert prev.tick_ns < r.tick_ns and list(prev.cam1__H) == list(r.cam1__H)
    # black frame: impossible; deleted file: unreadable -- both null H with a dead letter
    by_reason = {}
    for d in dead:
        by_reason.setdefault(d.reason, []).append(d)
    for pos, reason in ((BLACK_POS, "no_features"), (GONE_POS, "frame_unreadable")):
        bad = rows[rows.cam1__pos == pos]
        assert len(bad) >= 1 and (bad.cam1__reg_status == f"failed:{reason}").all()
        assert bad.cam1__H.isna().all()
        assert sorted(d.event_time_ns for d in by_reason[reason]) == sorted(bad.tick_ns)
    assert set(by_reason) == {"no_features", "frame_unreadable"}
    assert cnt["dead"] == len(dead) and cnt["flagged"] == len(weak)


def test_every_n_ticks_with_ecc(rec):
    plans = plans_for(rec, reference="cam0", cameras=["cam1"], mode="tick", every_n_ticks=10)
    rows, _, _ = run_stage(rec, plans, "every10")
    ok = rows[rows.cam1__reg_status == "ok"]
    own = ok[ok.cam1__reg_tick_ns == ok.tick_ns]
    assert (own.tick_pos % 10 == 0).all() and 10 < len(own) < len(ok)
    errs = [corner_error(np.reshape(h, (3, 3)), rec["H_true"], SIZE) for h in ok.cam1__H]
    print(f"\ntick mode, ECC, 1 tick in 10: corner error max {max(errs):.3f} px")
    assert max(errs) < 2.0
    assert set(ok.cam1__reg_tick_ns) <= set(own.tick_ns) | set(rows.tick_ns[:5])


def distort_project(p_cam: np.ndarray, k, d) -> np.ndarray:
    """Pinhole + Brown-Conrady, written out from the model's equations."""
    k, (k1, k2, p1, p2, k3) = np.asarray(k), d
    x, y = p_cam[:, 0] / p_cam[:, 2], p_cam[:, 1] / p_cam[:, 2]
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([k[0, 0] * xd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=1)


def test_sensor_positions_projected_into_cameras(rec):
    plans = plans_for(rec, reference="cam0", cameras=["cam1"], mode="session",
                      project=[{"sensor": "target"}])
    assert plans["demo-001"].projections[0].cameras == ("cam0", "cam1")
    rows, _, _ = run_stage(rec, plans, "project")
    rows = rows[rows.target__status == "ok"]
    assert len(rows) > 100
    t = rows.tick_ns.to_numpy() / 1e9
    p_sensor = P0 + np.outer(t, VEL)                         # the true position at each tick
    r, _ = cv2.Rodrigues(np.array(TARGET_RVEC))
    p_cam0 = p_sensor @ r.T + np.array(TARGET_T)
    expected = distort_project(p_cam0, K0, DIST0)
    got = rows[["target__cam0__u", "target__cam0__v"]].to_numpy()
    err = np.linalg.norm(got - expected, axis=1)
    print(f"\nprojection into cam0: max error {err.max():.2e} px over {len(err)} ticks")
    assert err.max() < 0.5 and rows.target__cam0__visible.all()
    # cam1 sits 0.3 m to the right of cam0, turned 0.08 rad about y
    r1, _ = cv2.Rodrigues(np.array([0.0, 0.08, 0.0]))
    p_cam1 = (p_cam0 - [0.3, 0.0, 0.0]) @ r1                  # R^T (p - t), row vectors
    exp1 = distort_project(p_cam1, K1, [0, 0, 0, 0, 0])
    err1 = np.linalg.norm(rows[["target__cam1__u", "target__cam1__v"]].to_numpy() - exp1, axis=1)
    assert err1.max() < 0.5
    assert np.allclose(rows.target__cam1__depth, p_cam1[:, 2])


def test_plan_errors_name_the_field(rec):
    m = rec["manifest"]
    cases = [({"reference": "cam0", "cameras": ["camX"]}, "registration.cameras[0]"),
             ({"reference": "imu", "cameras": ["cam1"]}, "a sensor stream"),
             ({"reference": "cam0", "cameras": ["cam1"], "project": [{"sensor": "imu"}]},
              "not in the calibration file's sensors"),
             ({"reference": "cam0", "cameras": ["cam1"],
               "project": [{"sensor": "target", "cameras": ["cam9"]}]}, "cam9")]
    for spec, text in cases:
        bad = m.model_copy(update={"registration": RegistrationSpec(**spec)})
        with pytest.raises(ManifestError, match=text.replace("[", r"\[").replace("]", r"\]")):
            registration_plans([bad])
    with pytest.raises(ValueError, match="include the reference"):
        RegistrationSpec(reference="cam0", cameras=["cam0"])
    with pytest.raises(ValueError, match="extra"):
        RegistrationSpec(reference="cam0", cameras=["cam1"], detectr="orb")
