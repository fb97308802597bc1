"""Sensor decoders: CSV, Parquet and JSONL samples -> rows of ``schemas.sensor.arrow_schema``.

Read in chunks of ``options.chunk_rows`` rows (CSV: blocks of lines parsed by pyarrow, Parquet:
``iter_batches``, JSONL: line by line). Times come from ``options.time_column`` (default: the
first of t_ns/timestamp_ns/timestamp/time/t, case-insensitive, a "[unit]" suffix or leading "#"
ignored) in ``options.time_unit`` (default ns), exactly. Channels are ``options.channels`` or
every other numeric column. A row whose time or a channel value cannot be parsed is a ``row=N``
DeadLetter with the raw line; NaN/inf/empty values stay NaN/inf (the validate stage rejects
them). ``pos`` = 0-based data row (blank and '#' lines are not rows).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.schemas.sensor import arrow_schema
from mmalign.transforms.decode.base import (
    INT64_MAX,
    UNIT_NS,
    SourceFile,
    SpanAccumulator,
    TimestampOverflow,
    checked_ns,
    checked_ns_array,
    count_nonblank_lines,
    iter_lines,
    parse_time_ns,
    short_error,
)

TIME_CANDIDATES = ("t_ns", "timestamp_ns", "timestamp", "time", "t")
NAN_TOKENS = {"", "nan", "+nan", "-nan", "na", "n/a", "null", "none"}
_UNIT_SUFFIX = re.compile(r"\s*\[[^\]]*\]\s*$")


class SensorFileError(ValueError):
    """The file as a whole cannot be used (no time column, unknown channel, ...)."""

    def __init__(self, reason: str, what: str):
        super().__init__(what)
        self.reason = reason


def find_time_column(names: Sequence[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in names:
            raise SensorFileError("missing_time_column", f"has no time column {wanted!r} "
                                  f"(columns: {list(names)}); fix options.time_column")
        return wanted
    norm = {_UNIT_SUFFIX.sub("", n.lstrip("#").strip()).lower(): n for n in reversed(names)}
    for cand in TIME_CANDIDATES:
        if cand in norm:
            return norm[cand]
    raise SensorFileError("missing_time_column", f"has none of the time columns "
                          f"{list(TIME_CANDIDATES)} (columns: {list(names)}); set "
                          "options.time_column")


def _check_channels(names: Sequence[str], channels: Sequence[str], time_col: str) -> list[str]:
    missing = [c for c in channels if c not in names]
    if missing:
        raise SensorFileError("missing_channel", f"has no channel column(s) {missing} "
                              f"(columns: {list(names)}); fix options.channels")
    chans = [c for c in channels if c != time_col]
    if not chans:
        raise SensorFileError("no_channels", "has no numeric channel columns besides the time "
                              f"column {time_col!r}")
    return chans


def parse_numbers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (float64 values, bad mask). NaN/inf spellings and empty fields are values
    (NaN/inf), not errors; anything else unparseable is bad."""
    try:   # fast path: every field a plain number or a NaN/inf spelling Arrow knows
        vals = pc.cast(pc.utf8_trim_whitespace(strings), pa.float64())
        return vals.to_numpy(zero_copy_only=False), np.zeros(len(vals), bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    s = strings.to_pandas().astype(object)
    vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    nan = np.isnan(vals)
    # pandas' parser may differ from the decimal text in the last bit; Python's float is exact
    # (this path runs only for blocks that hold a bad field)
    for i in np.flatnonzero(~nan):
        try:
            vals[i] = float(s.iat[i])
        except (TypeError, ValueError):
            pass
    if not nan.any():
        return vals, nan
    tokens = pd.Series(s[nan]).astype(str).str.strip().str.lower()
    bad = nan.copy()
    bad[nan] = ~tokens.isin(NAN_TOKENS).to_numpy()
    return vals, bad


def _scale(ints: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``ints * scale`` exactly: (products, overflow mask); overflowing entries 0."""
    if scale == 1:
        return ints, np.zeros(len(ints), bool)
    lo, hi = -(2**63 // scale), INT64_MAX // scale
    over = (ints < lo) | (ints > hi)
    return np.where(over, 0, ints) * np.int64(scale), over


def parse_times(strings: pa.Array, unit: str, offset: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strings -> (int64 ns + ``offset``, unparseable mask, out-of-int64 mask), exact:
    integers vectorised, decimals via Decimal; bad and overflowing entries are 0."""
    trimmed = pc.utf8_trim_whitespace(strings)
    try:
        ints = pc.cast(trimmed, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ints = None
    if ints is not None:
        out, over = _scale(ints, UNIT_NS[unit])
        out, over2 = checked_ns_array(out, offset)
        return out, np.zeros(len(out), bool), over | over2
    out = np.zeros(len(strings), np.int64)
    bad = np.zeros(len(strings), bool)
    over = np.zeros(len(strings), bool)
    for i, tok in enumerate(trimmed.to_pylist()):
        try:
            out[i] = checked_ns(parse_time_ns(tok or "", unit), offset)
        except TimestampOverflow:
            over[i] = True
        except ValueError:
            bad[i] = True
    return out, bad, over


def _batch(t_ns: np.ndarray, pos: np.ndarray, cols: list[np.ndarray],
           channels: list[str]) -> pa.RecordBatch:
    arrays = [pa.array(t_ns, pa.int64()), pa.array(pos, pa.int64())]
    arrays += [pa.array(c, pa.float64()) for c in cols]
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(channels))


def _start(path: str, session_id: str, stream_id: str, options, fmt: str,
           roots: tuple[str, ...], time_offset_ns: int
           ) -> tuple[DecodeOptions, SourceFile, DeadLetter | None]:
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "sensor", str(path), meta={"format": fmt},
                     roots=roots, time_offset_ns=time_offset_ns, unit="rows")
    return opts, src, src.check_file(opts.max_bytes)


def _file_dead(src: SourceFile, e: SensorFileError) -> DeadLetter:
    return src.dead(e.reason, f"{src.path} {e}.", error_class="SchemaMismatch")


# ---------------------------------------------------------------- CSV

def _needs_filter(body: bytes) -> bool:
    """True if some line may be blank, a comment, CR-terminated or start with whitespace."""
    return (body[:1] in (b"", b"\n", b" ", b"\t") or b"#" in body or b"\r" in body
            or b"\n\n" in body or b"\n " in body or b"\n\t" in body or b"\x0b" in body
            or b"\x0c" in body)


def _is_row(line: bytes) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith(b"#")


def _csv_lines(fh, n: int, first: list[bytes] | None = None
               ) -> Iterator[tuple[int, list[bytes]]]:
    """Blocks of up to ``n`` data lines as (row index of the first, lines), ``first`` (lines
    already read) leading; blank and '#' lines are skipped and not counted as rows. Lines end
    at LF, CRLF or a bare CR (``iter_lines``, and Arrow's reader). Reads 1 MiB at a time;
    buffers free of comments, CRs and blank lines are split in C."""
    row, block = 0, [ln for ln in first or [] if _is_row(ln)]
    pending: list[bytes] = []                   # the start of a line not yet ended
    while True:
        buf = fh.read(1 << 20)
        if buf:
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
            if cut == len(buf) and buf.endswith(b"\r"):
                cut -= 1                        # maybe half of a CRLF: keep the CR
            if cut <= 0:
                pending.append(buf)             # no line end yet (joined once, not per read)
                continue
            data = b"".join([*pending, buf[:cut]])
            pending = [buf[cut:]] if cut < len(buf) else []
        else:
            data, pending = b"".join(pending), []
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if data:
            body = data[:-1] if data.endswith(b"\n") else data
            if not _needs_filter(body):
                block += body.split(b"\n")
            else:
                block += [ln for ln in body.split(b"\n") if _is_row(ln)]
        while len(block) >= n:
            yield row, block[:n]
            row, block = row + n, block[n:]
        if not buf:
            break
    if block:
        yield row, block


def _find_header(fh, delimiter: str) -> tuple[bytes, list[bytes]]:
    """(header line, lines already read after it). The header is the first line that is not
    blank or a '#' comment, unless that line is data (its first field is a number): then the
    last comment line is the header (the EuRoC "#timestamp,..." layout)."""
    last_comment = b""
    for raw in fh:
        parts = list(iter_lines([raw]))
        for k, part in enumerate(parts):
            line = part.strip()
            if not line:
                continue
            if line.startswith(b"#"):
                last_comment = line
                continue
            first = line.split(delimiter.encode(), 1)[0].strip()
            try:
                float(first)
            except ValueError:
                return line, parts[k + 1:]
            if last_comment:
                return last_comment, parts[k:]
            return line, parts[k + 1:]
    return last_comment, []


def count_csv_rows(path: str, delimiter: str = ",") -> int:
    """A sensor CSV's data lines, counted without parsing them: lines (``iter_lines``) that
    are not blank and not '#' comments, less a header line (the first such line, unless its
    first field is a number)."""
    n, header = 0, False
    with open(path, "rb") as fh:
        for raw in iter_lines(fh):
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            if not header:
                header = True
                try:
                    float(line.split(delimiter.encode(), 1)[0].strip())
                except ValueError:
                    continue                    # a named header line
            n += 1
    return n


def decode_sensor_csv(path: str, *, session_id: str, stream_id: str,
                      options: DecodeOptions | dict | None = None,
                      roots: tuple[str, ...] = (), time_offset_ns: int = 0
                      ) -> Iterator[Chunk | DeadLetter]:
    """CSV with a header line (see ``_find_header``) -> sensor chunks. Declared rows: the data
    lines (``count_csv_rows``)."""
    opts, src, bad = _start(path, session_id, stream_id, options, "csv", roots, time_offset_ns)
    src.unit, src.declared_by = "rows", "its data lines"
    yield from src.run(_csv(src, opts, bad))


def _csv(src: SourceFile, opts: DecodeOptions, bad: DeadLetter | None
         ) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if bad is not None:
        yield bad
        return
    src.declared = functools.partial(count_csv_rows, path, opts.delimiter)
    unit = opts.time_unit or "ns"
    with open(path, "rb") as fh:
        header, first_data = _find_header(fh, opts.delimiter)
        try:
            head = header.decode("utf-8-sig").lstrip("#")
        except UnicodeDecodeError:
            yield src.dead("bad_header", f"{path}: the header line is not UTF-8 text.",
                           error_class="ParseError")
            return
        names = [n.strip() for n in next(csv.reader([head], delimiter=opts.delimiter), [])]
        if not header or len(set(names)) != len(names) or "" in names:
            yield src.dead("bad_header", f"{path}: the header line {head[:120]!r} must name "
                           "every column once.", error_class="ParseError")
            return
        try:
            time_col = find_time_column(names, opts.time_column)
        except SensorFileError as e:
            yield _file_dead(src, e)
            return
        channels: list[str] | None = None
        for first_row, block in _csv_lines(fh, opts.chunk_rows, first_data):
            table, rejected = _parse_block(first_row, block, names, opts.delimiter)
            for row, line, why, reason in rejected:
                yield src.dead(reason, f"{path}: row {row} {why}.",
                               error_class="EncodingError" if reason == "invalid_utf8"
                               else "ParseError", position=f"row={row}", payload=line,
                               payload_format="csv-row")
            rows = np.arange(first_row, first_row + len(block), dtype=np.int64)
            lines = block
            if rejected:
                keep = ~np.isin(rows, np.array([r[0] for r in rejected], np.int64))
                rows, lines = rows[keep], [ln for ln, k in zip(block, keep, strict=True) if k]
            if channels is None:
                try:
                    channels = _csv_channels(table, names, time_col, opts.channels)
                except SensorFileError as e:
                    yield _file_dead(src, e)
                    return
                src.meta.update(channels=channels, time_column=time_col, time_unit=unit)
            t_ns, bad_t, over_t = parse_times(table.column(time_col), unit, src.time_offset_ns)
            cols, bad_any = [], bad_t | over_t
            bad_col: list[str | None] = [time_col if b else None for b in bad_any]
            for c in channels:
                vals, bad_c = parse_numbers(table.column(c))
                cols.append(vals)
                for i in np.flatnonzero(bad_c & ~bad_any):
                    bad_col[i] = c
                bad_any |= bad_c
            for i in np.flatnonzero(bad_any):
                col = bad_col[i]
                value = table.column(col)[int(i)].as_py()
                row = {"position": f"row={rows[i]}", "payload": lines[i],
                       "payload_format": "csv-row", "attrs": {"column": col}}
                if over_t[i]:
                    yield src.dead("timestamp_overflow", f"{path}: row {rows[i]} time "
                                   f"{value[:40]!r} ({unit}, offset {src.time_offset_ns} ns) "
                                   "does not fit int64 nanoseconds.",
                                   error_class="TimestampOverflow", **row)
                    continue
                reason = "bad_timestamp" if col == time_col else "non_numeric"
                yield src.dead(reason, f"{path}: row {rows[i]} column {col!r} value "
                               f"{value[:40]!r} is not a number.", error_class="ParseError",
                               **row)
            good = ~bad_any
            if good.any():
                yield src.chunk(_batch(t_ns[good], rows[good], [c[good] for c in cols],
                                       channels))


def _read_lines(first_row: int, lines: list[bytes], names: list[str], delimiter: str
                ) -> tuple[pa.Table, list[tuple[int, bytes, str]]]:
    invalid: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        why = f"has {row.actual_columns} fields, the header has {row.expected_columns}"
        invalid.append((row.number, why))
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(b"\n".join(lines)),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                         ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                             strings_can_be_null=False))
    if any(n > len(lines) for n, _ in invalid):   # a bare CR inside a line split it
        raise _Misaligned
    return table, [(first_row + n - 1, lines[n - 1], why, "wrong_field_count")
                   for n, why in invalid]


