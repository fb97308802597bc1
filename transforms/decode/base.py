"""What every decoder shares: ``SourceFile`` (chunk numbering, ``prev_t_ns``, dead-letter
construction, file checks, the file's time offset, allowed roots and record accounting), exact
timestamp parsing with one int64 check, and short error texts.

Record accounting (``SourceFile.run``): a decoder body states how many records its file
declares (``SourceFile.declared``: a WAV header's frames as blocks, an index's data lines, a
CSV's data lines, ...), counted apart from the parsing. At the end, if the rows yielded plus
the records of the file's dead letters fall short of that count, the missing records become
dead letters too: the decode's terminal letter (a file-level letter, or one marked
``ends=True`` such as "demuxing stopped") is given ``records`` = the missing count, otherwise
one ``truncated`` letter (error class ``TruncatedSource``) carries them. So for every file
with a declared count: rows + Σ letter.records == declared.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import av
import numpy as np
import pyarrow as pa

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import UNIT_NS, DecodeOptions, TimeUnit
from mmalign.transforms.validate.timestamps import TimestampRule, implausible

__all__ = ["UNIT_NS", "DecodeOptions", "TimeUnit", "SourceFile", "parse_time_ns", "short_error",
           "INT64_MIN", "INT64_MAX", "TimestampOverflow", "checked_ns", "checked_ns_array",
           "scaled_ns", "time_reason", "inside_roots", "open_container",
           "count_nonblank_lines", "SpanAccumulator", "iter_lines"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_D_MIN, _D_MAX = Decimal(INT64_MIN), Decimal(INT64_MAX)


class TimestampOverflow(ValueError):
    """A time that does not fit int64 nanoseconds (about 1677-09-21 .. 2262-04-11 UTC)."""

    reason = "timestamp_overflow"


def _overflow(what: str, value) -> TimestampOverflow:
    text = str(value)
    if len(text) > 40:
        text = f"{text[:20]}...({len(text)} digits)"
    return TimestampOverflow(f"{what} {text} ns does not fit int64 nanoseconds "
                             f"[{INT64_MIN}, {INT64_MAX}]")


def checked_ns(value: int | Decimal, offset: int = 0, what: str = "time") -> int:
    """``value + offset`` as int nanoseconds, exactly, or ``TimestampOverflow`` if the sum is
    outside int64. The one range check every decoder uses (``checked_ns_array`` is the same
    rule for arrays). A Decimal is rounded to the nearest ns (half to even) after the check,
    so an absurd value such as 1e39 is never turned into a huge int."""
    if isinstance(value, Decimal):
        if value.is_finite() and value.adjusted() > 30:
            raise _overflow(what, value)
        v = value + offset
        if not v.is_finite() or not _D_MIN - 1 < v < _D_MAX + 1:
            raise _overflow(what, v)
        v = int(v.to_integral_value())
    else:
        v = int(value) + int(offset)
    if not INT64_MIN <= v <= INT64_MAX:
        raise _overflow(what, v)
    return v


def checked_ns_array(values: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``values + offset`` exactly: (sums, overflow mask); overflowing entries are 0."""
    values = np.asarray(values, np.int64)
    offset = int(offset)
    if offset == 0:
        return values, np.zeros(len(values), bool)
    if INT64_MIN <= offset <= INT64_MAX:
        if offset > 0:
            bad = values > INT64_MAX - offset
        else:
            bad = values < INT64_MIN - offset
        out = np.where(bad, 0, values) + np.int64(offset)
        return np.where(bad, 0, out), bad
    out = np.zeros(len(values), np.int64)       # an offset beyond int64: exact Python ints
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values.tolist()):
        s = v + offset
        if INT64_MIN <= s <= INT64_MAX:
            out[i] = s
        else:
            bad[i] = True
    return out, bad


def scaled_ns(value: Decimal | int, scale: int, what: str = "time") -> int:
    """``value`` in units of ``scale`` ns (1e9 for seconds) -> int ns, exactly (rounded half
    to even at the ns); ``TimestampOverflow`` outside int64, whatever the exponent."""
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"{what} {value} is not finite")
    if d.adjusted() > 30:                        # beyond any int64 ns in any unit
        raise _overflow(what, f"{d} x {scale}")
    return checked_ns(d * scale, 0, what)


def time_reason(exc: BaseException, default: str) -> str:
    """The dead-letter reason of a time that failed: ``timestamp_overflow`` or ``default``."""
    return TimestampOverflow.reason if isinstance(exc, TimestampOverflow) else default


def inside_roots(path: Path | str, roots: tuple[str, ...]) -> bool:
    """True if ``path`` (resolved: symlinks followed) lies in one of ``roots``; no roots = no
    restriction."""
    if not roots:
        return True
    p = Path(path).resolve()
    for r in roots:
        root = Path(r).resolve()
        if p == root or root in p.parents:
            return True
    return False


# Demuxers a decoder may use: none of them opens other files (no playlists such as HLS, no
# concat lists, no image patterns), and only the local file protocol.
CONTAINER_FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "mpegvideo",
                     "mp3", "ogg", "aac", "wav", "flac", "aiff", "w64", "caf", "asf")
