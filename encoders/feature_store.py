"""The Feast feature store for per-tick embeddings: definitions (entity = session, offline
source = the aligned Parquet, timestamp = ``tick_time``), a repo with a SQLite (default) or
Redis online store, and write/read helpers through Feast's own API.

The feature view ``tick_embeddings`` has, per encoded stream, ``<s>__emb`` (Array(Float32)),
``<s>__model_id`` and ``<s>__emb_status``, plus ``tick_ns`` and, with fusion, ``fused__emb`` /
``fused__mask``. The online store keeps, per session, the latest tick.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mmalign.deadletter.record import DeadLetter
from mmalign.encoders.fusion import FUSED, MASK, emb_col, model_col, status_col
from mmalign.encoders.stage import plan_encoders
from mmalign.schemas import aligned, metrics
from mmalign.schemas.manifest import ManifestError
from mmalign.schemas.metrics import SINK
from mmalign.transforms.tags import DEAD, MAIN

PROJECT = "mmalign"
VIEW = "tick_embeddings"
ENTITY = "session"
TIMESTAMP = "tick_time"
OnlineStore = Literal["sqlite", "redis"]
_APPLY_LOCK = threading.Lock()


def embedded_streams(path: str | Path) -> tuple[list[str], bool]:
    """(encoded stream ids, has fusion columns) from the columns of the first Parquet file
    at ``path`` (a file or a folder of them, e.g. OUT/aligned)."""
    p = Path(path)
    files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no Parquet files at {path}; run the backfill with encoders "
                                "first")
    names = pq.read_schema(files[0]).names
    streams = aligned.embedded_streams(names)
    if not streams:
        raise ValueError(f"{files[0]} has no <stream>__emb columns; enable encoders in the "
                         "manifest")
    return streams, FUSED in names


def feature_names(streams: Sequence[str], fusion: bool) -> list[str]:
    names = ["tick_ns"]
    for s in streams:
        names += [emb_col(s), model_col(s), status_col(s)]
    if fusion:
        names += [FUSED, MASK]
    return names


def feature_refs(streams: Sequence[str], fusion: bool) -> list[str]:
    return [f"{VIEW}:{n}" for n in feature_names(streams, fusion)]


def feature_definitions(source_path: str | Path, streams: Sequence[str], fusion: bool = False,
                        ttl: timedelta = timedelta(days=36500)):
    """[Entity session, FeatureView tick_embeddings] over the Parquet at ``source_path``."""
    # lazy: feast (an optional extra to be) only where a store is built or read
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Bool, Float32, Int64, String

    session = Entity(name=ENTITY, join_keys=["session_id"], value_type=ValueType.STRING,
                     description="recording session")
    source = FileSource(name=f"{VIEW}_parquet", path=str(source_path),
                        timestamp_field=TIMESTAMP)
    schema = [Field(name="tick_ns", dtype=Int64)]
    for s in streams:
        schema += [Field(name=emb_col(s), dtype=Array(Float32)),
                   Field(name=model_col(s), dtype=String),
                   Field(name=status_col(s), dtype=String)]
    if fusion:
        schema += [Field(name=FUSED, dtype=Array(Float32)), Field(name=MASK, dtype=Array(Bool))]
    view = FeatureView(name=VIEW, entities=[session], ttl=ttl, schema=schema, source=source,
                       online=True, description="per-tick embeddings (model ids alongside)")
    return [session, view]


def repo_yaml(online: OnlineStore = "sqlite", redis_connection: str = "localhost:6379") -> dict:
    """The ``feature_store.yaml`` of a repo: local provider, registry and (SQLite) online
    store under ``data/``, or a Redis online store at ``redis_connection``."""
    if online == "sqlite":
        online_cfg = {"type": "sqlite", "path": "data/online_store.db"}
    elif online == "redis":
        online_cfg = {"type": "redis", "connection_string": redis_connection}
    else:
        raise ValueError(f"online store {online!r} is not one of sqlite, redis")
    return {"project": PROJECT, "provider": "local", "registry": "data/registry.db",
            "online_store": online_cfg, "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3}


def open_store(repo_path: str | Path, source_path: str | Path,
               streams: Sequence[str] | None = None, fusion: bool | None = None,
               online: OnlineStore = "sqlite", redis_connection: str = "localhost:6379"):
    """Write ``repo_path/feature_store.yaml``, apply the definitions, return the FeatureStore.
    Streams and fusion come from the Parquet columns unless given."""
    from feast import FeatureStore  # lazy: feast, see feature_definitions

    if streams is None:
        streams, found = embedded_streams(source_path)
        fusion = found if fusion is None else fusion
    repo = Path(repo_path)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    with _APPLY_LOCK:
        (repo / "feature_store.yaml").write_text(
            yaml.safe_dump(repo_yaml(online, redis_connection), sort_keys=False))
        store = FeatureStore(repo_path=str(repo))
        store.apply(feature_definitions(source_path, list(streams), bool(fusion)))
    return store


def load_store(repo_path: str | Path):
    """The FeatureStore of an applied repo (``open_store`` or ``mmalign backfill`` made it)."""
    from feast import FeatureStore  # lazy: feast, see feature_definitions

    repo = Path(repo_path)
    if not (repo / "feature_store.yaml").is_file():
        raise FileNotFoundError(f"{repo} has no feature_store.yaml; point --repo at the "
                                "feature repo a backfill with feature_store.enabled wrote")
    return FeatureStore(repo_path=str(repo))


def registered_features(store) -> tuple[list[str], bool]:
    """(streams, has fusion) of the registered tick_embeddings view."""
    names = [f.name for f in store.get_feature_view(VIEW).features]
    streams = aligned.embedded_streams(names)
    return streams, FUSED in names


def _absent_as_none(v: list | None) -> list | None:
    """An all-NaN vector (no embedding at that tick) -> None: Feast would store NaN as 0."""
    if v is None or (v and all(isinstance(x, float) and x != x for x in v)):
        return None
    return v


def online_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow rows -> the DataFrame Feast writes: lists as Python lists, nulls and all-NaN
    vectors (absent embeddings) as None."""
    data = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
            data[name] = pd.Series([_absent_as_none(v) for v in col.to_pylist()], dtype=object)
        elif pa.types.is_timestamp(col.type):
            data[name] = col.to_pandas()
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            data[name] = pd.Series(col.to_pylist(), dtype=object)
        else:
            data[name] = col.to_pandas()
    return pd.DataFrame(data)


