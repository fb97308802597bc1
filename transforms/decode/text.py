"""Text decoders: SRT, WebVTT and JSONL timed segments/words -> rows of schemas/text.py.

Files are read line by line and each cue (a blank-line separated block) is decoded from its own
bytes, so a cue with invalid UTF-8 or a bad timing line is one ``cue=N`` DeadLetter and the cues
around it still come out. ``pos`` = cue index (SRT/VTT blocks, NOTE/STYLE/REGION blocks not
counted) or non-blank line index (JSONL). Formatting tags (<i>, <c.x>, <v Name>, {\\an8}) are
stripped; line breaks inside a cue are kept as "\\n".
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.schemas.text import ARROW_SCHEMA
from mmalign.transforms.decode.base import (
    SourceFile,
    TimestampOverflow,
    checked_ns,
    count_nonblank_lines,
    iter_lines,
    scaled_ns,
    short_error,
)

_SRT_TIME = r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_SRT_TIMING = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s.*)?$")
_VTT_TIME = r"(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})"
_VTT_TIMING = re.compile(rf"^\s*{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t].*)?$")
_TAGS = re.compile(r"<[^>\n]*>|\{\\[^}\n]*\}")
_VTT_SKIP = (b"NOTE", b"STYLE", b"REGION")
_BOM = b"\xef\xbb\xbf"


class CueError(ValueError):
    def __init__(self, reason: str, what: str):
        super().__init__(what)
        self.reason = reason


def _ns(h: str | None, m: str, s: str, frac: str) -> int:
    """A cue time -> ns; ``CueError("timestamp_overflow")`` if it does not fit int64 ns."""
    h = (h or "0").lstrip("0") or "0"
    if len(h) > 12:                              # 10^12 hours is far beyond int64 ns
        raise CueError("timestamp_overflow", f"has a time of {h[:20]}... hours, outside int64 "
                       "nanoseconds")
    ms = int(frac.ljust(3, "0"))
    v = ((int(h) * 60 + int(m)) * 60 + int(s)) * 1_000_000_000 + ms * 1_000_000
    try:
        return checked_ns(v, 0, "cue time")
    except TimestampOverflow as e:
        raise CueError("timestamp_overflow", f"has a time outside int64 nanoseconds ({e})") \
            from None


def clean_text(lines: list[str], *, unescape: bool) -> str:
    """Cue lines -> plain text: tags removed, entities decoded (VTT), "\\n" between lines."""
    out = [_TAGS.sub("", ln).strip() for ln in lines]
    text = "\n".join(out).strip("\n")
    return html.unescape(text) if unescape else text


def blocks(path: str) -> Iterator[bytes]:
    """Blank-line separated blocks of a file, as raw bytes (line ends normalised to \\n)."""
    cur: list[bytes] = []
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                cur.append(line.rstrip(b"\r"))
            elif cur:
                yield b"\n".join(cur)
                cur = []
    if cur:
        yield b"\n".join(cur)


def _decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CueError("invalid_utf8", f"has bytes that are not UTF-8 (at byte {e.start})") \
            from None


def parse_srt_cue(raw: bytes) -> tuple[int, int, str]:
    """One SRT block -> (start_ns, end_ns, text); raises CueError."""
    lines = _decode_utf8(raw).split("\n")
    if lines[0].strip().isdigit() and len(lines) > 1:
        lines = lines[1:]
    m = _SRT_TIMING.match(lines[0])
    if m is None:
        raise CueError("bad_timing", f"has no valid 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line "
                                     f"(got {lines[0][:60]!r})")
    g = m.groups()
    return _ns(*g[:4]), _ns(*g[4:]), clean_text(lines[1:], unescape=False)


def parse_vtt_cue(raw: bytes) -> tuple[int, int, str]:
    """One WebVTT cue block (optional identifier line) -> (start_ns, end_ns, text)."""
    lines = _decode_utf8(raw).split("\n")
    if "-->" not in lines[0] and len(lines) > 1:
        lines = lines[1:]                        # the cue identifier
    m = _VTT_TIMING.match(lines[0])
    if m is None:
        raise CueError("bad_timing", f"has no valid '[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm' line "
                                     f"(got {lines[0][:60]!r})")
    g = m.groups()
    return _ns(*g[:4]), _ns(*g[4:]), clean_text(lines[1:], unescape=True)


class _Rows:
    def __init__(self, src: SourceFile, chunk_rows: int):
        self.src, self.chunk_rows = src, chunk_rows
        self.rows: dict[str, list] = {n: [] for n in ARROW_SCHEMA.names}

    def add(self, t0: int, t1: int, pos: int, text: str, kind: str) -> Iterator[Chunk]:
        """Add a row; its times are shifted by the file's offset (``TimestampOverflow`` if
        they leave int64 ns: the caller dead-letters the record, nothing is added)."""
        t0, t1 = self.src.t(t0, "start"), self.src.t(t1, "end")
        for k, v in zip(ARROW_SCHEMA.names, (t0, t1, pos, text, kind), strict=True):
            self.rows[k].append(v)
        if len(self.rows["pos"]) >= self.chunk_rows:
            yield from self.flush()

    def flush(self) -> Iterator[Chunk]:
        if self.rows["pos"]:
            yield self.src.chunk(pa.RecordBatch.from_pydict(self.rows, schema=ARROW_SCHEMA))
            self.rows = {n: [] for n in ARROW_SCHEMA.names}


def _subtitles(path: str, session_id: str, stream_id: str, options, fmt: str,
               roots: tuple[str, ...], time_offset_ns: int) -> Iterator[Chunk | DeadLetter]:
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "text", str(path), meta={"format": fmt},
                     roots=roots, time_offset_ns=time_offset_ns, unit="cues",
                     declared_by="its cue blocks")
    yield from src.run(_subtitle_cues(src, opts, fmt))


def _error_class(reason: str) -> str:
    return {"invalid_utf8": "EncodingError",
            "timestamp_overflow": "TimestampOverflow"}.get(reason, "ParseError")


def _is_vtt_skip(raw: bytes) -> bool:
    return any(raw == k or raw.startswith((k + b" ", k + b"\t", k + b"\n")) for k in _VTT_SKIP)


def count_cues(path: str, fmt: str) -> int:
    """The cue blocks of an SRT/VTT file, counted without parsing them: blank-line separated
    blocks, less a WebVTT file's header block and its NOTE/STYLE/REGION blocks."""
    n = 0
    for i, raw in enumerate(blocks(path)):
        if i == 0:
            raw = raw.removeprefix(_BOM)
            if fmt == "vtt" and raw.startswith(b"WEBVTT"):
                if b"-->" not in raw:
                    continue
                raw = raw.split(b"\n", 1)[1]
        if fmt == "vtt" and _is_vtt_skip(raw):
            continue
        n += 1
    return n