_OPEN_OPTIONS = {"format_whitelist": ",".join(CONTAINER_FORMATS), "protocol_whitelist": "file"}


def open_container(path: str) -> av.container.InputContainer:
    """``av.open`` restricted to ``CONTAINER_FORMATS`` and the file protocol. A file that
    probes as another format (an HLS playlist, an ffconcat list) raises ``av.ArgumentError``."""
    return av.open(str(path), options=dict(_OPEN_OPTIONS))


_DEFAULT_RULE = TimestampRule()

@dataclass
class SourceFile:
    """One file being decoded: makes its Chunks (seq, prev_t_ns) and its DeadLetters, shifts
    its times by ``time_offset_ns`` and accounts for its records (``run``)."""

    session_id: str
    stream_id: str
    modality: str
    path: str
    seq: int = 0
    max_t_ns: int | None = None
    rows: int = 0
    meta: dict = field(default_factory=dict)
    time_offset_ns: int = 0
    roots: tuple[str, ...] = ()
    # records the file declares: an int, or a function counting them (called once, at the end)
    declared: int | Callable[[], int | None] | None = None
    declared_by: str = ""               # "its WAV header", "its data lines" ... (messages)
    unit: str = "records"               # "frames", "blocks", "cues", "rows", "lines"
    extra_attrs: dict[str, str] = field(default_factory=dict)   # for the truncation letter
    _terminal: list[DeadLetter] = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.roots = tuple(self.roots or ())
        self.time_offset_ns = int(self.time_offset_ns or 0)
        if self.time_offset_ns and "time_offset_ns" not in self.meta:
            self.meta["time_offset_ns"] = self.time_offset_ns

    # ------------------------------------------------------------ times

    def t(self, value: int | Decimal, what: str = "time") -> int:
        """A time the file states, shifted by the file's offset; ``TimestampOverflow``."""
        return checked_ns(value, self.time_offset_ns, what)

    def t_array(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int64 times shifted by the offset: (times, overflow mask)."""
        return checked_ns_array(values, self.time_offset_ns)

    def event_ns(self, value: int | None) -> int | None:
        """A dead letter's event time: shifted, or None if unknown or out of range."""
        if value is None:
            return None
        try:
            return checked_ns(value, self.time_offset_ns)
        except TimestampOverflow:
            return None

    # ------------------------------------------------------------ outputs

    def chunk(self, data: pa.RecordBatch, meta: dict | None = None) -> Chunk:
        """Wrap the next batch of rows; updates ``seq`` and the running max of t_ns. Rows the
        default plausibility rule rejects around the chunk's own median (one absurd time
        among sane ones) do not enter the running max, so they cannot make every later
        chunk of the file look out of order."""
        prev = self.max_t_ns
        if data.num_rows:
            t = data.column("t_ns").fill_null(0).to_numpy(zero_copy_only=False)
            t = t[~implausible(t, None, _DEFAULT_RULE)]
            if t.size:
                m = int(np.max(t))
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
             attrs: dict[str, str] | None = None, records: int = 1,
             ends: bool = False) -> DeadLetter:
        """A decode dead letter. ``ends``: the decoding of the file stops here, so at the end
        (``run``) this letter also stands for the declared records nothing else accounts for
        (file-level letters, position "file", always end the decoding)."""
        letter = DeadLetter(stage="decode", error_class=error_class, reason=reason,
                            message=message, session_id=self.session_id,
                            stream_id=self.stream_id, modality=self.modality,
                            source_uri=source_uri or self.path, position=position,
                            event_time_ns=event_time_ns, payload=payload,
                            payload_format=payload_format, attrs=dict(attrs or {}),
                            records=records)
        if ends:
            self._terminal.append(letter)
        return letter

    def time_dead(self, exc: ValueError, default_reason: str, message: str, **kw) -> DeadLetter:
        """A record whose time failed: ``timestamp_overflow`` if it is out of int64 range,
        else ``default_reason``; the message gets the error's text."""
        cls = kw.pop("error_class", "ParseError")
        if isinstance(exc, TimestampOverflow):
            cls = "TimestampOverflow"
        return self.dead(time_reason(exc, default_reason), f"{message} ({short_error(exc)}).",
                         error_class=cls, **kw)

    # ------------------------------------------------------------ checks

    def check_file(self, max_bytes: int) -> DeadLetter | None:
        """A dead letter if the file is missing, outside the allowed roots, not a regular file,
        or over ``max_bytes``."""
        p = Path(self.path)
        if self.roots and not inside_roots(p, self.roots):
            return self.outside_roots(p, "the file")
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

    def outside_roots(self, target: Path | str, what: str, *, position: str = "file",
                      **kw) -> DeadLetter:
        """The letter for a path (after following symlinks) outside every allowed root."""
        resolved = Path(target).resolve()
        return self.dead("path_outside_roots", f"{self.path}: {what} {str(target)!r} resolves "
                         f"to {str(resolved)!r}, outside the allowed roots {list(self.roots)}; "
                         "it was not read.", error_class="PathOutsideRoots",
                         position=position, attrs={"target": str(resolved)}, **kw)

    # ------------------------------------------------------------ accounting

    def run(self, body: Iterator[Chunk | DeadLetter]) -> Iterator[Chunk | DeadLetter]:
        """Yield what ``body`` (the decoder proper, using this SourceFile) yields; an exception
        in it becomes a ``decoder_error`` letter; then account for the declared records (see
        the module docstring). Never raises."""
        rows = letters = 0
        held: DeadLetter | None = None
        try:
            for out in body:
                if isinstance(out, DeadLetter):
                    if out.position == "file" or any(out is t for t in self._terminal):
                        if held is not None:
                            letters += held.records
                            yield held
                        held = out
                        continue
                    letters += out.records
                else:
                    rows += out.num_records
                yield out
        except Exception as e:  # noqa: BLE001 -- a decoder bug must never escape
            if held is not None:
                letters += held.records
                yield held
            held = self.dead("decoder_error", f"{self.path}: the {self.modality} decoder "
                             f"failed ({type(e).__name__}: {short_error(e)}).",
                             error_class=type(e).__name__,
                             attrs={"traceback": traceback.format_exc(limit=5)[-2000:]})
        declared = self._declared_count()
        if declared is None:
            if held is not None:
                yield held
            return
        missing = declared - rows - letters
        counts = {"declared": str(declared), "decoded": str(rows), "dead": str(letters),
                  **self.extra_attrs}
        if held is not None:
            n = max(missing, 0)
            yield dataclasses.replace(held, records=n, attrs={**held.attrs, **counts,
                                                              "missing": str(n)})
        elif missing > 0:
            by = f" ({self.declared_by})" if self.declared_by else ""
            yield self.dead(
                "truncated", f"{self.path} declares {declared} {self.unit}{by} but only "
                f"{rows + letters} are accounted for ({rows} decoded, {letters} in dead "
                f"letters): {missing} {self.unit} are missing, the file is cut short or they "
                "could not be read.", error_class="TruncatedSource", records=missing,
                attrs={**counts, "missing": str(missing)})

    def _declared_count(self) -> int | None:
        d = self.declared
        if callable(d):
            try:
                d = d()
            except (OSError, ValueError):
                return None
        return None if d is None else int(d)


