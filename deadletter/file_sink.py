"""Dead letters to files: OUT/deadletter/<session>/deadletters.parquet (batch).

Letters are grouped per session and sorted (stage, stream, position, reason) so the file is
deterministic and a rerun replaces it. Letters with no session go to ``unknown-session/``.
The root may be an object-store URI (``schemas/fs.py``).
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pyarrow as pa

from mmalign.deadletter.record import ARROW_SCHEMA, DeadLetter, to_table
from mmalign.schemas.fs import read_table
from mmalign.schemas.layout import atomic_write_table, session_dir, session_dirs
from mmalign.schemas.metrics import DEADLETTER

FILE_NAME = "deadletters.parquet"
UNKNOWN_SESSION = "unknown-session"   # a folder Arrow readers do not skip (no "_" or ".")


def _order(d: DeadLetter):
    return (d.stage, d.stream_id or "", d.source_uri or "", _pos_key(d.position), d.reason,
            d.message)


def _pos_key(position: str | None):
    if not position or "=" not in position:
        return ("", -1)
    field, _, value = position.partition("=")
    return (field, int(value)) if value.lstrip("-").isdigit() else (field, -1)


def write_session_letters(root: str | Path, session_id: str, letters) -> str:
    letters = sorted(letters, key=_order)
    path = session_dir(root, session_id) / FILE_NAME
    return str(atomic_write_table(to_table(letters), path))


def read_dead_letters(root: str | Path) -> pa.Table:
    files = [d / FILE_NAME for d in session_dirs(root) if (d / FILE_NAME).exists()]
    if not files:
        return ARROW_SCHEMA.empty_table()
    return pa.concat_tables([read_table(f) for f in files])


class WriteDeadLetters(beam.PTransform):
    """DeadLetters -> one Parquet file per session under ``root``; outputs the paths."""

    def __init__(self, root: str, run_id: str, write=write_session_letters):
        super().__init__()
        self.root = root
        self.run_id = run_id
        self.write = write      # (root, session, letters) -> path; a part of them, in slices

    def expand(self, letters):
        run_id, root, write = self.run_id, self.root, self.write

        def stamp(d: DeadLetter):
            DEADLETTER.count(str(d.modality), modality=d.stage)
            return (d.session_id or UNKNOWN_SESSION, d if d.run_id else d.with_run(run_id))

        return (letters
                | "KeyBySession" >> beam.Map(stamp)
                | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                | "GroupBySession" >> beam.GroupByKey()
                | "WriteSessionFile" >> beam.MapTuple(
                    lambda s, ds: write(root, s, list(ds))))
