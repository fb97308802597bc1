"""Per-tick embedding rows: each stream's embedding + model id, an optional fused vector
(concatenation or mean of the present streams) with a presence mask, and the Arrow/Parquet
columns of those rows (embeddings as fixed-size lists of float32)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from mmalign.encoders.handlers import Embedding
from mmalign.schemas import aligned

Fusion = Literal["concat", "mean"]
FUSED, MASK = aligned.column(aligned.FUSED, aligned.EMB), aligned.column(aligned.FUSED,
                                                                         aligned.MASK)
OK = aligned.OK


def emb_col(stream_id: str) -> str:
    """Column of a stream's embedding; ``model_col``/``status_col`` hold its model id and
    status (schemas/aligned.py)."""
    return aligned.column(stream_id, aligned.EMB)


def model_col(stream_id: str) -> str:
    return aligned.column(stream_id, aligned.MODEL_ID)


def status_col(stream_id: str) -> str:
    return aligned.column(stream_id, aligned.EMB_STATUS)


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


def stream_fields(stream_id: str, dim: int) -> list[pa.Field]:
    """``<s>__emb`` fixed_size_list<float32>[dim] (all-NaN when the stream has no embedding
    at a tick: pyarrow 25 cannot read null fixed-size-list slots back from Parquet),
    ``<s>__model_id`` (null when absent), ``<s>__emb_status`` ("ok" or why not)."""
    return [pa.field(emb_col(stream_id), pa.list_(pa.float32(), int(dim)), nullable=False),
            pa.field(model_col(stream_id), pa.string()),
            pa.field(status_col(stream_id), pa.string(), nullable=False)]


def fusion_fields(dims: Sequence[int], how: Fusion) -> list[pa.Field]:
    """``fused__emb`` (fixed_size_list<float32>) and ``fused__mask`` (one bool per stream)."""
    return [pa.field(FUSED, pa.list_(pa.float32(), fused_dim(dims, how)), nullable=False),
            pa.field(MASK, pa.list_(pa.bool_(), len(dims)), nullable=False)]


def embeddings_schema(streams: dict[str, int], fusion: Fusion | None = None) -> pa.Schema:
    """Arrow schema of standalone per-tick embedding rows. ``streams`` maps stream id -> dim.
    Columns: session_id, tick_ns, tick_time (timestamp[ns, UTC]), ``stream_fields`` per
    stream, ``fusion_fields`` (streams in ``streams`` order) with fusion. The encode stage
    adds the same columns to the aligned table."""
    fields = [pa.field("session_id", pa.string(), nullable=False),
              pa.field("tick_ns", pa.int64(), nullable=False),
              pa.field("tick_time", pa.timestamp("ns", tz="UTC"), nullable=False)]
    for s, dim in streams.items():
        fields += stream_fields(s, dim)
    if fusion is not None:
        fields += fusion_fields(list(streams.values()), fusion)
    meta = {"mmalign.streams": json.dumps(streams), "mmalign.fusion": fusion or ""}
    return pa.schema(fields, metadata=meta)


def fixed_list(mat: np.ndarray, value_type: pa.DataType = pa.float32()) -> pa.Array:
    """(N, D) array -> fixed_size_list<value_type>[D] array of N rows."""
    values = pa.array(np.ascontiguousarray(mat).reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(values, mat.shape[1])


def stream_columns(stream_id: str, mat: np.ndarray, model_ids: Sequence[str | None],
                   status: Sequence[str]) -> dict[str, pa.Array]:
    """The ``stream_fields`` columns from an (N, D) float32 matrix (NaN rows = absent)."""
    return {emb_col(stream_id): fixed_list(mat.astype(np.float32, copy=False)),
            model_col(stream_id): pa.array(list(model_ids), pa.string()),
            status_col(stream_id): pa.array(list(status), pa.string())}


def fusion_columns(mats: Sequence[np.ndarray], how: Fusion) -> dict[str, pa.Array]:
    """The ``fusion_fields`` columns of M streams' (N, D_i) matrices (NaN rows = absent)."""
    n = mats[0].shape[0]
    if n:
        fused, mask = fuse(mats, how)
    else:
        fused = np.zeros((0, fused_dim([m.shape[1] for m in mats], how)), np.float32)
        mask = np.zeros((0, len(mats)), bool)
    return {FUSED: fixed_list(fused), MASK: fixed_list(mask, pa.bool_())}


def embeddings_table(embeddings: Iterable[Embedding], streams: dict[str, int],
                     fusion: Fusion | None = None) -> pa.Table:
    """Embedding records -> one row per (session, tick), sorted, in ``embeddings_schema``.
    A stream with no record at a tick is NaN with status "no_embedding"; records of streams
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
        "tick_time": pa.array(tick_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
    }
    mats = []
    for s, dim in streams.items():
        mat = np.full((n, dim), np.nan, np.float32)
        ids, status = [None] * n, ["no_embedding"] * n
        for i, k in enumerate(keys):
            e = ticks[k].get(s)
            if e is None:
                continue
            if e.vector is None:
                status[i] = e.missing_reason or "missing"
            else:
                mat[i], ids[i], status[i] = e.vector, e.model_id, OK
        cols.update(stream_columns(s, mat, ids, status))
        mats.append(mat)
    if fusion is not None:
        cols.update(fusion_columns(mats, fusion))
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
