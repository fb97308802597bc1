"""The dead-letter record: what went wrong, where, and enough to find or replay the original.

Every record that fails a stage becomes exactly one DeadLetter. Nothing is dropped silently:
the pipeline's counters satisfy ``records in = records out + dead letters`` per stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace

import pyarrow as pa

# Stages, in pipeline order. A dead letter names the stage that rejected the record.
STAGES = ("ingest", "decode", "validate", "clock", "sync", "align", "register", "encode", "sink")

# Payload copies larger than this are not kept inline; the source pointer is enough.
MAX_PAYLOAD_COPY_BYTES = 64 * 1024


@dataclass(frozen=True)
class DeadLetter:
    stage: str                 # one of STAGES
    error_class: str           # exception/check class, e.g. "NonFiniteValue", "CorruptMedia"
    reason: str                # short stable slug for grouping, e.g. "nan", "duplicate_timestamp"
    message: str               # one human sentence
    run_id: str = ""
    session_id: str | None = None
    stream_id: str | None = None
    modality: str | None = None
    source_uri: str | None = None
    position: str | None = None        # "row=17", "frame=42", "cue=3", "file" ...
    event_time_ns: int | None = None
    payload: bytes | None = None       # a copy of the original record when small enough
    payload_format: str | None = None  # "json", "csv-row", "srt-cue", "jpeg", "kafka-value" ...
    attrs: dict[str, str] = field(default_factory=dict)  # e.g. kafka topic/partition/offset
    created_at_ns: int = field(default_factory=time.time_ns)
    records: int = 1                   # input records this letter stands for (a truncated
    #                                    file's letter counts the records it lost)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"dead letter stage {self.stage!r} is not one of {STAGES}")
        if self.records < 0:
            raise ValueError(f"dead letter records must be >= 0, got {self.records}")

    @classmethod
    def from_exception(cls, stage: str, exc: BaseException, reason: str, **kw) -> DeadLetter:
        return cls(stage=stage, error_class=type(exc).__name__, reason=reason,
                   message=str(exc) or type(exc).__name__, **kw)

    def with_run(self, run_id: str) -> DeadLetter:
        return replace(self, run_id=run_id)

    def to_row(self) -> dict:
        row = asdict(self)
        row["attrs"] = json.dumps(self.attrs, sort_keys=True)
        if self.payload is not None and len(self.payload) > MAX_PAYLOAD_COPY_BYTES:
            row["payload"] = None
            row["attrs"] = json.dumps({**self.attrs, "payload_truncated": str(len(self.payload))},
                                      sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict) -> DeadLetter:
        row = dict(row)
        row["attrs"] = json.loads(row.get("attrs") or "{}")
        if row.get("records") is None:          # written before letters carried a count
            row["records"] = 1
        return cls(**row)


ARROW_SCHEMA = pa.schema([
    ("stage", pa.string()),
    ("error_class", pa.string()),
    ("reason", pa.string()),
    ("message", pa.string()),
    ("run_id", pa.string()),
    ("session_id", pa.string()),
    ("stream_id", pa.string()),
    ("modality", pa.string()),
    ("source_uri", pa.string()),
    ("position", pa.string()),
    ("event_time_ns", pa.int64()),
    ("payload", pa.binary()),
    ("payload_format", pa.string()),
    ("attrs", pa.string()),
    ("created_at_ns", pa.int64()),
    ("records", pa.int64()),
])


def to_table(letters) -> pa.Table:
    return pa.Table.from_pylist([d.to_row() for d in letters], schema=ARROW_SCHEMA)
