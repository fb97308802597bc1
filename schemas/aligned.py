"""The aligned row: the main output's contract. Every module that names or reads an aligned
column asks this one; nothing else builds ``<stream>__<field>`` names.

One row per tick of a session:

    session_id, bucket, tick_ns, tick_time (timestamp[ns, UTC]), tick_pos
    <stream>__status           "ok" or why the stream has no value at the tick (STATUS_NAMES)
    <stream>__<field>          the stream's values at the tick; which fields depends on its
                               alignment policy (``policy_fields``)
    <camera>__reg_<field>      spatial registration of a camera onto the reference
                               (``REGISTRATION_FIELDS``); <sensor>__<camera>__u/v/... projections
    <stream>__emb, __model_id, __emb_status    the stream's embedding (``EMBEDDING_FIELDS``)
    fused__emb, fused__mask    the fused embedding, when configured

Stream ids never contain ``__`` (schemas/manifest.py checks), so a column name splits at its
first ``__`` into (stream, field).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

SEP = "__"

# -- the row key ------------------------------------------------------------------------------
SESSION_ID, BUCKET, TICK_NS, TICK_TIME, TICK_POS = (
    "session_id", "bucket", "tick_ns", "tick_time", "tick_pos")
KEY_FIELDS = pa.schema([
    (SESSION_ID, pa.string()),
    (BUCKET, pa.int64()),
    (TICK_NS, pa.int64()),
    (TICK_TIME, pa.timestamp("ns", tz="UTC")),
    (TICK_POS, pa.int64()),
])

# -- statuses ---------------------------------------------------------------------------------
# ``<stream>__status``: "ok" or why the value is missing (the order is the int8 code the
# alignment kernels use: transforms/align/policies.py Status).
STATUS_NAMES: tuple[str, ...] = (
    "ok",                       # a value
    "no_sample_in_tolerance",   # nearest/one_to_one: no sample within tolerance of the tick
    "gap_too_large",            # interpolate: the bracketing samples are > max_gap apart
    "out_of_range",             # the tick is before the stream's first / after its last sample
    "taken",                    # one_to_one: every candidate went to a closer tick
    "no_overlap",               # text_overlap: no segment contains the tick
    "partial_window",           # audio_window: samples missing for part of the window
    "empty_window",             # audio_window: the window falls in a gap between blocks
    "not_local",                # one_to_one: the decision depends on data beyond the bucket
)
OK = STATUS_NAMES[0]
VALUE_STATUSES = (OK, "partial_window")   # statuses whose row carries a value

# -- per-stream fields ------------------------------------------------------------------------
STATUS, DT_NS, T_NS, POS, POS_RIGHT, SRC, FILE = (
    "status", "dt_ns", "t_ns", "pos", "pos_right", "src", "file")
SAMPLE_START, SAMPLE_END, COVERAGE, SAMPLE_RATE = (
    "sample_start", "sample_end", "coverage", "sample_rate")
TEXT, CUES = "text", "cues"

_STR, _I64, _F64 = pa.string(), pa.int64(), pa.float64()


def policy_fields(policy: str, modality: str, channels: Iterable[str] = ()) -> list[pa.Field]:
    """The (suffix, type) fields a stream aligned by ``policy`` has, in column order."""
    if policy in ("nearest", "one_to_one", "set_member"):
        fields = [(STATUS, _STR), (DT_NS, _I64), (T_NS, _I64), (POS, _I64), (SRC, _STR)]
        if policy != "set_member":
            fields += [(FILE, _STR)] if modality == "video" else []
            fields += [(c, _F64) for c in channels] if modality == "sensor" else []
    elif policy == "interpolate":
        fields = [(STATUS, _STR), (DT_NS, _I64), *((c, _F64) for c in channels),
                  (POS, _I64), (POS_RIGHT, _I64), (SRC, _STR)]
    elif policy == "audio_window":
        fields = [(STATUS, _STR), (SAMPLE_START, _I64), (SAMPLE_END, _I64), (COVERAGE, _F64),
                  (SAMPLE_RATE, pa.int32()), (SRC, _STR)]
    elif policy == "text_overlap":
        fields = [(STATUS, _STR), (TEXT, _STR), (CUES, pa.list_(_I64)), (SRC, _STR)]
    else:
        raise ValueError(f"unknown alignment policy {policy!r}")
    return [pa.field(name, t) for name, t in fields]


# -- registration and embeddings --------------------------------------------------------------
REG_STATUS, H = "reg_status", "H"
REG_TICK_NS, REG_INLIERS, REG_INLIER_RATIO, REG_RMSE_PX, REG_COVERAGE = (
    "reg_tick_ns", "reg_inliers", "reg_inlier_ratio", "reg_rmse_px", "reg_coverage")
REGISTRATION_FIELDS = [          # <camera>__<field>; registration statuses: transforms/register
    pa.field(H, pa.list_(_F64)),
    pa.field(REG_STATUS, _STR),
    pa.field(REG_TICK_NS, _I64),
    pa.field(REG_INLIERS, _I64),
    pa.field(REG_INLIER_RATIO, _F64),
    pa.field(REG_RMSE_PX, _F64),
    pa.field(REG_COVERAGE, _F64),
]
PROJECTION_FIELDS = [            # <sensor>__<camera>__<field>
    pa.field("u", _F64), pa.field("v", _F64), pa.field("depth", _F64),
    pa.field("visible", pa.bool_()),
]
EMB, MODEL_ID, EMB_STATUS = "emb", "model_id", "emb_status"
FUSED = "fused"
MASK = "mask"


def column(stream: str, field: str, *more: str) -> str:
    """``<stream>__<field>`` (``<sensor>__<camera>__<field>`` for projections)."""
    return SEP.join((stream, field, *more))


def split_column(name: str) -> tuple[str, str] | None:
    """(stream, field) of a per-stream column, None for a key column."""
    stream, sep, field = name.partition(SEP)
    return (stream, field) if sep else None


def stream_ids(names: Iterable[str]) -> list[str]:
    """The aligned streams of a table, in column order: those with a ``__status`` column."""
    out = []
    for n in names:
        parts = split_column(n)
        if parts and parts[1] == STATUS and parts[0] not in out:
            out.append(parts[0])
    return out


def registered_cameras(names: Iterable[str]) -> list[str]:
    return [p[0] for p in map(split_column, names) if p and p[1] == REG_STATUS]


def embedded_streams(names: Iterable[str]) -> list[str]:
    """Streams with an embedding column (``fused`` excluded)."""
    return [p[0] for p in map(split_column, names)
            if p and p[1] == EMB and p[0] != FUSED]


@dataclass(frozen=True)
class StreamColumns:
    """What the contract needs to know of one aligned stream."""
    stream_id: str
    modality: str
    policy: str                      # an alignment policy, or "set_member"
    channels: tuple[str, ...] = ()

    def fields(self) -> list[pa.Field]:
        return [pa.field(column(self.stream_id, f.name), f.type)
                for f in policy_fields(self.policy, self.modality, self.channels)]


def aligned_schema(streams: Iterable[StreamColumns]) -> pa.Schema:
    """The Arrow schema of a session's aligned rows as the align stage writes them (before the
    registration and encode stages add their columns)."""
    fields = list(KEY_FIELDS)
    for s in streams:
        fields += s.fields()
    return pa.schema(fields)
