"""Per-tick embedding rows: each stream's embedding + model id, an optional fused vector
(concatenation or mean of the present streams) with a presence mask, and the Arrow/Parquet
schema of those rows (embeddings as fixed-size lists of float32)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa

from encoders.handlers import Embedding

Fusion = Literal["concat", "mean"]
FUSED, MASK = "fused_emb", "fused_mask"


def column_prefix(stream_id: str) -> str:
    """Column-safe stream name: characters other than letters, digits and _ become _."""
    return re.sub(r"\W", "_", stream_id)


def fused_dim(dims: Sequence[int], how: Fusion) -> int:
    if how == "concat":
        return int(sum(dims))
    if len(set(dims)) != 1:
        raise ValueError(f"mean fusion needs equal embedding dimensions, got {list(dims)}; "
                         "use fusion: concat")
    return int(dims[0])


def fuse(per_stream: Sequence[np.ndarray], how: Fusion) -> tuple[np.ndarray, np.ndarray]:
    """Fuse M streams over N ticks. ``per_stream[i]`` is float32 (N, D_i), a NaN row where the
    stream is missing. Returns (fused (N, D) float32, mask (N, M) bool). Concat puts zeros in
    a missing stream's slot; mean averages the present streams (NaN row if none present)."""
    if not per_stream:
        raise ValueError("fusion needs at least one stream")
    n = per_stream[0].shape[0]
    if any(a.ndim != 2 or a.shape[0] != n for a in per_stream):
        raise ValueError("every stream needs an (N, D) array with the same N")
    mask = np.stack([np.isfinite(a).all(axis=1) for a in per_stream], axis=1)
    dim = fused_dim([a.shape[1] for a in per_stream], how)
    if how == "concat":
        parts = [np.where(mask[:, [i]], a, 0.0) for i, a in enumerate(per_stream)]
        return np.concatenate(parts, axis=1).astype(np.float32), mask
    stack = np.stack([np.where(mask[:, [i]], a, 0.0) for i, a in enumerate(per_stream)])
    count = mask.sum(axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        fused = np.where(count > 0, stack.sum(axis=0) / count, np.nan)
    return fused.astype(np.float32).reshape(n, dim), mask


def embeddings_schema(streams: dict[str, int], fusion: Fusion | None = None) -> pa.Schema:
    """Arrow schema of the per-tick rows. ``streams`` maps stream id -> embedding dim.
    Columns: session_id, tick_ns, event_timestamp (timestamp[ns, UTC] = tick time), per
    stream ``<s>_emb`` (fixed_size_list<float32>[dim]; all-NaN when the stream is absent,
    because pyarrow 25 cannot read back null fixed-size-list slots from Parquet),
    ``<s>_model_id`` (null when absent), ``<s>_missing`` (the reason, null when present);
    with fusion, ``fused_emb`` and ``fused_mask`` (one bool per stream, ``streams`` order)."""
    fields = [pa.field("session_id", pa.string(), nullable=False),
              pa.field("tick_ns", pa.int64(), nullable=False),
              pa.field("event_timestamp", pa.timestamp("ns", tz="UTC"), nullable=False)]
    for s, dim in streams.items():
        c = column_prefix(s)
        fields += [pa.field(f"{c}_emb", pa.list_(pa.float32(), int(dim)), nullable=False),
                   pa.field(f"{c}_model_id", pa.string()),
                   pa.field(f"{c}_missing", pa.string())]
    if fusion is not None:
        dim = fused_dim(list(streams.values()), fusion)
        fields += [pa.field(FUSED, pa.list_(pa.float32(), dim), nullable=False),
                   pa.field(MASK, pa.list_(pa.bool_(), len(streams)), nullable=False)]
    meta = {"mmalign.streams": json.dumps(streams), "mmalign.fusion": fusion or ""}
    return pa.schema(fields, metadata=meta)


def _fixed_list(mat: np.ndarray, typ: pa.DataType) -> pa.Array:
    values = pa.array(np.ascontiguousarray(mat).reshape(-1), type=typ.value_type)
    return pa.FixedSizeListArray.from_arrays(values, mat.shape[1])


def embeddings_table(embeddings: Iterable[Embedding], streams: dict[str, int],
                     fusion: Fusion | None = None) -> pa.Table:
    """Embedding records -> one row per (session, tick), sorted, in ``embeddings_schema``.
    A stream with no record at a tick is NaN with reason "no_embedding"; records of streams
    not in ``streams`` or with the wrong dim raise ValueError."""
    ticks: dict[tuple[str, int], dict[str, Embedding]] = {}
    for e in embeddings:
        if e.stream_id not in streams:
            raise ValueError(f"embedding of stream {e.stream_id!r} not in streams "
                             f"{sorted(streams)}")
        if e.vector is not None and e.vector.shape != (streams[e.stream_id],):
            raise ValueError(f"stream {e.stream_id!r} embedding has shape {e.vector.shape}, "
                             f"expected ({streams[e.stream_id]},)")
        ticks.setdefault((e.session_id, int(e.tick_ns)), {})[e.stream_id] = e
    keys = sorted(ticks)
    schema = embeddings_schema(streams, fusion)
    n = len(keys)
    tick_ns = np.array([k[1] for k in keys], dtype=np.int64)
    cols: dict[str, pa.Array] = {
        "session_id": pa.array([k[0] for k in keys], pa.string()),
        "tick_ns": pa.array(tick_ns),
        "event_timestamp": pa.array(tick_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
    }
    mats = []
    for s, dim in streams.items():
        c = column_prefix(s)
        mat = np.full((n, dim), np.nan, np.float32)
        ids, missing = [None] * n, ["no_embedding"] * n
        for i, k in enumerate(keys):
            e = ticks[k].get(s)
            if e is None:
                continue
            if e.vector is None:
                missing[i] = e.missing_reason or "missing"
            else:
                mat[i], ids[i], missing[i] = e.vector, e.model_id, None
        cols[f"{c}_emb"] = _fixed_list(mat, schema.field(f"{c}_emb").type)
        cols[f"{c}_model_id"] = pa.array(ids, pa.string())
        cols[f"{c}_missing"] = pa.array(missing, pa.string())
        mats.append(mat)
    if fusion is not None:
        fused, mask = fuse(mats, fusion) if n else (
            np.zeros((0, schema.field(FUSED).type.list_size), np.float32),
            np.zeros((0, len(streams)), bool))
        cols[FUSED] = _fixed_list(fused, schema.field(FUSED).type)
        cols[MASK] = _fixed_list(mask, schema.field(MASK).type)
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


class EmbeddingsToTable(beam.PTransform):
    """Embedding PCollection -> one Arrow table per session (all its ticks), ready for the
    Parquet and feature-store sinks."""

    def __init__(self, streams: dict[str, int], fusion: Fusion | None = None):
        super().__init__()
        self.streams, self.fusion = dict(streams), fusion

    def expand(self, pcoll):
        streams, fusion = self.streams, self.fusion
        return (pcoll
                | "BySession" >> beam.Map(lambda e: (e.session_id, e))
                | "Group" >> beam.GroupByKey()
                | "Table" >> beam.MapTuple(lambda _, es: embeddings_table(es, streams, fusion)))
