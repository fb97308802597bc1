"""The aligned dataset on disk: Parquet, partitioned by session, one file per time bucket.

    OUT/aligned/<session>/part-b<bucket>.parquet

Names are deterministic, so a rerun or a replayed streaming window *replaces* a file, never
adds a second copy. Each file is written to a temporary name and renamed into place. A batch
run writes into a staging folder that is committed whole (transforms/io/commit.py), so a
rerun with a different bucket layout leaves no stale parts. The root may be an object-store
URI (``s3://``, ``gs://``: ``schemas/fs.py``); each file is then one PUT.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pyarrow as pa

from mmalign.schemas import metrics
from mmalign.schemas.errors import ManifestError
from mmalign.schemas.fs import as_path, copytree, read_schema, read_table
from mmalign.schemas.layout import (
    ALIGNED,
    DEADLETTER,
    SYNC,
    atomic_write_table,
    session_dir,
    session_dirs,
    session_of,
)
from mmalign.schemas.metrics import SINK


def part_name(bucket: int) -> str:
    return f"part-b{bucket:+012d}.parquet"


def part_key(path: str | Path) -> tuple[str, int]:
    """(session, bucket) of a bucket file's path (the inverse of ``write_bucket``'s name)."""
    p = as_path(path)
    return session_of(p.parent), int(p.name[len("part-b"):-len(".parquet")])


def write_bucket(table: pa.Table, root: str | Path, session_id: str, bucket: int,
                 metadata: dict | None = None) -> str:
    return str(atomic_write_table(table, session_dir(root, session_id) / part_name(bucket),
                                  metadata))


class SchemaConflict(ManifestError):
    """Two files of one dataset give a column different types; the message names it."""


def union_schema(schemas) -> pa.Schema:
    """The fields of all ``schemas`` in first-seen order (no file metadata); raises
    ``SchemaConflict`` when a column's type differs between them."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            seen = fields.get(f.name)
            if seen is None:
                fields[f.name] = pa.field(f.name, f.type)
            elif not seen.type.equals(f.type):
                raise SchemaConflict(
                    f"column {f.name!r} is {seen.type} in one part of the aligned dataset and "
                    f"{f.type} in another (e.g. an encoder with another dimension); write this "
                    f"run to another output folder")
    return pa.schema(list(fields.values()))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``schema``, in its order (missing ones all null); the
    table's own schema metadata is kept."""
    cols = [table.column(f.name) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema.with_metadata(table.schema.metadata))


def _same_fields(a: pa.Schema, b: pa.Schema) -> bool:
    return a.remove_metadata().equals(b.remove_metadata())


def part_files(root: str | Path, sessions=None) -> list[Path]:
    """The bucket files of a dataset folder (of ``sessions`` only, if given)."""
    dirs = session_dirs(root)
    if sessions is not None:
        dirs = [d for d in dirs if session_of(d) in set(sessions)]
    return [f for d in dirs for f in sorted(d.glob("part-*.parquet"))]


def rewrite_conforming(files: list[Path], schema: pa.Schema) -> int:
    """Rewrite (atomically) the files whose fields differ from ``schema``; returns how many."""
    n = 0
    for f in files:
        if not _same_fields(read_schema(f), schema):
            t = read_table(f)
            atomic_write_table(conform(t, schema), f)
            n += 1
    return n


def unify_for_commit(out: str | Path, staging: str | Path, sessions: list[str]) -> list[str]:
    """Before a batch commit: give every file the aligned dataset will hold after it one
    schema (the union of all its files' columns, so any Arrow client reads the folder whole).
    The run's staged files are conformed in place; a session of an earlier run whose files lack
    a column is copied into the staging folder conformed (its dead letters and sync results
    unchanged) and returned, so the commit swaps it in with the run's own sessions."""
    out, staging = as_path(out), as_path(staging)
    staged = part_files(staging / ALIGNED)
    others = [d for d in session_dirs(out / ALIGNED) if session_of(d) not in set(sessions)]
    other_files = {d: sorted(d.glob("part-*.parquet")) for d in others}
    schema = union_schema(read_schema(f)
                          for f in staged + [f for fs in other_files.values() for f in fs])
    rewrite_conforming(staged, schema)
    added = []
    for d, files in other_files.items():
        if all(_same_fields(read_schema(f), schema) for f in files):
            continue
        s = session_of(d)
        for f in files:
            atomic_write_table(conform(read_table(f), schema),
                               session_dir(staging / ALIGNED, s) / f.name)
        for dataset in (DEADLETTER, SYNC):
            src = session_dir(out / dataset, s)
            if src.is_dir():
                copytree(src, session_dir(staging / dataset, s))
        added.append(s)
    return added


def read_aligned(root: str | Path, session_id: str | None = None) -> pa.Table:
    """The aligned dataset (or one session of it) as one table sorted by session and tick."""
    root = as_path(root)
    dirs = [session_dir(root, session_id)] if session_id else session_dirs(root)
    tables = [read_table(f) for d in dirs for f in sorted(d.glob("part-*.parquet"))]
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
        with SINK.timed(session=session_id, bucket=bucket):    # time + sampled span
            path = write_bucket(table, self.root, session_id, bucket, self.metadata)
        yield path