def latest_online_ticks(store, session_ids: Sequence[str]) -> dict[str, int | None]:
    """The tick_ns each session has in the online store now (None: nothing yet)."""
    got = store.get_online_features(features=[f"{VIEW}:tick_ns"],
                                    entity_rows=[{"session_id": s} for s in session_ids])
    d = got.to_dict()
    return dict(zip(d["session_id"], d["tick_ns"]))


def write_online(store, table: pa.Table) -> int:
    """Write the rows (ticks) newer than what the online store holds per session with
    ``FeatureStore.write_to_online_store``, in tick order; returns how many were written.
    (The SQLite online store overwrites unconditionally, so an older bucket written after a
    newer one must not replace it.)"""
    if table.num_rows == 0:
        return 0
    sessions = sorted(set(table.column("session_id").to_pylist()))
    latest = latest_online_ticks(store, sessions)
    keep = [latest.get(s) is None or t > latest[s] for s, t in
            zip(table.column("session_id").to_pylist(), table.column("tick_ns").to_pylist())]
    rows = table.filter(pa.array(keep)).sort_by([("session_id", "ascending"),
                                                 ("tick_ns", "ascending")])
    if rows.num_rows:
        store.write_to_online_store(VIEW, online_frame(rows))
    return rows.num_rows


def read_online(store, session_ids: Sequence[str], streams: Sequence[str] | None = None,
                fusion: bool | None = None) -> dict[str, list]:
    """The latest features per session from the online store (``get_online_features``).
    Streams and fusion default to the registered view's."""
    if streams is None:
        streams, fusion = registered_features(store)
    return store.get_online_features(
        features=feature_refs(streams, bool(fusion)),
        entity_rows=[{"session_id": s} for s in session_ids]).to_dict()


