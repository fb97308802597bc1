"""The aligned dataset on disk: Parquet, partitioned by session, one file per time bucket.

    OUT/aligned/session_id=<session>/part-b<bucket>.parquet   (+ _alignment.json per session)

Names are deterministic, so a rerun or a replayed streaming window *replaces* a file, never
adds a second copy. Each file is written to a temporary name and renamed into place. A batch
run writes into a staging folder that is committed whole (transforms/io/commit.py), so a
rerun with a different bucket layout leaves no stale parts.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.schemas.layout import PARTITION_PREFIX, atomic_write_table, session_dir, session_of
from mmalign.transforms import metrics
from mmalign.transforms.metrics import SINK


def part_name(bucket: int) -> str:
    return f"part-b{bucket:+012d}.parquet"


def part_key(path: str | Path) -> tuple[str, int]:
    """(session, bucket) of a bucket file's path (the inverse of ``write_bucket``'s name)."""
    p = Path(path)
    return session_of(p.parent), int(p.name[len("part-b"):-len(".parquet")])


def write_bucket(table: pa.Table, root: str | Path, session_id: str, bucket: int,
                 metadata: dict | None = None) -> str:
    return str(atomic_write_table(table, session_dir(root, session_id) / part_name(bucket),
                                  metadata))


def read_aligned(root: str | Path, session_id: str | None = None) -> pa.Table:
    """The aligned dataset (or one session of it) as one table sorted by session and tick."""
    root = Path(root)
    dirs = [session_dir(root, session_id)] if session_id else sorted(
        p for p in root.glob(f"{PARTITION_PREFIX}*") if p.is_dir())
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