class _Misaligned(Exception):
    """Arrow's rows do not map onto the lines given."""


Rejected = list[tuple[int, bytes, str, str]]        # (row, line, why, reason)


def _parse_block(first_row: int, lines: list[bytes], names: list[str], delimiter: str
                 ) -> tuple[pa.Table, Rejected]:
    """Lines -> all-string table, one row per line; lines that cannot be rows are returned
    apart as (row, line, why, reason): the wrong field count, not UTF-8, a carriage return
    inside. A block whose rows do not map 1:1 onto its lines (an unbalanced quote joins
    lines), that holds a CR (Arrow would split that line in two) or invalid UTF-8 is parsed
    again line by line."""
    joined = b"\n".join(lines)
    try:
        joined.decode("utf-8")          # Arrow's bad-row handler fails on invalid UTF-8
        if b"\r" not in joined:         # Arrow splits rows at a bare CR, lines do not
            table, rejected = _read_lines(first_row, lines, names, delimiter)
            if table.num_rows + len(rejected) == len(lines):
                return table, rejected
    except (pa.ArrowException, UnicodeDecodeError, _Misaligned):
        pass
    empty = pa.table({n: pa.array([], pa.string()) for n in names})
    tables, rejected = [], []
    for i, line in enumerate(lines):
        row = first_row + i
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            tables.append(empty)
            rejected.append((row, line, f"has bytes that are not UTF-8 (at byte {e.start})",
                             "invalid_utf8"))
            continue
        split = (row, line, "cannot be split into fields", "wrong_field_count")
        if b"\r" in line:
            tables.append(empty)
            rejected.append((row, line, "has a carriage return inside it", "bad_csv_row"))
            continue
        try:
            t, r = _read_lines(row, [line], names, delimiter)
        except _Misaligned:                         # a bare CR: Arrow saw two rows
            t, r = empty, [split]
        except (pa.ArrowException, UnicodeDecodeError) as e:
            t, r = empty, [(row, line, f"cannot be parsed ({short_error(e)})", "bad_csv_row")]
        if t.num_rows > 1:
            t, r = empty, [split]
        tables.append(t)
        rejected += r
    return pa.concat_tables(tables), rejected


