"""The aligned dataset on disk: Parquet, partitioned by session, one file per time bucket.

    OUT/aligned/session_id=<session>/part-b<bucket>.parquet   (+ _alignment.json per session)

Names are deterministic, so a rerun or a replayed streaming window *replaces* a file, never
adds a second copy. Each file is written to a temporary name and renamed into place. A batch
run writes into a staging folder that is committed whole (transforms/io/commit.py), so a
rerun with a different bucket layout leaves no stale parts.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.transforms import metrics
from mmalign.transforms.metrics import SINK

METADATA_KEY = b"mmalign"


def session_dir(root: str | Path, session_id: str) -> Path:
    return Path(root) / f"session_id={session_id}"


def part_name(bucket: int) -> str:
    return f"part-b{bucket:+012d}.parquet"


def part_key(path: str | Path) -> tuple[str, int]:
    """(session, bucket) of a bucket file's path (the inverse of ``write_bucket``'s name)."""
    p = Path(path)
    return p.parent.name.split("=", 1)[1], int(p.name[len("part-b"):-len(".parquet")])


def atomic_write_table(table: pa.Table, path: Path, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def write_bucket(table: pa.Table, root: str | Path, session_id: str, bucket: int,
                 metadata: dict | None = None) -> str:
    return str(atomic_write_table(table, session_dir(root, session_id) / part_name(bucket),
                                  metadata))


def read_aligned(root: str | Path, session_id: str | None = None) -> pa.Table:
    """The aligned dataset (or one session of it) as one table sorted by session and tick."""
    root = Path(root)
    dirs = [session_dir(root, session_id)] if session_id else sorted(
        p for p in root.glob("session_id=*") if p.is_dir())
    tables = [pq.read_table(f) for d in dirs for f in sorted(d.glob("part-*.parquet"))]
    if not tables:
        return pa.table({})
    t = pa.concat_tables(tables, promote_options="permissive")
    return t.sort_by([("session_id", "ascending"), ("tick_ns", "ascending")])


class WriteAlignedFn(beam.DoFn):
    """((session, bucket), table) -> path of the written Parquet file."""

    def __init__(self, root: str, metadata: dict):
        self.root = root
        self.metadata = metadata

    def process(self, element):
        (session_id, bucket), table = element
        SINK.count(metrics.ROWS, table.num_rows, modality="aligned")
        yield write_bucket(table, self.root, session_id, bucket, self.metadata)
