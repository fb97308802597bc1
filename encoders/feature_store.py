"""The Feast feature store for per-tick embeddings: definitions (entity = session, offline
source = the embeddings Parquet, event_timestamp = tick time), a store with a SQLite (default)
or Redis online store, and write/read helpers through Feast's own API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from encoders.fusion import FUSED, MASK, column_prefix

PROJECT = "mmalign"
VIEW = "tick_embeddings"
ENTITY = "session"
OnlineStore = Literal["sqlite", "redis"]


def streams_from_parquet(path: str | Path) -> tuple[dict[str, int], str | None]:
    """(streams -> dim, fusion) from the schema metadata ``embeddings_schema`` writes.
    ``path`` is a Parquet file or a folder of them."""
    p = Path(path)
    files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no Parquet files under {path}; write the embeddings first")
    meta = pq.read_schema(files[0]).metadata or {}
    if b"mmalign.streams" not in meta:
        raise ValueError(f"{files[0]} has no mmalign.streams metadata; write it with "
                         "encoders.fusion.embeddings_table")
    fusion = meta.get(b"mmalign.fusion", b"").decode() or None
    return json.loads(meta[b"mmalign.streams"]), fusion


def feature_names(streams: dict[str, int], fusion: str | None) -> list[str]:
    names = ["tick_ns"]
    for s in streams:
        c = column_prefix(s)
        names += [f"{c}_emb", f"{c}_model_id", f"{c}_missing"]
    if fusion:
        names += [FUSED, MASK]
    return names


def feature_refs(streams: dict[str, int], fusion: str | None) -> list[str]:
    return [f"{VIEW}:{n}" for n in feature_names(streams, fusion)]


def feature_definitions(source_path: str | Path, streams: dict[str, int],
                        fusion: str | None = None, ttl: timedelta = timedelta(days=3650)):
    """[Entity session, FeatureView tick_embeddings] over the Parquet at ``source_path``."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Bool, Float32, Int64, String

    session = Entity(name=ENTITY, join_keys=["session_id"], value_type=ValueType.STRING,
                     description="recording session")
    source = FileSource(name=f"{VIEW}_parquet", path=str(source_path),
                        timestamp_field="event_timestamp")
    schema = [Field(name="tick_ns", dtype=Int64)]
    for s in streams:
        c = column_prefix(s)
        schema += [Field(name=f"{c}_emb", dtype=Array(Float32)),
                   Field(name=f"{c}_model_id", dtype=String),
                   Field(name=f"{c}_missing", dtype=String)]
    if fusion:
        schema += [Field(name=FUSED, dtype=Array(Float32)), Field(name=MASK, dtype=Array(Bool))]
    view = FeatureView(name=VIEW, entities=[session], ttl=ttl, schema=schema, source=source,
                       online=True, description="per-tick embeddings (model ids alongside)")
    return [session, view]


def repo_config(repo_path: str | Path, online: OnlineStore = "sqlite",
                redis_connection: str = "localhost:6379"):
    """A local-provider RepoConfig: registry + SQLite online store under ``repo_path/data``
    or a Redis online store at ``redis_connection`` ("host:port[,password=...]")."""
    from feast.repo_config import RepoConfig

    data = Path(repo_path) / "data"
    data.mkdir(parents=True, exist_ok=True)
    if online == "sqlite":
        online_cfg = {"type": "sqlite", "path": str(data / "online_store.db")}
    elif online == "redis":
        online_cfg = {"type": "redis", "connection_string": redis_connection}
    else:
        raise ValueError(f"online store {online!r} is not one of sqlite, redis")
    return RepoConfig(project=PROJECT, provider="local", registry=str(data / "registry.db"),
                      online_store=online_cfg, offline_store={"type": "file"},
                      entity_key_serialization_version=3, repo_path=Path(repo_path))


def open_store(repo_path: str | Path, source_path: str | Path,
               streams: dict[str, int] | None = None, fusion: str | None = None,
               online: OnlineStore = "sqlite", redis_connection: str = "localhost:6379"):
    """A FeatureStore with the tick_embeddings definitions applied. Streams and fusion come
    from the Parquet metadata unless given."""
    from feast import FeatureStore

    if streams is None:
        streams, fusion = streams_from_parquet(source_path)
    store = FeatureStore(config=repo_config(repo_path, online, redis_connection))
    store.apply(feature_definitions(source_path, streams, fusion))
    return store


def _online_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow rows -> the DataFrame Feast writes: lists as Python lists, nulls as None."""
    data = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_fixed_size_list(col.type):
            data[name] = pd.Series(col.to_pylist(), dtype=object)
        elif name == "event_timestamp":
            data[name] = col.to_pandas()
        else:
            data[name] = pd.Series(col.to_pylist(), dtype=object if
                                   pa.types.is_string(col.type) else None)
    return pd.DataFrame(data)


def write_online(store, table: pa.Table) -> int:
    """Write each row (one session tick) to the online store with
    ``FeatureStore.write_to_online_store``; returns the number of rows written. The online
    store keeps, per session, the row with the latest event timestamp."""
    if table.num_rows == 0:
        return 0
    latest = (table.sort_by([("session_id", "ascending"), ("tick_ns", "ascending")]))
    store.write_to_online_store(VIEW, _online_frame(latest))
    return table.num_rows


def read_online(store, session_ids: Sequence[str], streams: dict[str, int],
                fusion: str | None = None) -> dict[str, list]:
    """The latest features per session from the online store (``get_online_features``)."""
    return store.get_online_features(
        features=feature_refs(streams, fusion),
        entity_rows=[{"session_id": s} for s in session_ids]).to_dict()


def read_historical(store, entity_df: pd.DataFrame, streams: dict[str, int],
                    fusion: str | None = None) -> pd.DataFrame:
    """Point-in-time join (``get_historical_features``): for each (session_id,
    event_timestamp) row, the latest tick at or before that time."""
    missing = {"session_id", "event_timestamp"} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}")
    return store.get_historical_features(entity_df=entity_df,
                                         features=feature_refs(streams, fusion)).to_df()