def iter_lines(fh) -> Iterator[bytes]:
    """The lines of a binary file, without their ends, split at LF, CRLF and a bare CR (as
    ``bytes.splitlines``: a CR alone ends a line too, as it does for Arrow's CSV reader)."""
    for raw in fh:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\r" in line:
            yield from line.split(b"\r")
        else:
            yield line


def count_nonblank_lines(path: str) -> int:
    """Lines (``iter_lines``) that are not blank (ASCII whitespace; a leading BOM ignored): a
    JSONL file's records, counted without parsing them."""
    n, first = 0, True
    with open(path, "rb") as fh:
        for raw in iter_lines(fh):
            if first:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if raw.strip():
                n += 1
                first = False
    return n


class SpanAccumulator:
    """(first, end) of a segment from its sample times, added chunk by chunk: first = the
    smallest time, end = the largest + the median positive gap between the sorted distinct
    times (1 ns if there is none). The median is taken over the last ``keep`` samples, so a
    long file costs bounded memory."""

    def __init__(self, keep: int = 1 << 20):
        self.keep = keep
        self.lo: int | None = None
        self.hi: int | None = None
        self.recent: list[np.ndarray] = []
        self.n_recent = 0

    def add(self, times: np.ndarray) -> None:
        times = np.asarray(times, np.int64)
        if not len(times):
            return
        lo, hi = int(times.min()), int(times.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        self.recent.append(times)
        self.n_recent += len(times)
        while self.n_recent - len(self.recent[0]) >= self.keep:
            self.n_recent -= len(self.recent.pop(0))

    def span(self) -> tuple[int, int] | None:
        if self.lo is None:
            return None
        u = np.unique(np.concatenate(self.recent))
        gaps = np.diff(u)
        period = int(np.median(gaps)) if len(gaps) else 1
        return self.lo, min(self.hi + max(period, 1), INT64_MAX)


def parse_time_ns(token: str, unit: str | None) -> int:
    """A timestamp token -> int ns, exactly. Without ``unit``: an integer literal is ns and
    anything else (decimal point, exponent) is seconds. Raises ``ValueError`` if not a
    finite number, ``TimestampOverflow`` (a ValueError) if outside int64 ns."""
    token = token.strip()
    try:
        d = Decimal(token)
    except (InvalidOperation, ValueError):
        raise ValueError(f"timestamp {token[:40]!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"timestamp {token[:40]!r} is not finite")
    if unit is None:
        is_int = token.lstrip("+-").isdigit()
        unit = "ns" if is_int else "s"
    return scaled_ns(d, UNIT_NS[unit], f"timestamp {token[:40]!r} =")


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
