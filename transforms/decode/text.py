"""Text decoders: SRT, WebVTT and JSONL timed segments/words -> rows of schemas/text.py.

Files are read line by line and each cue (a blank-line separated block) is decoded from its own
bytes, so a cue with invalid UTF-8 or a bad timing line is one ``cue=N`` DeadLetter and the cues
around it still come out. ``pos`` = cue index (SRT/VTT blocks, NOTE/STYLE/REGION blocks not
counted) or non-blank line index (JSONL). Formatting tags (<i>, <c.x>, <v Name>, {\\an8}) are
stripped; line breaks inside a cue are kept as "\\n".
"""

from __future__ import annotations

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
from mmalign.transforms.decode.base import SourceFile

_SRT_TIME = r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_SRT_TIMING = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s.*)?$")
_VTT_TIME = r"(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})"
_VTT_TIMING = re.compile(rf"^\s*{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t].*)?$")
_TAGS = re.compile(r"<[^>\n]*>|\{\\[^}\n]*\}")
_VTT_SKIP = (b"NOTE", b"STYLE", b"REGION")


class CueError(ValueError):
    def __init__(self, reason: str, what: str):
        super().__init__(what)
        self.reason = reason


def _ns(h: str | None, m: str, s: str, frac: str) -> int:
    ms = int(frac.ljust(3, "0"))
    return ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * 1_000_000_000 + ms * 1_000_000


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
        for k, v in zip(ARROW_SCHEMA.names, (t0, t1, pos, text, kind), strict=True):
            self.rows[k].append(v)
        if len(self.rows["pos"]) >= self.chunk_rows:
            yield from self.flush()

    def flush(self) -> Iterator[Chunk]:
        if self.rows["pos"]:
            yield self.src.chunk(pa.RecordBatch.from_pydict(self.rows, schema=ARROW_SCHEMA))
            self.rows = {n: [] for n in ARROW_SCHEMA.names}


def _subtitles(path: str, session_id: str, stream_id: str, options, fmt: str
               ) -> Iterator[Chunk | DeadLetter]:
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "text", str(path), meta={"format": fmt})
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    rows = _Rows(src, opts.chunk_rows)
    parse = parse_srt_cue if fmt == "srt" else parse_vtt_cue
    pos = 0
    for i, raw in enumerate(blocks(path)):
        if i == 0:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
            if fmt == "vtt":
                first = raw.split(b"\n", 1)[0]
                if not (first == b"WEBVTT" or first.startswith((b"WEBVTT ", b"WEBVTT\t"))):
                    yield src.dead("not_webvtt", f"{path} does not start with a 'WEBVTT' "
                                   "header line.", error_class="ParseError")
                    return
                if b"-->" not in raw:
                    continue                     # the header block
                raw = raw.split(b"\n", 1)[1]     # a cue right under the header line
        if fmt == "vtt" and any(raw == k or raw.startswith((k + b" ", k + b"\t", k + b"\n"))
                                for k in _VTT_SKIP):
            continue
        try:
            t0, t1, text = parse(raw)
        except CueError as e:
            yield src.dead(e.reason, f"{path}: cue {pos} {e}.", error_class="ParseError"
                           if e.reason != "invalid_utf8" else "EncodingError",
                           position=f"cue={pos}", payload=raw, payload_format=f"{fmt}-cue")
        else:
            yield from rows.add(t0, t1, pos, text, "segment")
        pos += 1
    yield from rows.flush()


def decode_srt(path: str, *, session_id: str, stream_id: str,
               options: DecodeOptions | dict | None = None) -> Iterator[Chunk | DeadLetter]:
    """SubRip subtitles -> segments."""
    yield from _subtitles(path, session_id, stream_id, options, "srt")


def decode_vtt(path: str, *, session_id: str, stream_id: str,
               options: DecodeOptions | dict | None = None) -> Iterator[Chunk | DeadLetter]:
    """WebVTT -> segments (header, NOTE/STYLE/REGION blocks skipped, cue settings ignored)."""
    yield from _subtitles(path, session_id, stream_id, options, "vtt")


def _seconds_ns(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        raise CueError("bad_timestamp", f"field {name!r} must be a number of seconds")
    if isinstance(v, Decimal) and not v.is_finite():
        raise CueError("bad_timestamp", f"field {name!r} is not finite")
    return int((Decimal(v) * 1_000_000_000).to_integral_value())


def parse_jsonl_segment(raw: bytes) -> tuple[int, int, str, str]:
    """One JSONL line -> (start_ns, end_ns, text, kind); raises CueError."""
    try:
        obj = json.loads(_decode_utf8(raw), parse_float=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as e:
        raise CueError("bad_json", f"is not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CueError("bad_json", "is not a JSON object")
    if "start_ns" in obj or "end_ns" in obj:
        t = []
        for k in ("start_ns", "end_ns"):
            v = obj.get(k)
            if isinstance(v, bool) or not isinstance(v, int):
                raise CueError("bad_timestamp", f"field {k!r} must be an integer")
            t.append(v)
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
                      options: DecodeOptions | dict | None = None
                      ) -> Iterator[Chunk | DeadLetter]:
    """JSONL of ``{"start": s, "end": s, "text": ..., "kind": "word"|"segment"}`` (seconds,
    parsed exactly) or ``start_ns``/``end_ns`` integers -> segments/words."""
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "text", str(path), meta={"format": "jsonl"})
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    rows = _Rows(src, opts.chunk_rows)
    pos = 0
    with open(path, "rb") as fh:
        for raw in fh:
            raw = raw.rstrip(b"\r\n")
            if pos == 0:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                t0, t1, text, kind = parse_jsonl_segment(raw)
            except CueError as e:
                yield src.dead(e.reason, f"{path}: line {pos} {e}.", error_class="ParseError"
                               if e.reason != "invalid_utf8" else "EncodingError",
                               position=f"cue={pos}", payload=raw, payload_format="jsonl-row")
            else:
                yield from rows.add(t0, t1, pos, text, kind)
            pos += 1
    yield from rows.flush()
