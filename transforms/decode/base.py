"""What every decoder shares: ``SourceFile`` (chunk numbering, ``prev_t_ns``, dead-letter
construction, file checks), exact timestamp parsing and short error texts."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import UNIT_NS, DecodeOptions, TimeUnit

__all__ = ["UNIT_NS", "DecodeOptions", "TimeUnit", "SourceFile", "parse_time_ns", "short_error"]


@dataclass
class SourceFile:
    """One file being decoded: makes its Chunks (seq, prev_t_ns) and its DeadLetters."""

    session_id: str
    stream_id: str
    modality: str
    path: str
    seq: int = 0
    max_t_ns: int | None = None
    rows: int = 0
    meta: dict = field(default_factory=dict)

    def chunk(self, data: pa.RecordBatch, meta: dict | None = None) -> Chunk:
        """Wrap the next batch of rows; updates ``seq`` and the running max of t_ns."""
        prev = self.max_t_ns
        if data.num_rows:
            m = int(np.max(data.column("t_ns").to_numpy(zero_copy_only=False)))
            self.max_t_ns = m if prev is None else max(prev, m)
        c = Chunk(session_id=self.session_id, stream_id=self.stream_id, modality=self.modality,
                  seq=self.seq, source_uri=self.path, data=data,
                  meta=dict(meta if meta is not None else self.meta), prev_t_ns=prev)
        self.seq += 1
        self.rows += data.num_rows
        return c

    def dead(self, reason: str, message: str, *, error_class: str, position: str = "file",
             source_uri: str | None = None, payload: bytes | None = None,
             payload_format: str | None = None, event_time_ns: int | None = None,
             attrs: dict[str, str] | None = None) -> DeadLetter:
        return DeadLetter(stage="decode", error_class=error_class, reason=reason,
                          message=message, session_id=self.session_id,
                          stream_id=self.stream_id, modality=self.modality,
                          source_uri=source_uri or self.path, position=position,
                          event_time_ns=event_time_ns, payload=payload,
                          payload_format=payload_format, attrs=dict(attrs or {}))

    def check_file(self, max_bytes: int) -> DeadLetter | None:
        """A dead letter if the file is missing, not a regular file, or over ``max_bytes``."""
        p = Path(self.path)
        if not p.exists():
            return self.dead("missing_file", f"{self.path} does not exist.",
                             error_class="FileNotFound")
        if not p.is_file():
            return self.dead("not_a_file", f"{self.path} is not a regular file.",
                             error_class="FileNotFound")
        size = p.stat().st_size
        if size > max_bytes:
            return self.dead("oversize", f"{self.path} is {size} bytes, over the "
                             f"{max_bytes}-byte limit (options.max_bytes).",
                             error_class="Oversize", attrs={"bytes": str(size)})
        return None


def parse_time_ns(token: str, unit: str | None) -> int:
    """A timestamp token -> int ns, exactly. Without ``unit``: an integer literal is ns and
    anything else (decimal point, exponent) is seconds. Raises ``ValueError`` if not a
    finite number."""
    token = token.strip()
    try:
        d = Decimal(token)
    except InvalidOperation:
        raise ValueError(f"timestamp {token!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"timestamp {token!r} is not finite")
    if unit is None:
        is_int = token.lstrip("+-").isdigit()
        unit = "ns" if is_int else "s"
    return int((d * UNIT_NS[unit]).to_integral_value())


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]