def _csv_channels(table: pa.Table, names: list[str], time_col: str,
                  wanted: list[str] | None) -> list[str]:
    if wanted:
        return _check_channels(names, wanted, time_col)
    chans = []
    for c in names:
        if c == time_col:
            continue
        vals, bad = parse_numbers(table.column(c))
        filled = ~np.isnan(vals) | bad
        if filled.any() and (~bad[filled]).sum() * 2 >= filled.sum():
            chans.append(c)
    return _check_channels(names, chans, time_col)


# ---------------------------------------------------------------- Parquet

_TS_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def count_parquet_rows(path: str) -> int | None:
    """The rows a Parquet file's footer declares (None if it cannot be read)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return None


def _parquet_times(col: pa.ChunkedArray | pa.Array, unit: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Parquet time column (timestamp, integer, float, string) -> (int64 ns, unusable mask
    (null, NaN, unparseable), out-of-int64 mask); masked entries are 0."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return parse_times(pc.cast(col, pa.string()).fill_null(""), unit)
    if pa.types.is_floating(t):
        v = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore", over="ignore"):
            ns = np.where(ok, v, 0.0) * UNIT_NS[unit]
        over = ok & ~((ns >= -(2.0**63)) & (ns < 2.0**63))
        out = np.zeros(len(v), np.int64)
        fits = ok & ~over
        out[fits] = np.round(ns[fits]).astype(np.int64)
        return out, ~ok, over
    if pa.types.is_timestamp(t):
        scale = _TS_UNIT_NS[t.unit]
        col = pc.cast(col, pa.int64())
    elif pa.types.is_integer(t):
        scale = UNIT_NS[unit]
    else:
        raise SensorFileError("bad_time_type", f"has a time column of type {t}, which is not "
                              "a timestamp, integer, float or string")
    null = np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), bool)
    try:
        ints = pc.cast(col, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        out, over = _scale(ints, scale)
    except pa.ArrowInvalid:                      # uint64 beyond int64
        out = np.zeros(len(col), np.int64)
        over = np.zeros(len(col), bool)
        for i, v in enumerate(col.to_pylist()):
            if v is None:
                continue
            try:
                out[i] = checked_ns(int(v) * scale)
            except TimestampOverflow:
                over[i] = True
    return np.where(null, 0, out), null, over & ~null


def decode_sensor_parquet(path: str, *, session_id: str, stream_id: str,
                          options: DecodeOptions | dict | None = None,
                          roots: tuple[str, ...] = (), time_offset_ns: int = 0
                          ) -> Iterator[Chunk | DeadLetter]:
    """Parquet samples, read batch by batch. Declared rows: the footer's row count."""
    opts, src, bad = _start(path, session_id, stream_id, options, "parquet", roots,
                            time_offset_ns)
    src.declared_by = "its footer"
    yield from src.run(_parquet(src, opts, bad))


