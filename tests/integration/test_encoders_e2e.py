"""End to end: `mmalign backfill` with encoders on a generated recording, embeddings in the
aligned Parquet, read back through Feast (online + point-in-time) and `mmalign features`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mmalign.encoders import audio, sensor
from mmalign.encoders import feature_store as fs
from mmalign.encoders.handlers import load_runner
from mmalign.encoders.stage import encode_table, plan_encoders
from mmalign.pipelines import features_cli
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.manifest import ManifestError, load_manifest
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import run_mmalign
from tests.e2e_checks import assert_online_holds

pytestmark = pytest.mark.slow
STREAMS = ["cam0", "cam0_audio", "cam1", "mic", "transcript", "imu"]
ENCODERS = {"video": {"max_batch_size": 16, "device": "cpu", "warp": True},
            "audio": {"device": "cpu"}, "text": {"device": "cpu"},
            "sensor": {"device": "cpu", "window_ms": 200}, "fusion": "concat",
            "feature_store": {"enabled": True}}


def _mmalign(*args: str) -> subprocess.CompletedProcess:
    return run_mmalign(*args, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _with_encoders(manifest: Path, encoders: dict, name: str) -> Path:
    data = yaml.safe_load(manifest.read_text())
    data["encoders"] = encoders
    out = manifest.with_name(name)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _utc(t) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enc_e2e")
    base = generate_recording(tmp / "rec", seed=2, duration_s=6.0, size=(96, 72), fps=10.0,
                              imu_hz=100.0, session="enc-001")
    manifest = _with_encoders(base, ENCODERS, "manifest.enc.yaml")
    res = _mmalign("backfill", "--manifest", str(manifest), "--out", str(tmp / "out"),
                   "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    table = read_aligned(tmp / "out" / "aligned")
    return {"tmp": tmp, "manifest": manifest, "summary": summary, "table": table,
            "rows": table.to_pylist(), "repo": tmp / "out" / "features"}


def test_embedding_columns_in_the_aligned_parquet(run):
    t, rows = run["table"], run["rows"]
    assert t.num_rows == run["summary"]["aligned_rows"] > 0
    dims = {}
    for s in STREAMS:
        typ = t.schema.field(f"{s}__emb").type
        assert pa.types.is_fixed_size_list(typ) and typ.value_type == pa.float32()
        dims[s] = typ.list_size
    # the defaults: EfficientNet-Lite0 (ImageNet), logmel-stats, MiniLM, sensor-stats (6 ch)
    assert dims == {"cam0": 1280, "cam0_audio": 3 * audio.N_MELS + 1, "cam1": 1280,
                    "mic": 3 * audio.N_MELS + 1, "transcript": 384, "imu": sensor.stats_dim(6)}
    assert t.schema.field("fused__emb").type.list_size == sum(dims.values())
    for r in rows:
        for s in STREAMS:
            ok = r[f"{s}__emb_status"] == "ok"
            has_input = (r["transcript__text"] is not None if s == "transcript"
                         else r[f"{s}__status"] in ("ok", "partial_window"))
            assert ok == has_input, (s, r["tick_ns"], r[f"{s}__emb_status"])
            vec = np.array(r[f"{s}__emb"], np.float32)
            if ok:
                assert np.isfinite(vec).all() and abs(np.linalg.norm(vec) - 1) < 1e-3
                assert r[f"{s}__model_id"].split("@")[1] and len(r[f"{s}__model_id"]) > 17
            else:
                assert np.isnan(vec).all() and r[f"{s}__model_id"] is None
                assert r[f"{s}__emb_status"].startswith("no_input:")
        assert r["fused__mask"] == [r[f"{s}__emb_status"] == "ok" for s in STREAMS]
    # some ticks have text and some do not: both paths ran
    assert {r["transcript__emb_status"] == "ok" for r in rows} == {True, False}
    # accounting still balances: encoders never drop ticks
    assert all(a["balanced"] for a in run["summary"]["accounting"].values())
    assert run["summary"]["counters"]["encode.video.ok"] == 2 * t.num_rows


def test_online_and_point_in_time_reads_equal_the_parquet(run):
    store = fs.load_store(run["repo"])
    rows = run["rows"]
    last = rows[-1]
    assert "fused__emb" in last
    assert_online_holds(fs.read_online(store, ["enc-001"]), last, STREAMS)

    picks = [rows[3], rows[len(rows) // 2], rows[-2]]
    # Feast's timestamp is tick_time (the session's wall-clock start + tick_ns), 1 ms after
    entity = pd.DataFrame({"session_id": ["enc-001"] * 3,
                           "event_timestamp": [_utc(r["tick_time"]) + pd.Timedelta(1, "ms")
                                               for r in picks]})
    df = fs.read_historical(store, entity).sort_values("event_timestamp")
    assert df["tick_ns"].tolist() == [r["tick_ns"] for r in picks]
    for (_, h), r in zip(df.iterrows(), picks):
        for s in STREAMS + ["fused"]:
            np.testing.assert_array_equal(np.asarray(h[f"{s}__emb"], np.float32),
                                          np.array(r[f"{s}__emb"], np.float32))


def test_features_cli(run, capsys):
    rows = run["rows"]
    repo = str(run["repo"])
    assert features_cli.main(["features", "get", "--repo", repo, "--session", "enc-001",
                              "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["tick_ns"] == rows[-1]["tick_ns"]
    np.testing.assert_array_equal(np.array(row["cam0__emb"], np.float32),
                                  np.array(rows[-1]["cam0__emb"], np.float32))
    mid = rows[len(rows) // 2]
    at = _utc(mid["tick_time"]) + pd.Timedelta(10, "ns")
    assert features_cli.main(["features", "get", "--repo", repo, "--session", "enc-001",
                              "--at", str(at.value)]) == 0
    out = capsys.readouterr().out
    assert f"tick_ns {mid['tick_ns']}" in out and "cam1" in out
    assert features_cli.main(["features", "get", "--repo", repo, "--session", "nobody"]) == 1
    assert "no features" in capsys.readouterr().err
    assert features_cli.main(["features", "get", "--repo", str(run["tmp"]), "--session",
                              "enc-001"]) == 2
    assert "feature_store.yaml" in capsys.readouterr().err
    assert features_cli.main(["features", "get", "--repo", repo, "--session", "enc-001",
                              "--at", "yesterday-ish"]) == 2
    assert "ISO-8601" in capsys.readouterr().err
    # a fresh online store filled from the aligned Parquet (offline store) by materialize
    fresh = run["tmp"] / "features_copy"
    shutil.copytree(run["repo"], fresh)
    (fresh / "data" / "online_store.db").unlink()
    assert features_cli.main(["features", "materialize", "--repo", str(fresh)]) == 0
    capsys.readouterr()
    assert features_cli.main(["features", "get", "--repo", str(fresh), "--session", "enc-001",
                              "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == row


def test_failures_keep_the_tick_and_warp_uses_the_homography(run):
    """The stage's kernel on one written bucket: same embeddings as the pipeline; a frame that
    cannot be loaded is NaN + load_failed + a DeadLetter; ``<cam>__H`` warps the frame."""
    m = load_manifest(run["manifest"])
    plan = plan_encoders(m)
    video = [se for se in plan.streams if se.stream_id in ("cam0", "cam1")]
    runners = {se.key: load_runner(se.cfg) for se in video}
    plan = type(plan)(plan.session_id, tuple(video), None)
    t = run["table"]
    bucket = t.filter(pa.compute.equal(t.column("bucket"), t.column("bucket")[0])).slice(0, 6)
    base = bucket.select([c for c in bucket.column_names if "__emb" not in c
                          and "__model_id" not in c and not c.startswith("fused")])
    src = base.column("cam1__src").to_pylist()
    src[2] = str(run["tmp"] / "rec" / "missing.txt")
    n = base.num_rows
    shift = [1.0, 0, 12.0, 0, 1.0, 0, 0, 0, 1.0]
    eye = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    hs = pa.array([eye if i % 2 == 0 else shift for i in range(n)], pa.list_(pa.float64(), 9))
    table = (base.set_column(base.column_names.index("cam1__src"), "cam1__src",
                             pa.array(src, pa.string()))
             .append_column("cam0__H", hs))
    out, dead = encode_table(table, plan, runners, None, run_id="r1")
    assert out.num_rows == n
    st = out.column("cam1__emb_status").to_pylist()
    assert st[2] == "load_failed" and st.count("ok") == n - 1
    assert np.isnan(out.column("cam1__emb")[2].values.to_numpy()).all()
    assert len(dead) == 1 and (dead[0].stage, dead[0].reason, dead[0].position) == (
        "encode", "load_failed", f"frame={base.column('cam1__pos')[2].as_py()}")
    for i in (0, 1, 3):
        np.testing.assert_allclose(out.column("cam1__emb")[i].values.to_numpy(),
                                   bucket.column("cam1__emb")[i].values.to_numpy(),
                                   rtol=1e-5, atol=1e-6)
    cam0 = out.column("cam0__emb")
    for i in range(n):
        same = np.allclose(cam0[i].values.to_numpy(),
                           bucket.column("cam0__emb")[i].values.to_numpy(), atol=1e-5)
        assert same == (i % 2 == 0), i        # identity warp: unchanged; 12 px shift: not


def test_sensor_window_is_the_validated_rows(run):
    m = load_manifest(run["manifest"])
    imu = next(se for se in plan_encoders(m).streams if se.stream_id == "imu")
    rows = imu.ref.sensor_rows(str(run["tmp"] / "rec" / "imu.csv"), imu.channels)
    raw = pd.read_csv(run["tmp"] / "rec" / "imu.csv", dtype=str)
    assert rows.values.shape[1] == 6 and len(rows.pos) <= len(raw)
    k = int(np.searchsorted(np.sort(rows.pos), 50))
    p = int(np.sort(rows.pos)[k])
    w = rows.window(p, p, 100_000_000)              # +-100 ms at 100 Hz
    assert 15 <= len(w) <= 21 and np.isfinite(w).all()
    j = int(np.flatnonzero(rows.pos == p)[0])
    assert any(np.array_equal(r, rows.values[j]) for r in w)


@pytest.mark.parametrize("encoders,words", [
    ({"video": {"source": "torchscript", "path": "nowhere.pt"}},
     ["encoders.video.path", "does not exist"]),
    ({"streams": {"nope": {}}}, ["encoders.streams.nope", "names no stream"]),
    ({"video": {"min_batch_size": 9, "max_batch_size": 4}}, ["encoders.video", "larger"]),
    ({"fusion": "sum"}, ["encoders.fusion"]),
])
def test_bad_encoders_config_is_one_clear_sentence(run, encoders, words):
    manifest = _with_encoders(run["tmp"] / "rec" / "manifest.yaml", encoders, "bad.yaml")
    with pytest.raises(ManifestError) as err:
        plan_encoders(load_manifest(manifest))
    msg = str(err.value)
    assert str(manifest.parent) in msg and "\n" not in msg
    assert all(w in msg for w in words), msg


def test_bad_encoders_config_exits_2(run, tmp_path):
    manifest = _with_encoders(run["tmp"] / "rec" / "manifest.yaml",
                              {"sensor": {"kwargs": {"channels": 2}, "window_ms": -1}},
                              "bad2.yaml")
    res = _mmalign("backfill", "--manifest", str(manifest), "--out", str(tmp_path / "o"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "encoders.sensor.window_ms" in res.stderr.strip().splitlines()[-1]