def read_historical(store, entity_df: pd.DataFrame, streams: Sequence[str] | None = None,
                    fusion: bool | None = None) -> pd.DataFrame:
    """Point-in-time join (``get_historical_features``): for each (session_id,
    event_timestamp) row, the latest tick at or before that time."""
    missing = {"session_id", "event_timestamp"} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}")
    if streams is None:
        streams, fusion = registered_features(store)
    return store.get_historical_features(entity_df=entity_df,
                                         features=feature_refs(streams, bool(fusion))).to_df()


class WriteOnlineFn(beam.DoFn):
    """Path of a written aligned Parquet file -> its ticks in the Feast online store.
    setup() applies the repo once per worker; a failed write becomes a DeadLetter (stage
    "sink") on the ``dead`` output, the Parquet file stays the record of the ticks."""

    def __init__(self, repo: str, source_path: str, streams: Sequence[str], fusion: bool,
                 online: OnlineStore, redis_connection: str, run_id: str = ""):
        self.repo, self.source_path = repo, source_path
        self.streams, self.fusion = list(streams), fusion
        self.online, self.redis_connection, self.run_id = online, redis_connection, run_id
        self.store = None

    def setup(self):
        self.store = open_store(self.repo, self.source_path, self.streams, self.fusion,
                                self.online, self.redis_connection)

    def process(self, path: str):
        names = set(pq.read_schema(path).names)
        cols = ["session_id", "tick_ns", TIMESTAMP] + [
            c for c in feature_names(self.streams, self.fusion)[1:] if c in names]
        try:
            n = write_online(self.store, pq.read_table(path, columns=cols))
        except Exception as e:  # noqa: BLE001 - one bucket's failed write is a dead letter
            SINK.count("failed", modality="online")
            yield beam.pvalue.TaggedOutput(DEAD, DeadLetter.from_exception(
                "sink", e, "online_write_failed", run_id=self.run_id, source_uri=path,
                position="file"))
            return
        SINK.count(metrics.ROWS, n, modality="online")
        yield path


def feature_repo(manifest, out: str | Path) -> Path:
    """The Feast repo a manifest's feature store uses, absolute: ``encoders.feature_store.repo``
    relative to the manifest's folder, or by default ``OUT/features`` with OUT as the user gave
    it (relative to the working folder)."""
    repo = manifest.encoders.feature_store.repo
    if not repo:
        return (Path(out) / "features").resolve()
    p = Path(repo)
    return (p if p.is_absolute() else Path(manifest.base_dir) / p).resolve()


def feature_store_sink(manifests: list, out: str | Path, run_id: str = ""):
    """The online-store sink the manifests ask for (``encoders.feature_store.enabled``), as a
    ParDo over written aligned Parquet paths with a ``dead`` output; None when disabled.
    Sessions that enable it must agree on the repo and the online store."""
    wanted = {}
    for m in manifests:
        enc = m.encoders
        if enc is None or not enc.feature_store.enabled:
            continue
        fs = enc.feature_store
        wanted[m.session] = (str(feature_repo(m, out)), fs.online, fs.redis,
                             enc.fusion != "none")
    if not wanted:
        return None
    if len(set(wanted.values())) > 1:
        raise ManifestError(f"field 'encoders.feature_store' (and 'encoders.fusion') differ "
                            f"between the sessions {sorted(wanted)} of one run; give them one "
                            "feature repo, online store and fusion setting")
    streams: list[str] = []
    for m in manifests:
        plan = plan_encoders(m) if m.session in wanted else None
        for se in plan.streams if plan else ():
            if se.stream_id not in streams:
                streams.append(se.stream_id)
    repo, online, redis, fusion = next(iter(wanted.values()))
    fn = WriteOnlineFn(repo, str(Path(out).resolve() / "aligned"), streams, fusion, online,
                       redis, run_id)
    return beam.ParDo(fn).with_outputs(DEAD, main=MAIN)