def _parquet(src: SourceFile, opts: DecodeOptions, bad: DeadLetter | None
             ) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if bad is not None:
        if bad.reason == "oversize":            # the footer alone says what the letter costs
            src.declared = functools.partial(count_parquet_rows, path)
        yield bad
        return
    unit = opts.time_unit or "ns"
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        yield src.dead("corrupt_file", f"{path} cannot be opened as Parquet "
                       f"({short_error(e)}).", error_class="CorruptMedia")
        return
    with pf:
        src.declared = pf.metadata.num_rows
        schema = pf.schema_arrow
        names = schema.names
        try:
            time_col = find_time_column(names, opts.time_column)
            chans = opts.channels or [
                f.name for f in schema if f.name != time_col and (
                    pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                    or pa.types.is_decimal(f.type))]
            channels = _check_channels(names, chans, time_col)
        except SensorFileError as e:
            yield _file_dead(src, e)
            return
        src.meta.update(channels=channels, time_column=time_col, time_unit=unit)
        row = 0
        batches = pf.iter_batches(batch_size=opts.chunk_rows, columns=[time_col, *channels])
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:
                yield src.dead("corrupt_file", f"{path}: reading stopped at row {row} "
                               f"({short_error(e)}); later rows are lost.",
                               error_class="CorruptMedia", position=f"row={row}", ends=True)
                break
            n = batch.num_rows
            try:
                t_ns, bad_t, over_t = _parquet_times(batch.column(time_col), unit)
                t_ns, over_o = src.t_array(t_ns)
                over_t |= over_o & ~bad_t
                cols = [pc.cast(batch.column(c), pa.float64()).fill_null(math.nan)
                        .to_numpy(zero_copy_only=False) for c in channels]
            except (SensorFileError, pa.ArrowException) as e:
                reason = getattr(e, "reason", "bad_column_type")
                yield src.dead(reason, f"{path}: {short_error(e)}.",
                               error_class="SchemaMismatch")
                return
            pos = np.arange(row, row + n, dtype=np.int64)
            for i in np.flatnonzero(bad_t | over_t):
                rec = {k: batch.column(k)[int(i)].as_py() for k in (time_col, *channels)}
                where = {"position": f"row={pos[i]}", "payload_format": "json",
                         "payload": json.dumps(rec, default=str).encode()}
                if over_t[i]:
                    yield src.dead("timestamp_overflow", f"{path}: row {pos[i]} time "
                                   f"{str(rec[time_col])[:40]!r} (offset "
                                   f"{src.time_offset_ns} ns) does not fit int64 nanoseconds.",
                                   error_class="TimestampOverflow", **where)
                else:
                    yield src.dead("bad_timestamp", f"{path}: row {pos[i]} has no usable "
                                   f"time in column {time_col!r}.", error_class="ParseError",
                                   **where)
            good = ~(bad_t | over_t)
            if good.any():
                yield src.chunk(_batch(t_ns[good], pos[good], [c[good] for c in cols],
                                       channels))
            row += n


