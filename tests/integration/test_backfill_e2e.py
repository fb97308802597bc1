"""End to end: a generated recording through the backfill, checked against its ground truth."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.clock import ClockModel
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import run_mmalign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    manifest = generate_recording(tmp / "rec", seed=3, duration_s=12.0)
    summary = backfill.run([manifest], tmp / "out", run_id="e2e-run")
    gt = json.loads((tmp / "rec" / "ground_truth.json").read_text())
    aligned = read_aligned(tmp / "out" / "aligned").to_pandas()
    dead = read_dead_letters(tmp / "out" / "deadletter").to_pandas()
    return {"tmp": tmp, "manifest": manifest, "summary": summary, "gt": gt,
            "aligned": aligned, "dead": dead}


def clock(gt, stream):
    c = gt["streams"][stream]["clock"]
    return ClockModel.declared(c["offset_ns"], c["drift_ppm"], c.get("anchor_ns", 0))


def bad_positions(gt, stream):
    return {b["position"] for b in gt["bad_records"] if b["stream"] == stream}


def test_ticks_are_cam0_frames(run):
    gt, a = run["gt"], run["aligned"]
    frames = gt["streams"]["cam0"]["frames"]
    assert a["tick_ns"].tolist() == frames["t_true_ns"]
    assert a["tick_pos"].tolist() == frames["pos"]
    assert (a["cam0__status"] == "ok").all() and (a["cam0__dt_ns"] == 0).all()
    assert a["bucket"].nunique() >= 3          # really bucketed


def test_cam1_nearest_matches_ground_truth(run):
    gt, a = run["gt"], run["aligned"]
    f = gt["streams"]["cam1"]["frames"]
    bad = {int(p.split("=")[1]) for p in bad_positions(gt, "cam1")}
    pos = np.array([p for p in f["pos"] if p not in bad])
    t_true = np.array([t for p, t in zip(f["pos"], f["t_true_ns"]) if p not in bad])
    tol = 25_000_000
    for tick, got_pos, status, t_ns in zip(a["tick_ns"], a["cam1__pos"], a["cam1__status"],
                                           a["cam1__t_ns"]):
        d = np.abs(t_true - tick)
        j = int(np.argmin(d))
        if d[j] <= tol:
            assert status == "ok" and got_pos == pos[j], (tick, got_pos, pos[j])
            assert abs(t_ns - t_true[j]) <= 1       # the declared clock maps device -> true
        else:
            assert status != "ok" and np.isnan(got_pos)


def test_imu_interpolation_matches_ground_truth(run, tmp_path):
    import pandas as pd
    gt, a = run["gt"], run["aligned"]
    rows = gt["streams"]["imu"]["rows"]
    bad = {int(p.split("=")[1]) for p in bad_positions(gt, "imu")}
    raw = pd.read_csv(run["tmp"] / "rec" / "imu.csv", dtype=str)
    keep = [i for i in range(len(raw)) if i not in bad]
    t_true = dict(zip(rows["pos"], rows["t_true_ns"]))
    t = np.array([t_true[i] for i in keep], np.int64)
    ax = raw["ax"].iloc[keep].astype(float).to_numpy()
    order = np.argsort(t, kind="stable")
    t, ax = t[order], ax[order]
    ticks = a["tick_ns"].to_numpy()
    ok = a["imu__status"] == "ok"
    assert ok.mean() > 0.95
    expect = np.interp(ticks[ok], t, ax)
    assert np.allclose(a.loc[ok, "imu__ax"], expect, atol=1e-6)
    assert a.loc[~ok, "imu__ax"].isna().all()


def test_mic_window_is_the_right_sample_range(run):
    gt, a = run["gt"], run["aligned"]
    mic = gt["streams"]["mic"]
    model = clock(gt, "mic")
    sr = mic["sample_rate"]
    ok = a["mic__status"] == "ok"
    assert ok.mean() > 0.9
    t0 = a.loc[ok, "tick_ns"].to_numpy() - 100_000_000
    dev = model.to_dev(t0)
    expect = np.rint((dev - mic["first_sample_t_dev_ns"]) * sr / 1e9)
    assert np.abs(a.loc[ok, "mic__sample_start"].to_numpy() - expect).max() <= 1
    span = a.loc[ok, "mic__sample_end"] - a.loc[ok, "mic__sample_start"]
    assert (np.abs(span - 0.2 * sr * (1 + mic["clock"]["drift_ppm"] * -1e-6)) <= 2).all()
    assert (a.loc[ok, "mic__sample_rate"] == sr).all()


def test_transcript_overlap(run):
    gt, a = run["gt"], run["aligned"]
    cues = gt["streams"]["transcript"]["cues"]
    bad = {int(p.split("=")[1]) for p in bad_positions(gt, "transcript")}
    for tick, got in zip(a["tick_ns"], a["transcript__cues"]):
        expect = [p for p, s, e in zip(cues["pos"], cues["t_true_ns"], cues["t_end_true_ns"])
                  if p not in bad and s <= tick <= e]
        assert list(got if got is not None else []) == expect


def test_every_bad_record_is_a_dead_letter_with_its_stage(run):
    gt, d = run["gt"], run["dead"]
    expect = {(b["stream"], b["position"], b["stage"], b["reason"]) for b in gt["bad_records"]}
    got = set(zip(d["stream_id"], d["position"], d["stage"], d["reason"]))
    assert got == expect
    assert (d["run_id"] == "e2e-run").all()
    assert d["message"].str.len().gt(10).all()


def test_accounting_balances_and_summary_is_written(run):
    s = run["summary"]
    assert s["accounting"] and all(v["balanced"] for v in s["accounting"].values())
    assert s["aligned_rows"] == len(run["aligned"])
    on_disk = json.loads((run["tmp"] / "out" / "summary.json").read_text())
    assert on_disk["run_id"] == "e2e-run"


def test_parquet_metadata_carries_alignment_parameters(run):
    f = next((run["tmp"] / "out" / "aligned").glob("*/part-*.parquet"))
    meta = json.loads(pq.read_schema(f).metadata[b"mmalign"])
    assert meta["sessions"]["demo-001"]["policies"]["cam1"]["tolerance_ms"] == 25.0
    assert meta["clocks"]["demo-001/mic"]["drift_ppm"] == pytest.approx(40.0)


def test_rerun_replaces_never_duplicates(run):
    before = sorted(p.name for p in (run["tmp"] / "out" / "aligned").rglob("*.parquet"))
    backfill.run([run["manifest"]], run["tmp"] / "out", run_id="e2e-rerun")
    after = sorted(p.name for p in (run["tmp"] / "out" / "aligned").rglob("*.parquet"))
    assert before == after
    assert len(read_aligned(run["tmp"] / "out" / "aligned")) == len(run["aligned"])
    d = read_dead_letters(run["tmp"] / "out" / "deadletter").to_pandas()
    assert len(d) == len(run["dead"]) and (d["run_id"] == "e2e-rerun").all()


def test_cli_backfill_as_a_user_runs_it(run, tmp_path):
    p = run_mmalign("backfill", "--manifest", str(run["manifest"]), "--out", str(tmp_path),
                    "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["aligned_rows"] == len(run["aligned"]) and s["dead_letters"] == len(run["dead"])


def test_cli_bad_manifest_is_exit_2_with_one_sentence(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("session: x\nstreams: []\nalignment: {ticks: {rate_hz: 10}}\n")
    p = run_mmalign("backfill", "--manifest", str(m), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert str(m) in p.stderr and "streams" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def _variant(src_manifest: Path, dest: Path, **alignment) -> Path:
    import yaml
    m = yaml.safe_load(src_manifest.read_text())
    m["alignment"].update(alignment.get("top", {}))
    m["alignment"]["policies"].update(alignment.get("policies", {}))
    m["allowed_roots"] = [str(src_manifest.parent)]
    m["calibration"] = str(src_manifest.parent / m["calibration"])
    m["streams"] = [{**s, "files": [str(src_manifest.parent / f) for f in s["files"]]}
                    for s in m["streams"]]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.yaml").write_text(yaml.safe_dump(m))
    return dest / "manifest.yaml"


def test_bucketed_join_equals_one_bucket_join(run, tmp_path):
    """Exact at bucket edges: 3 s buckets give the same rows as one 40 s bucket, for every
    policy, including one-to-one association of cam1 (wide tolerance: chains cross edges)."""
    policies = {"cam1": {"policy": "one_to_one", "tolerance_ms": 40.0},
                "imu": {"policy": "interpolate", "max_gap_ms": 20.0}}
    small = _variant(run["manifest"], tmp_path / "small", top={"bucket_s": 3.0},
                     policies=policies)
    big = _variant(run["manifest"], tmp_path / "big", top={"bucket_s": 40.0},
                   policies=policies)
    backfill.run([small], tmp_path / "o_small")
    backfill.run([big], tmp_path / "o_big")
    a = read_aligned(tmp_path / "o_small" / "aligned").drop_columns(["bucket"])
    b = read_aligned(tmp_path / "o_big" / "aligned").drop_columns(["bucket"])
    assert a.num_rows == b.num_rows == len(run["aligned"])
    assert len(read_aligned(tmp_path / "o_small" / "aligned").column("bucket").unique()) > 3
    assert set(a.column_names) == set(b.column_names)
    for c in a.column_names:
        assert a.column(c).to_pylist() == b.column(c).to_pylist(), c
    st = a.column("cam1__status").to_pylist()
    # cam1 runs at 20 fps against 30 fps ticks: each frame is used once, the rest are "taken"
    cam1_frames = len(run["gt"]["streams"]["cam1"]["frames"]["pos"])   # valid frames only
    assert "not_local" not in st and "taken" in st
    assert cam1_frames - 2 <= st.count("ok") <= cam1_frames


def test_approximate_time_sets_as_ticks(run, tmp_path):
    """Ticks = approximate-time sets of cam1 and imu: each member used once, span bounded."""
    m = _variant(run["manifest"], tmp_path / "sets",
                 top={"ticks": {"sets": {"streams": ["cam1", "imu"], "max_span_ms": 3.0,
                                         "queue_size": 32}}})
    summary = backfill.run([m], tmp_path / "o")
    a = read_aligned(tmp_path / "o" / "aligned").to_pandas()
    assert summary["aligned_rows"] == len(a) > 200
    span = (a["cam1__t_ns"] - a["imu__t_ns"]).abs()
    assert (span <= 3_000_000).all()
    assert a["cam1__pos"].is_unique and a["imu__pos"].is_unique
    assert (a["tick_ns"] == a[["cam1__t_ns", "imu__t_ns"]].max(axis=1)).all()
    assert a["tick_ns"].is_monotonic_increasing
    # the other streams are joined to the set ticks by their policies
    assert (a["mic__status"] == "ok").mean() > 0.9
    # every cam1 frame within 2.5 ms of an IMU sample (200 Hz) forms a set
    gt = run["gt"]
    cam1 = np.array(gt["streams"]["cam1"]["frames"]["t_true_ns"])
    imu = np.sort(np.array(gt["streams"]["imu"]["rows"]["t_true_ns"]))
    j = np.clip(np.searchsorted(imu, cam1), 1, len(imu) - 1)
    near = np.minimum(np.abs(imu[j] - cam1), np.abs(imu[j - 1] - cam1))
    assert len(a) >= int((near <= 2_500_000).sum()) - 3
