"""The output folder's layout: dataset folders, partition folders, file names, atomic writes.

    OUT/aligned/<session>/part-b<bucket>.parquet     transforms/io/parquet.py
    OUT/deadletter/<session>/deadletters.parquet     deadletter/file_sink.py
    OUT/sync/<session>/sync.json                     schemas/sync.py
    OUT/summary.json                                 pipelines/summary.py
    OUT/.staging/<run>/...                           transforms/io/commit.py

``aligned`` and ``deadletter`` are each one Parquet dataset that any Arrow client reads whole
(``pd.read_parquet("OUT/aligned")``, ``pq.read_table``, polars, DuckDB, Spark with
``recursiveFileLookup``, a Feast FileSource): the session is a column in every file
(``session_id``), never in the folder name, so no reader infers a partition column that
conflicts with it; and every file of a dataset has the same schema (transforms/io/parquet.py
unifies it at each commit). Files and folders whose names start with ``.`` or ``_`` are not
data (Arrow readers skip them). Every file is written under a temporary name in its folder
and renamed into place, so a reader sees the old file or the new one, never half of one.

OUT may be a local folder or an object-store URI (``s3://bucket/out``, ``gs://...``): the
functions here take and return ``pathlib.Path`` for local paths and ``schemas.fs.UriPath``
for URIs. On an object store a file is one object written with one PUT, which a reader sees
whole or not at all (no temporary name: there is no rename).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.schemas.fs import UriPath, as_path, write_table

ALIGNED, DEADLETTER, SYNC = "aligned", "deadletter", "sync"
DATASETS = (ALIGNED, DEADLETTER, SYNC)       # the per-session datasets of a run
SUMMARY = "summary.json"
PARTITION_PREFIX = ""                         # partition folders are named by the session
METADATA_KEY = b"mmalign"                    # Parquet schema metadata key of our JSON


def session_dir(root: str | Path | UriPath, session_id: str) -> Path | UriPath:
    """A dataset's partition folder of one session: ``<root>/<session>``."""
    return as_path(root) / f"{PARTITION_PREFIX}{session_id}"


def session_of(partition: str | Path | UriPath) -> str:
    """The session of a partition folder (the inverse of ``session_dir``)."""
    return as_path(partition).name[len(PARTITION_PREFIX):]


def session_dirs(root: str | Path | UriPath) -> list[Path | UriPath]:
    """The session partition folders of a dataset (hidden and ``_`` folders skipped)."""
    root = as_path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_"))
                  and p.name.startswith(PARTITION_PREFIX))


def atomic_write_table(table: pa.Table, path: Path | UriPath,
                       metadata: dict | None = None) -> Path | UriPath:
    """Write ``table`` as zstd Parquet at ``path`` (``metadata``: JSON under
    ``METADATA_KEY`` in the schema metadata) through a temporary file renamed into place
    (an object store: one PUT)."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    if isinstance(path, UriPath):
        write_table(table, path, compression="zstd")
        return path
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def atomic_write_text(path: Path | UriPath, text: str) -> Path | UriPath:
    """Write ``text`` at ``path`` through ``.<name>.tmp`` renamed into place (an object
    store: one PUT)."""
    path = as_path(path)
    if isinstance(path, UriPath):
        path.write_text(text)
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