def _subtitle_cues(src: SourceFile, opts: DecodeOptions, fmt: str
                   ) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    src.declared = functools.partial(count_cues, path, fmt)
    rows = _Rows(src, opts.chunk_rows)
    parse = parse_srt_cue if fmt == "srt" else parse_vtt_cue
    pos = 0
    for i, raw in enumerate(blocks(path)):
        if i == 0:
            raw = raw.removeprefix(_BOM)
            if fmt == "vtt":
                first = raw.split(b"\n", 1)[0]
                if not (first == b"WEBVTT" or first.startswith((b"WEBVTT ", b"WEBVTT\t"))):
                    yield src.dead("not_webvtt", f"{path} does not start with a 'WEBVTT' "
                                   "header line.", error_class="ParseError")
                    return
                if b"-->" not in raw:
                    continue                     # the header block
                raw = raw.split(b"\n", 1)[1]     # a cue right under the header line
        if fmt == "vtt" and _is_vtt_skip(raw):
            continue
        try:
            t0, t1, text = parse(raw)
            yield from rows.add(t0, t1, pos, text, "segment")
        except (CueError, TimestampOverflow) as e:
            reason = getattr(e, "reason", TimestampOverflow.reason)
            yield src.dead(reason, f"{path}: cue {pos} {e}.", error_class=_error_class(reason),
                           position=f"cue={pos}", payload=raw, payload_format=f"{fmt}-cue")
        pos += 1
    yield from rows.flush()


def decode_srt(path: str, *, session_id: str, stream_id: str,
               options: DecodeOptions | dict | None = None, roots: tuple[str, ...] = (),
               time_offset_ns: int = 0) -> Iterator[Chunk | DeadLetter]:
    """SubRip subtitles -> segments. Declared cues: the file's blank-line separated blocks."""
    yield from _subtitles(path, session_id, stream_id, options, "srt", roots, time_offset_ns)


def decode_vtt(path: str, *, session_id: str, stream_id: str,
               options: DecodeOptions | dict | None = None, roots: tuple[str, ...] = (),
               time_offset_ns: int = 0) -> Iterator[Chunk | DeadLetter]:
    """WebVTT -> segments (header, NOTE/STYLE/REGION blocks skipped, cue settings ignored)."""
    yield from _subtitles(path, session_id, stream_id, options, "vtt", roots, time_offset_ns)


