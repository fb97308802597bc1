"""The chunk envelope: the one record type that flows between decode, validate, clock and align.

A chunk is a run of consecutive samples of one stream (frames, audio blocks, subtitle cues,
sensor rows) held as an Arrow record batch. Every modality's batch has two columns in common:

- ``t_ns``  int64  event time of the sample, nanoseconds, on the stream's *device* clock until
                    the clock stage rewrites it onto the session's reference clock;
- ``pos``   int64  where the sample sits in its source (frame index, row number, first audio
                    sample index, cue index): with ``source_uri`` it points back at the original.

The other columns are the modality's (see ``schemas/contracts.py``). Chunks, not samples: a
1 kHz sensor is a few elements per second of recording, never one per row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

import mmalign.schemas.arrow_pickle  # noqa: F401 -- batches pickle as Arrow IPC

SCHEMA_VERSION = "1.0"

Modality = Literal["video", "audio", "text", "sensor"]
MODALITIES: tuple[str, ...] = ("video", "audio", "text", "sensor")
ClockState = Literal["device", "reference"]


@dataclass(frozen=True)
class Chunk:
    session_id: str
    stream_id: str
    modality: str
    seq: int                      # chunk number within (stream, source file), from 0
    source_uri: str               # file the samples came from (or kafka://topic/partition)
    data: pa.RecordBatch          # rows = samples; has t_ns and pos (+ modality columns)
    meta: dict = field(default_factory=dict)   # sample_rate, width, height, codec, channels ...
    prev_t_ns: int | None = None  # max device t_ns of all earlier samples of this source
    clock: ClockState = "device"
    schema_version: str = SCHEMA_VERSION

    @property
    def num_records(self) -> int:
        return self.data.num_rows

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.stream_id)

    def with_data(self, data: pa.RecordBatch, **changes) -> Chunk:
        return dataclasses.replace(self, data=data, **changes)

    def t_ns(self):
        """Event times as a numpy int64 array (zero-copy where Arrow allows)."""
        return self.data.column("t_ns").to_numpy(zero_copy_only=False)

    def position(self, row: int) -> str:
        """Human-readable pointer to one sample: ``<field>=<value>`` used in dead letters."""
        return f"{POSITION_FIELD[self.modality]}={self.data.column('pos')[row].as_py()}"


POSITION_FIELD = {"video": "frame", "audio": "sample", "text": "cue", "sensor": "row"}


@dataclass(frozen=True)
class TickTable:
    """Ticks that no stream carries as samples: a session's approximate-time sets (one row
    per set: ``t_ns`` = the set's latest member time, ``pos`` = the set's number, and each
    member's ``<stream>__t_ns/__pos/__src``). Bucketed as ticks only, already on the
    reference clock."""
    session_id: str
    stream_id: str
    data: pa.RecordBatch
    meta: dict = field(default_factory=dict)

    @property
    def num_records(self) -> int:
        return self.data.num_rows

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.stream_id)
