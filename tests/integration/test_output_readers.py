"""The output folder is one dataset every Arrow client reads whole: pandas, pyarrow, polars,
DuckDB and a Feast FileSource get the same rows from OUT/aligned (and OUT/deadletter), also
when sessions of different runs have different streams."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned

pytestmark = pytest.mark.slow
KEY = ["session_id", "tick_ns"]


def _variant(manifest, session: str, keep: set[str]):
    doc = yaml.safe_load(manifest.read_text())
    doc["session"] = session
    doc["streams"] = [s for s in doc["streams"] if s["id"] in keep]
    doc["alignment"]["policies"] = {k: v for k, v in doc["alignment"]["policies"].items()
                                    if k in keep}
    path = manifest.with_name(f"manifest-{session}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readers")
    rec = generate_recording(tmp / "rec", seed=4, duration_s=6.0)
    a = _variant(rec, "s-a", {"cam0", "imu", "mic"})
    b = _variant(rec, "s-b", {"cam0", "cam1", "transcript"})
    c = _variant(rec, "s-c", {"cam0", "cam0_audio"})
    backfill.run([a, b], tmp / "out", run_id="run1")           # two sessions, other streams
    backfill.run([c], tmp / "out", run_id="run2")              # a later run adds a third
    return tmp / "out"


def _norm(df: pd.DataFrame) -> dict[str, list]:
    """Comparable columns: sorted rows, plain Python values, NaN and NaT as None."""
    df = df[sorted(df.columns)].sort_values(KEY).reset_index(drop=True)

    def plain(v):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, float) and math.isnan(v):
            return None
        if v is pd.NaT or v is pd.NA:
            return None
        if isinstance(v, pd.Timestamp):
            return v.value
        if isinstance(v, np.generic):
            return v.item()
        return v

    return {c: [plain(v) for v in df[c].astype(object)] for c in df.columns}


def test_every_file_has_the_one_schema(out):
    files = sorted((out / "aligned").glob("*/part-*.parquet"))
    assert len({f.parent.name for f in files}) == 3
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert len(schemas) == 1
    names = next(iter(schemas)).names
    for s in ("imu__ax", "cam1__pos", "transcript__text", "cam0_audio__sample_start"):
        assert s in names


def test_pandas_pyarrow_polars_duckdb_read_the_same_rows(out):
    import duckdb
    import polars as pl

    root = out / "aligned"
    ours = read_aligned(root).to_pandas()
    assert set(ours["session_id"]) == {"s-a", "s-b", "s-c"} and len(ours) > 300
    want = _norm(ours)
    got = {
        "pandas": pd.read_parquet(root),
        "pyarrow": pq.read_table(root).to_pandas(),
        "polars": pl.scan_parquet(f"{root}/**/*.parquet").collect().to_pandas(),
        "duckdb": duckdb.sql(f"select * from read_parquet('{root}/**/*.parquet')").df(),
    }
    for name, df in got.items():
        assert str(df["session_id"].dtype) in ("object", "string", "str"), name  # no category
        norm = _norm(df)
        assert list(norm) == list(want), name
        for c in want:
            assert norm[c] == want[c], (name, c)


def test_dead_letters_read_whole(out):
    ours = read_dead_letters(out / "deadletter").to_pandas()
    theirs = pd.read_parquet(out / "deadletter")
    assert len(ours) == len(theirs) > 0
    assert sorted(theirs["session_id"]) == sorted(ours["session_id"])


def test_a_time_filter_skips_files(out):
    import pyarrow.dataset as ds

    root = out / "aligned"
    dataset = ds.dataset(root, format="parquet")
    t = read_aligned(root).column("tick_ns").to_numpy()
    lo, hi = int(np.quantile(t, 0.4)), int(np.quantile(t, 0.5))
    flt = (ds.field("tick_ns") >= lo) & (ds.field("tick_ns") < hi)
    frags = list(dataset.get_fragments())
    total = sum(f.num_row_groups for f in frags)
    kept = sum(f.subset(filter=flt).num_row_groups for f in frags)
    assert 0 < kept < total                        # tick_ns statistics prune row groups
    got = dataset.to_table(filter=flt).column("tick_ns").to_numpy()
    assert sorted(got.tolist()) == sorted(x for x in t.tolist() if lo <= x < hi)


def test_feast_file_source_reads_the_same_rows(out, tmp_path):
    feast = pytest.importorskip("feast")
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    root = out / "aligned"
    session = Entity(name="session", join_keys=["session_id"], value_type=ValueType.STRING)
    source = FileSource(name="aligned", path=str(root), timestamp_field="tick_time")
    view = FeatureView(name="imu_ticks", entities=[session], ttl=timedelta(days=36500),
                       schema=[Field(name="tick_ns", dtype=Int64),
                               Field(name="imu__ax", dtype=Float64)], source=source,
                       online=False)
    config = RepoConfig(project="readers", provider="local", registry=str(tmp_path / "reg.db"),
                        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
                        entity_key_serialization_version=3)
    store = FeatureStore(config=config)
    store.apply([session, view])
    ours = read_aligned(root).to_pandas()
    a = ours[ours["session_id"] == "s-a"]
    entities = pd.DataFrame({"session_id": a["session_id"], "event_timestamp": a["tick_time"]})
    got = store.get_historical_features(entity_df=entities,
                                        features=["imu_ticks:tick_ns", "imu_ticks:imu__ax"]
                                        ).to_df().sort_values("tick_ns")
    assert got["tick_ns"].tolist() == a["tick_ns"].tolist()
    np.testing.assert_array_equal(got["imu__ax"].to_numpy(dtype=float),
                                  a["imu__ax"].to_numpy(dtype=float))
    assert feast.__version__
