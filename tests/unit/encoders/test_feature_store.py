"""The Feast feature store through Feast's own SDK: SQLite online store, point-in-time
historical reads over the embeddings Parquet, and (slow) a real redis-server online store."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmalign.encoders import feature_store as fs
from mmalign.encoders.fusion import embeddings_table
from mmalign.encoders.handlers import Embedding

T0 = 1_700_000_000_000_000_000
STREAMS = {"cam0": 4, "mic": 3}


def _table():
    rng = np.random.default_rng(0)
    embs = []
    for sess in ("s1", "s2"):
        for k in range(5):
            tick = T0 + k * 100_000_000
            embs.append(Embedding(sess, "cam0", "video", tick,
                                  rng.standard_normal(4).astype(np.float32), "video-cnn@ab", 4))
            if k != 2:
                embs.append(Embedding(sess, "mic", "audio", tick,
                                      rng.standard_normal(3).astype(np.float32), "mel@cd", 3))
    return embeddings_table(embs, STREAMS, "concat")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fs")
    table = _table()
    (root / "embeddings").mkdir()
    pq.write_table(table, root / "embeddings" / "session=all.parquet")
    return root, table


def _row(table, session, tick):
    rows = table.to_pylist()
    return next(r for r in rows if r["session_id"] == session and r["tick_ns"] == tick)


def _check_online(store, table):
    last = T0 + 4 * 100_000_000
    early = table.filter(pc.less(table.column("tick_ns"), T0 + 300_000_000))
    assert fs.write_online(store, early) == early.num_rows
    got = fs.read_online(store, ["s1"])          # streams/fusion from the registered view
    assert got["tick_ns"] == [T0 + 200_000_000]
    assert got["mic__emb"] == [None] and got["mic__emb_status"] == ["no_embedding"]
    assert fs.write_online(store, table) == 4    # only the ticks newer than what is online
    assert fs.write_online(store, early) == 0    # an older bucket never replaces a newer one
    got = fs.read_online(store, ["s1", "s2", "unknown"], list(STREAMS), True)
    assert got["tick_ns"] == [last, last, None]
    for i, s in enumerate(("s1", "s2")):
        want = _row(table, s, last)
        np.testing.assert_allclose(got["cam0__emb"][i], want["cam0__emb"], rtol=1e-6)
        np.testing.assert_allclose(got["fused__emb"][i], want["fused__emb"], rtol=1e-6)
        assert got["cam0__model_id"][i] == "video-cnn@ab"
        assert got["mic__model_id"][i] == "mel@cd"
        assert got["fused__mask"][i] == [True, True]
    assert got["cam0__emb"][2] is None


def test_sqlite_online_write_and_read(data, tmp_path):
    root, table = data
    store = fs.open_store(tmp_path / "repo", root / "embeddings")
    assert store.config.online_store.type == "sqlite"
    _check_online(store, table)


def test_historical_point_in_time(data, tmp_path):
    root, table = data
    store = fs.open_store(tmp_path / "repo", root / "embeddings")
    entity_df = pd.DataFrame({
        "session_id": ["s1", "s1", "s2", "s2"],
        "event_timestamp": pd.to_datetime([T0 + 150_000_000, T0 + 250_000_000, T0,
                                           T0 + 10**12], utc=True)})
    df = fs.read_historical(store, entity_df)
    df = df.sort_values(["session_id", "event_timestamp"]).reset_index(drop=True)
    # latest tick at or before each requested time
    assert df["tick_ns"].tolist() == [T0 + 100_000_000, T0 + 200_000_000, T0,
                                      T0 + 400_000_000]
    row = df.iloc[1]                       # s1 at tick 2: the mic had no embedding
    assert row["mic__emb_status"] == "no_embedding" and np.isnan(row["mic__emb"]).all()
    assert list(row["fused__mask"]) == [True, False]
    np.testing.assert_allclose(row["cam0__emb"],
                               _row(table, "s1", T0 + 200_000_000)["cam0__emb"], rtol=1e-6)
    with pytest.raises(ValueError, match="event_timestamp"):
        fs.read_historical(store, entity_df[["session_id"]])


def test_shipped_feature_repo_definitions(data, monkeypatch):
    root, _ = data
    repo = Path(__file__).resolve().parents[3] / "feature_repo"
    assert (repo / "feature_store.yaml").is_file() and (repo / "feature_store.redis.yaml").is_file()
    monkeypatch.setenv("MMALIGN_ALIGNED_PATH", str(root / "embeddings"))
    defs = runpy.run_path(str(repo / "features.py"))
    view = defs["tick_embeddings"]
    assert defs["STREAMS"] == list(STREAMS) and defs["FUSION"] is True
    assert {f.name for f in view.schema} >= {"cam0__emb", "mic__model_id", "fused__mask"}
    assert view.batch_source.path == str(root / "embeddings")


@pytest.mark.slow
def test_redis_online_store(data, tmp_path, redis_server):
    root, table = data
    store = fs.open_store(tmp_path / "repo", root / "embeddings", online="redis",
                          redis_connection=redis_server.connection)
    assert store.config.online_store.type == "redis"
    _check_online(store, table)


def _manifest_with_store(rec: Path, repo: str | None):
    from mmalign.schemas.manifest import load_manifest

    rec.mkdir(parents=True, exist_ok=True)
    (rec / "imu.csv").write_text("t_ns,ax\n0,0.0\n")
    store = {"enabled": True} if repo is None else {"enabled": True, "repo": repo}
    (rec / "manifest.yaml").write_text(
        "session: s1\nstreams:\n  - {id: imu, modality: sensor, files: [imu.csv], "
        "options: {channels: [ax]}}\n"
        "alignment: {ticks: {anchor: imu}}\n"
        f"encoders: {{sensor: {{}}, feature_store: {store}}}\n")
    return load_manifest(rec / "manifest.yaml")


def test_default_repo_is_out_features_as_given_and_a_manifest_repo_is_its_own(
        tmp_path, monkeypatch):
    """The default repo is OUT/features with OUT as the user typed it (a relative OUT is
    relative to the working folder, not to the recording: `mmalign demo --out out/demo` wrote
    out/demo/recording/out/demo/features); a repo the manifest names is relative to its folder."""
    monkeypatch.chdir(tmp_path)
    default = _manifest_with_store(tmp_path / "rec", None)
    assert fs.feature_repo(default, "out/run") == tmp_path / "out" / "run" / "features"
    named = _manifest_with_store(tmp_path / "rec2", "repo")
    assert fs.feature_repo(named, "out/run") == tmp_path / "rec2" / "repo"
    assert fs.feature_store_sink([default], "out/run") is not None