# ---------------------------------------------------------------- JSONL

def _json_number(v) -> float | None:
    """A JSON value as a channel float; None if it is not a number (bools are not)."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
        return None
    return float(v)


def _json_time(v, unit: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal, str)):
        raise TypeError("not a number")
    return parse_time_ns(str(v), unit)


def decode_sensor_jsonl(path: str, *, session_id: str, stream_id: str,
                        options: DecodeOptions | dict | None = None,
                        roots: tuple[str, ...] = (), time_offset_ns: int = 0
                        ) -> Iterator[Chunk | DeadLetter]:
    """One JSON object per line -> sensor chunks (missing or null channel values are NaN).
    Declared rows: the non-blank lines."""
    opts, src, bad = _start(path, session_id, stream_id, options, "jsonl", roots,
                            time_offset_ns)
    src.declared_by = "its non-blank lines"
    yield from src.run(_jsonl(src, opts, bad))


def _jsonl(src: SourceFile, opts: DecodeOptions, bad: DeadLetter | None
           ) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if bad is not None:
        yield bad
        return
    src.declared = functools.partial(count_nonblank_lines, path)
    unit = opts.time_unit or "ns"
    time_col: str | None = None
    channels: list[str] = []
    t_l: list[int] = []
    pos_l: list[int] = []
    cols_l: list[list[float]] = []
    row = 0

    def flush() -> Chunk:
        c = src.chunk(_batch(np.array(t_l, np.int64), np.array(pos_l, np.int64),
                             [np.array(v, np.float64) for v in cols_l], channels))
        t_l.clear(), pos_l.clear(), [v.clear() for v in cols_l]
        return c

    with open(path, "rb") as fh:
        for line in iter_lines(fh):
            if row == 0:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            here, row = row, row + 1

            def dead(reason: str, what: str, line=line, here=here,
                     error_class="ParseError") -> DeadLetter:
                return src.dead(reason, f"{path}: row {here} {what}.", error_class=error_class,
                                position=f"row={here}", payload=line,
                                payload_format="jsonl-row")
            try:
                obj = json.loads(line.decode("utf-8"), parse_float=Decimal)
            except UnicodeDecodeError:
                yield dead("invalid_utf8", "is not valid UTF-8")
                continue
            except json.JSONDecodeError as e:
                yield dead("bad_json", f"is not valid JSON ({e.msg})")
                continue
            except (ValueError, RecursionError) as e:   # 5000-digit numbers, deep nesting
                yield dead("bad_json", f"is not usable JSON ({short_error(e)})")
                continue
            if not isinstance(obj, dict):
                yield dead("bad_json", "is not a JSON object")
                continue
            if time_col is None:
                try:
                    time_col = find_time_column(list(obj), opts.time_column)
                    # explicit channels may be absent from a row (NaN); default: numeric keys
                    chans = opts.channels or [k for k, v in obj.items() if k != time_col
                                              and _json_number(v) is not None]
                    channels = _check_channels([*obj, *chans], chans, time_col)
                except SensorFileError as e:
                    yield _file_dead(src, e)
                    return
                cols_l = [[] for _ in channels]
                src.meta.update(channels=channels, time_column=time_col, time_unit=unit)
            if time_col not in obj:
                yield dead("bad_timestamp", f"has no {time_col!r} field")
                continue
            try:
                t = src.t(_json_time(obj[time_col], unit), f"field {time_col!r} =")
            except TimestampOverflow as e:
                yield dead("timestamp_overflow", f"field {time_col!r} value "
                           f"{str(obj[time_col])[:40]!r} ({unit}, offset {src.time_offset_ns} "
                           f"ns) does not fit int64 nanoseconds ({short_error(e)})",
                           error_class="TimestampOverflow")
                continue
            except (TypeError, ValueError):
                yield dead("bad_timestamp", f"field {time_col!r} value "
                           f"{str(obj[time_col])[:40]!r} is not a number")
                continue
            vals = [_json_number(obj.get(c)) for c in channels]
            if None in vals:
                c = channels[vals.index(None)]
                yield dead("non_numeric", f"field {c!r} value {str(obj[c])[:40]!r} is not a "
                           "number")
                continue
            t_l.append(t)
            pos_l.append(here)
            for acc, v in zip(cols_l, vals, strict=True):
                acc.append(v)
            if len(t_l) >= opts.chunk_rows:
                yield flush()
    if t_l:
        yield flush()


# ---------------------------------------------------------------- segment spans

def span_sensor(path: str, fmt: str, options: DecodeOptions | dict | None = None
                ) -> tuple[int, int] | None:
    """(first_ns, end_ns) of a sensor file from its decoded times: the smallest, and the
    largest + the median sample period (``SpanAccumulator``). None if no row decodes."""
    decode = {"csv": decode_sensor_csv, "parquet": decode_sensor_parquet,
              "jsonl": decode_sensor_jsonl}[fmt]
    acc = SpanAccumulator()
    for out in decode(path, session_id="", stream_id="", options=options):
        if isinstance(out, Chunk):
            acc.add(out.t_ns())
    return acc.span()