def _seconds_ns(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        raise CueError("bad_timestamp", f"field {name!r} must be a number of seconds")
    if isinstance(v, Decimal) and not v.is_finite():
        raise CueError("bad_timestamp", f"field {name!r} is not finite")
    try:
        return scaled_ns(v, 1_000_000_000, f"field {name!r} =")
    except TimestampOverflow as e:
        raise CueError("timestamp_overflow", str(e)) from None


def parse_jsonl_segment(raw: bytes) -> tuple[int, int, str, str]:
    """One JSONL line -> (start_ns, end_ns, text, kind); raises CueError."""
    line = _decode_utf8(raw)
    try:
        obj = json.loads(line, parse_float=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as e:
        raise CueError("bad_json", f"is not valid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:     # a 5000-digit number, nesting too deep
        raise CueError("bad_json", f"is not usable JSON ({short_error(e)})") from None
    if not isinstance(obj, dict):
        raise CueError("bad_json", "is not a JSON object")
    if "start_ns" in obj or "end_ns" in obj:
        t = []
        for k in ("start_ns", "end_ns"):
            v = obj.get(k)
            if isinstance(v, bool) or not isinstance(v, int):
                raise CueError("bad_timestamp", f"field {k!r} must be an integer")
            try:
                t.append(checked_ns(v, 0, f"field {k!r} ="))
            except TimestampOverflow as e:
                raise CueError("timestamp_overflow", str(e)) from None
        t0, t1 = t
    else:
        for k in ("start", "end"):
            if k not in obj:
                raise CueError("missing_field", f"has no {k!r} (or start_ns/end_ns) field")
        t0, t1 = _seconds_ns(obj["start"], "start"), _seconds_ns(obj["end"], "end")
    text, kind = obj.get("text"), obj.get("kind", "segment")
    if not isinstance(text, str):
        raise CueError("missing_field" if text is None else "bad_field",
                       "needs a string 'text' field")
    if not isinstance(kind, str):
        raise CueError("bad_field", "field 'kind' must be a string ('word' or 'segment')")
    return t0, t1, text, kind


def decode_text_jsonl(path: str, *, session_id: str, stream_id: str,
                      options: DecodeOptions | dict | None = None,
                      roots: tuple[str, ...] = (), time_offset_ns: int = 0
                      ) -> Iterator[Chunk | DeadLetter]:
    """JSONL of ``{"start": s, "end": s, "text": ..., "kind": "word"|"segment"}`` (seconds,
    parsed exactly) or ``start_ns``/``end_ns`` integers -> segments/words. Declared records:
    the non-blank lines."""
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "text", str(path), meta={"format": "jsonl"},
                     roots=roots, time_offset_ns=time_offset_ns, unit="lines",
                     declared_by="its non-blank lines")
    yield from src.run(_jsonl(src, opts))


def _jsonl(src: SourceFile, opts: DecodeOptions) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    src.declared = functools.partial(count_nonblank_lines, path)
    rows = _Rows(src, opts.chunk_rows)
    pos = 0
    with open(path, "rb") as fh:
        for raw in iter_lines(fh):
            if pos == 0:
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue
            try:
                t0, t1, text, kind = parse_jsonl_segment(raw)
                yield from rows.add(t0, t1, pos, text, kind)
            except (CueError, TimestampOverflow) as e:
                reason = getattr(e, "reason", TimestampOverflow.reason)
                yield src.dead(reason, f"{path}: line {pos} {e}.",
                               error_class=_error_class(reason), position=f"cue={pos}",
                               payload=raw, payload_format="jsonl-row")
            pos += 1
    yield from rows.flush()


# ---------------------------------------------------------------- segment spans

def _span(rows: Iterator[tuple[int, int]]) -> tuple[int, int] | None:
    first = end = None
    for t0, t1 in rows:
        first = t0 if first is None else min(first, t0)
        end = max(t0, t1) if end is None else max(end, t0, t1)
    return None if first is None else (first, end)


def span_subtitles(path: str, fmt: str, options: DecodeOptions | dict | None = None
                   ) -> tuple[int, int] | None:
    """(first cue start, last cue end) of an SRT/VTT file; None if it has no valid cue."""
    return _span((r[0], r[1]) for r in _valid_rows(path, fmt, options))


def span_text_jsonl(path: str, options: DecodeOptions | dict | None = None
                    ) -> tuple[int, int] | None:
    """(first start, last end) of a text JSONL file; None if it has no valid line."""
    return _span((r[0], r[1]) for r in _valid_rows(path, "jsonl", options))


def _valid_rows(path: str, fmt: str, options) -> Iterator[tuple[int, int]]:
    decode = {"srt": decode_srt, "vtt": decode_vtt, "jsonl": decode_text_jsonl}[fmt]
    for out in decode(path, session_id="", stream_id="", options=options):
        if isinstance(out, Chunk):
            yield from zip(out.data.column("t_ns").to_pylist(),
                           out.data.column("t_end_ns").to_pylist(), strict=True)
