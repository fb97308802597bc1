"""GoPro GPMF telemetry: one sensor stream (GYRO, ACCL, GPS5, ...) of the ``gpmd`` track of an
MP4 -> rows of ``schemas.sensor.arrow_schema``.

Reading: the MP4's sample table (stsd ``gpmd``, stts, stsc, stsz, stco/co64; every payload the
table lists, as gpmf-parser reads them, whatever an edit list hides from a demuxer), then each
payload's KLV tree (4-byte key, type, struct size, big-endian repeat, data padded to 4 bytes;
type 0 nests). The wanted FourCC (``options.gpmf_stream``, default GYRO) is found in a
``DEVC/STRM`` with its sticky properties: ``SCAL`` (divisors, one or one per element), ``TYPE``
(element types of a ``?`` structure), ``ORIN`` (axis order: the channel names of
GYRO/ACCL/MAGN/GRAV), ``TSMP`` (total samples so far), ``TIMO`` (time offset, s), ``STNM``,
``SIUN``/``UNIT``.

Timing, as gpmf-parser's ``GetGPMFSampleRate`` (GPMF_SAMPLE_RATE_PRECISE) does: a
least-squares line of the cumulative sample count after each payload against that payload's
end time, ``count = rate * t + intercept``; sample k (0-based over the file) is at
``-intercept / rate - TIMO + k / rate`` s. Not an even spread of each payload's samples over
its duration: payload boundaries jitter, the sensor clock does not. A file whose stream has
one payload only gets the even spread of that payload (no line to fit).

Payload times are the track's own (stts, shifted by its edit list as a demuxer shifts the
video's pts), so telemetry and frames of one file share a time axis. Channels: ORIN letters
(lower case) or x, y, z; GPS5 lat, lon, alt, speed_2d, speed_3d; GPS9 adds days, secs, dop,
fix; CORI w, x, y, z; otherwise c0, c1, ...; ``options.channels`` picks a subset.

Records: the stream's samples. Declared: the last ``TSMP`` less the samples before the first
payload (the file's own count), else the sum of the payloads' repeat counts. A payload whose
KLV tree is broken is a ``corrupt_payload`` letter; samples no payload yields are the
``truncated`` letter. ``pos`` = the sample's index in the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.schemas.sensor import arrow_schema
from mmalign.transforms.decode.base import SourceFile, SpanAccumulator, short_error

DEFAULT_STREAM = "GYRO"
MAX_SAMPLES = 50_000_000            # payload index sanity bound (a 10 h file has ~36 000)
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta"}

# GPMF type char -> numpy big-endian dtype
_TYPES = {"b": ">i1", "B": ">u1", "s": ">i2", "S": ">u2", "l": ">i4", "L": ">u4",
          "j": ">i8", "J": ">u8", "f": ">f4", "d": ">f8", "q": ">u4", "Q": ">u8"}
_NAMES = {"GPS5": ["lat", "lon", "alt", "speed_2d", "speed_3d"],
          "GPS9": ["lat", "lon", "alt", "speed_2d", "speed_3d", "days", "secs", "dop", "fix"],
          "CORI": ["w", "x", "y", "z"], "IORI": ["w", "x", "y", "z"]}
_AXES = {"GYRO", "ACCL", "MAGN", "GRAV"}


class GpmfError(ValueError):
    """The file or a payload cannot be read; ``reason`` is the dead-letter slug."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- MP4 sample table

@dataclass
class GpmdTrack:
    """The ``gpmd`` track's payloads: file offsets, sizes and times (s)."""
    offsets: np.ndarray
    sizes: np.ndarray
    t_in: np.ndarray
    t_out: np.ndarray
    timescale: int


def _boxes(f, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in [start, end)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head)
        hdr = 8
        if size == 1:
            ext = f.read(8)
            if len(ext) < 8:
                return
            size, hdr = struct.unpack(">Q", ext)[0], 16
        elif size == 0:
            size = end - pos
        if size < hdr or pos + size > end:
            raise GpmfError("corrupt_file", f"MP4 box {kind!r} at byte {pos} has size {size} "
                            f"beyond its parent (ends at {end})")
        yield kind, pos + hdr, pos + size
        pos += size


def _read(f, start: int, end: int, limit: int = 1 << 28) -> bytes:
    if end - start > limit:
        raise GpmfError("corrupt_file", f"MP4 box of {end - start} bytes is too large")
    f.seek(start)
    return f.read(end - start)


def _table(data: bytes, count_at: int, entry: str, what: str) -> np.ndarray:
    n = struct.unpack_from(">I", data, count_at)[0]
    width = struct.calcsize(">" + entry)
    if count_at + 4 + n * width > len(data) or n > MAX_SAMPLES:
        raise GpmfError("corrupt_file", f"MP4 {what} table claims {n} entries, more than the "
                        "box holds")
    return np.frombuffer(data, ">" + entry[0], count=n * len(entry),
                         offset=count_at + 4).reshape(n, len(entry)).astype(np.int64)


def read_gpmd_track(path: str) -> GpmdTrack:
    """The first track whose sample description is ``gpmd``; ``GpmfError`` if none."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        moov = next(((a, b) for k, a, b in _boxes(f, 0, size) if k == b"moov"), None)
        if moov is None:
            raise GpmfError("corrupt_file", "has no MP4 'moov' box (not an MP4/MOV file, or cut "
                            "before its index)")
        movie_scale = 1
        for k, a, b in _boxes(f, *moov):
            if k == b"mvhd":
                d = _read(f, a, b)
                movie_scale = struct.unpack_from(">I", d, 20 if d[0] == 1 else 12)[0] or 1
        for k, a, b in _boxes(f, *moov):
            if k == b"trak":
                track = _trak(f, a, b, movie_scale, size)
                if track is not None:
                    return track
    raise GpmfError("no_gpmf_track", "has no GPMF telemetry track (no 'gpmd' sample "
                    "description); a GoPro HERO5 or later writes one")


def _trak(f, a: int, b: int, movie_scale: int, file_size: int) -> GpmdTrack | None:
    boxes: dict[bytes, bytes] = {}

    def walk(lo, hi):
        for k, x, y in _boxes(f, lo, hi):
            if k in _CONTAINERS:
                walk(x, y)
            elif k in (b"mdhd", b"stsd", b"stts", b"stsc", b"stsz", b"stco", b"co64", b"elst"):
                boxes[k] = _read(f, x, y)
    walk(a, b)
    stsd = boxes.get(b"stsd")
    if stsd is None or len(stsd) < 16 or stsd[12:16] != b"gpmd":
        return None
    for need in (b"mdhd", b"stts", b"stsc", b"stsz"):
        if need not in boxes:
            raise GpmfError("corrupt_file", f"the gpmd track has no '{need.decode()}' box")
    mdhd = boxes[b"mdhd"]
    timescale = struct.unpack_from(">I", mdhd, 20 if mdhd[0] == 1 else 12)[0]
    if timescale <= 0:
        raise GpmfError("corrupt_file", "the gpmd track's timescale is 0")
    stsz = boxes[b"stsz"]
    uniform, n = struct.unpack_from(">II", stsz, 4)
    if n > MAX_SAMPLES:
        raise GpmfError("corrupt_file", f"the gpmd track claims {n} payloads")
    if uniform:
        sizes = np.full(n, uniform, np.int64)
    else:
        if 12 + 4 * n > len(stsz):
            raise GpmfError("corrupt_file", "the gpmd track's stsz box is cut short")
        sizes = np.frombuffer(stsz, ">u4", count=n, offset=12).astype(np.int64)
    if b"stco" in boxes:
        chunks = _table(boxes[b"stco"], 4, "I", "stco")[:, 0]
    elif b"co64" in boxes:
        chunks = _table(boxes[b"co64"], 4, "Q", "co64")[:, 0]
    else:
        raise GpmfError("corrupt_file", "the gpmd track has no chunk offsets (stco/co64)")
    stsc = _table(boxes[b"stsc"], 4, "III", "stsc")
    offsets = np.zeros(n, np.int64)
    k = 0
    for c in range(len(chunks)):
        per = 0
        for first, spc, _ in stsc:            # the last entry whose first chunk <= c + 1
            if first <= c + 1:
                per = spc
        pos = int(chunks[c])
        for _ in range(per):
            if k >= n:
                break
            offsets[k] = pos
            pos += int(sizes[k])
            k += 1
    if k < n:
        raise GpmfError("corrupt_file", f"the gpmd track's chunks hold {k} of its {n} payloads")
    stts = _table(boxes[b"stts"], 4, "II", "stts")
    durations = np.repeat(stts[:, 1], stts[:, 0])[:n]
    if len(durations) < n:
        durations = np.concatenate([durations, np.zeros(n - len(durations), np.int64)])
    start = np.concatenate([[0], np.cumsum(durations)[:-1]]) if n else np.zeros(0, np.int64)
    shift = _edit_shift(boxes.get(b"elst"), movie_scale, timescale)
    t_in = start / timescale + shift
    t_out = (start + durations) / timescale + shift
    bad = offsets + sizes > file_size
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise GpmfError("corrupt_file", f"payload {j} lies beyond the end of the file (the file "
                        "is cut short)")
    return GpmdTrack(offsets, sizes, t_in, t_out, timescale)


def _edit_shift(elst: bytes | None, movie_scale: int, media_scale: int) -> float:
    """Seconds added to media times by an edit list: leading empty edits delay, the first
    real edit's media time is where presentation starts (as a demuxer applies it)."""
    if not elst or len(elst) < 8:
        return 0.0
    version = elst[0]
    n = struct.unpack_from(">I", elst, 4)[0]
    width = 20 if version == 1 else 12
    shift = 0.0
    for i in range(min(n, (len(elst) - 8) // width)):
        at = 8 + i * width
        if version == 1:
            dur, media = struct.unpack_from(">Qq", elst, at)
        else:
            dur, media = struct.unpack_from(">Ii", elst, at)
        if media == -1:
            shift += dur / movie_scale
            continue
        return shift - media / media_scale
    return shift


# ---------------------------------------------------------------- KLV

@dataclass
class StreamPayload:
    """One payload's samples of the wanted stream (raw, unscaled) and its sticky properties."""
    raw: np.ndarray                  # (n, k) float64
    scal: np.ndarray | None = None
    orin: str | None = None
    tsmp: int | None = None
    timo: float = 0.0
    name: str = ""
    units: str = ""
    meta: dict = field(default_factory=dict)


def _klv(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, str, int, int, int]]:
    """(key, type char or '\\0', struct size, repeat, data start) of the KLVs in [start, end)."""
    pos = start
    while pos + 8 <= end:
        key = buf[pos:pos + 4]
        if key == b"\0\0\0\0":
            return                            # padding: the payload ends here
        if not all(48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 32 for c in key):
            raise GpmfError("corrupt_payload", f"bad KLV key {key!r} at byte {pos}")
        typ, ssize, repeat = buf[pos + 4], buf[pos + 5], struct.unpack_from(">H", buf, pos + 6)[0]
        n = ssize * repeat
        if pos + 8 + n > end:
            raise GpmfError("corrupt_payload", f"KLV {key.decode()} at byte {pos} holds {n} "
                            f"bytes, beyond its parent (ends at {end})")
        yield key, chr(typ), ssize, repeat, pos + 8
        pos += 8 + ((n + 3) & ~3)


def _values(buf: bytes, typ: str, ssize: int, repeat: int, at: int, types: str | None
            ) -> np.ndarray:
    """A numeric KLV's data as (repeat, elements) float64."""
    if typ == "?":
        if not types:
            raise GpmfError("corrupt_payload", "a '?' structure without a TYPE")
        fields = []
        for j, ch in enumerate(types):
            if ch not in _TYPES:
                raise GpmfError("unsupported_type", f"TYPE element {ch!r} is not numeric")
            fields.append((f"f{j}", _TYPES[ch]))
        dt = np.dtype(fields)
        if dt.itemsize != ssize:
            raise GpmfError("corrupt_payload", f"TYPE {types!r} is {dt.itemsize} bytes, the "
                            f"structure {ssize}")
        rec = np.frombuffer(buf, dt, count=repeat, offset=at)
        return np.column_stack([rec[f].astype(np.float64) for f, _ in fields]) \
            if repeat else np.zeros((0, len(fields)))
    if typ not in _TYPES:
        raise GpmfError("unsupported_type", f"GPMF type {typ!r} is not numeric")
    dt = np.dtype(_TYPES[typ])
    if ssize % dt.itemsize:
        raise GpmfError("corrupt_payload", f"struct size {ssize} is not a multiple of type "
                        f"{typ!r}")
    k = ssize // dt.itemsize
    vals = np.frombuffer(buf, dt, count=repeat * k, offset=at).astype(np.float64)
    if typ in "qQ":                            # Q15.16 / Q31.32 fixed point
        vals = vals / (65536.0 if typ == "q" else 4294967296.0)
    return vals.reshape(repeat, k)


def _text(buf: bytes, ssize: int, repeat: int, at: int) -> str:
    return buf[at:at + ssize * repeat].split(b"\0")[0].decode("latin-1").strip()


def parse_payload(buf: bytes, fourcc: str) -> list[StreamPayload]:
    """Every ``DEVC/STRM`` holding ``fourcc`` in one payload (usually one)."""
    want = fourcc.encode()
    out: list[StreamPayload] = []
    for key, typ, ssize, repeat, at in _klv(buf, 0, len(buf)):
        if key != b"DEVC" or typ != "\0":
            continue
        for k2, t2, s2, r2, a2 in _klv(buf, at, at + ssize * repeat):
            if k2 != b"STRM" or t2 != "\0":
                continue
            props: dict = {}
            for k3, t3, s3, r3, a3 in _klv(buf, a2, a2 + s2 * r2):
                if k3 == b"SCAL":
                    props["scal"] = _values(buf, t3, s3, r3, a3, None).reshape(-1)
                elif k3 == b"TYPE":
                    props["types"] = _text(buf, s3, r3, a3)
                elif k3 == b"ORIN" and t3 == "c":
                    props["orin"] = _text(buf, s3, r3, a3)
                elif k3 == b"TSMP":
                    props["tsmp"] = int(_values(buf, t3, s3, r3, a3, None).reshape(-1)[0])
                elif k3 == b"TIMO":
                    props["timo"] = float(_values(buf, t3, s3, r3, a3, None).reshape(-1)[0])
                elif k3 == b"STNM" and t3 == "c":
                    props["name"] = _text(buf, s3, r3, a3)
                elif k3 in (b"SIUN", b"UNIT") and t3 == "c":
                    props["units"] = _text(buf, s3, r3, a3)
                elif k3 == want:
                    raw = _values(buf, t3, s3, r3, a3, props.get("types"))
                    out.append(StreamPayload(raw, props.get("scal"), props.get("orin"),
                                             props.get("tsmp"), props.get("timo", 0.0),
                                             props.get("name", ""), props.get("units", "")))
    return out


def scaled(p: StreamPayload) -> np.ndarray:
    """Raw values divided by SCAL (one divisor, or one per element), as gpmf-parser scales."""
    if p.scal is None or not len(p.scal):
        return p.raw
    k = p.raw.shape[1]
    if len(p.scal) == 1:
        div = np.full(k, p.scal[0])
    elif len(p.scal) == k:
        div = p.scal
    else:
        raise GpmfError("corrupt_payload", f"SCAL has {len(p.scal)} values for {k} elements")
    if (div == 0).any():
        raise GpmfError("corrupt_payload", "SCAL holds a zero divisor")
    return p.raw / div


def channel_names(fourcc: str, k: int, orin: str | None) -> list[str]:
    if fourcc in _AXES and orin and len(orin) == k and len(set(orin.lower())) == k:
        return list(orin.lower())
    if fourcc in _AXES and k == 3:
        return ["x", "y", "z"]
    names = _NAMES.get(fourcc)
    if names and len(names) == k:
        return list(names)
    return [f"c{j}" for j in range(k)]


# ---------------------------------------------------------------- timing

def fit_rate(cumulative: np.ndarray, t_out: np.ndarray) -> tuple[float, float]:
    """gpmf-parser's line of best fit: (rate, intercept) of ``cumulative = rate * t_out +
    intercept`` over the payloads holding the stream (least squares, in doubles)."""
    x = np.asarray(t_out, np.float64)
    y = np.asarray(cumulative, np.float64)
    mx, my = x.mean(), y.mean()
    top = float(np.sum((x - mx) * (y - my)))
    bot = float(np.sum((x - mx) * (x - mx)))
    if bot <= 0 or top <= 0:
        raise GpmfError("bad_timing", "payload times do not increase: no sample rate")
    rate = top / bot
    return rate, my - rate * mx


def sample_ends(counts: np.ndarray, tsmp: list[int | None]) -> np.ndarray:
    """Per payload, the file's sample count after it: from ``TSMP`` (less the samples before
    the first payload) when every payload states it consistently, so a payload lost in
    between leaves its gap; else the running sum of the counts."""
    counts = np.asarray(counts, np.int64)
    run = np.cumsum(counts)
    if not len(counts) or any(t is None for t in tsmp):
        return run
    ends = np.asarray(tsmp, np.int64) - (int(tsmp[0]) - int(counts[0]))
    if (np.diff(ends) >= counts[1:]).all():
        return ends
    return run


def sample_times_s(counts: np.ndarray, ends: np.ndarray, t_in: np.ndarray, t_out: np.ndarray,
                   timo: float) -> tuple[list[np.ndarray], float, float]:
    """Per payload, the times (s) of its samples: sample k of the file (k = ends - counts ..
    ends - 1) at ``first + k / rate`` with gpmf-parser's fit (``fit_rate`` of ``ends``
    against ``t_out``; first = -intercept / rate - TIMO). One payload: evenly over
    [t_in, t_out). Returns (times per payload, rate, first)."""
    counts = np.asarray(counts, np.int64)
    ends = np.asarray(ends, np.int64)
    if len(counts) == 1:
        dur = float(t_out[0] - t_in[0])
        if dur <= 0 or int(counts[0]) == 0:
            raise GpmfError("bad_timing", "one payload without a duration: no sample rate")
        rate = int(counts[0]) / dur
        first = float(t_in[0]) - timo
    else:
        rate, intercept = fit_rate(ends, t_out)
        first = -intercept / rate - timo
    out = [first + np.arange(e - n, e, dtype=np.float64) / rate
           for n, e in zip(counts.tolist(), ends.tolist())]
    return out, rate, first


# ---------------------------------------------------------------- the decoder

def _payloads(path: str, track: GpmdTrack, fourcc: str
              ) -> Iterator[tuple[int, list[StreamPayload] | GpmfError]]:
    with open(path, "rb") as f:
        for i, (off, size) in enumerate(zip(track.offsets.tolist(), track.sizes.tolist())):
            f.seek(off)
            buf = f.read(size)
            try:
                if len(buf) < size:
                    raise GpmfError("corrupt_payload", "cut short")
                yield i, parse_payload(buf, fourcc)
            except GpmfError as e:
                yield i, e
            except (struct.error, ValueError) as e:
                yield i, GpmfError("corrupt_payload", short_error(e))


def decode_gpmf(path: str, *, session_id: str, stream_id: str,
                options: DecodeOptions | dict | None = None, roots: tuple[str, ...] = (),
                time_offset_ns: int = 0) -> Iterator[Chunk | DeadLetter]:
    """An MP4's GPMF stream ``options.gpmf_stream`` -> sensor chunks (module docstring)."""
    opts = DecodeOptions.of(options)
    fourcc = opts.gpmf_stream or DEFAULT_STREAM
    src = SourceFile(session_id, stream_id, "sensor", str(path),
                     meta={"format": "gpmf", "gpmf_stream": fourcc}, roots=roots,
                     time_offset_ns=time_offset_ns, unit="samples",
                     declared_by="its TSMP sample counts")
    yield from src.run(_gpmf(src, opts, fourcc))


def _gpmf(src: SourceFile, opts: DecodeOptions, fourcc: str) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    try:
        track = read_gpmd_track(path)
    except (GpmfError, struct.error, OSError) as e:
        reason = getattr(e, "reason", "corrupt_file")
        yield src.dead(reason, f"{path} {short_error(e)}.", error_class="CorruptMedia")
        return
    found: list[tuple[int, StreamPayload]] = []
    for i, got in _payloads(path, track, fourcc):
        if isinstance(got, GpmfError):
            yield src.dead(got.reason, f"{path}: GPMF payload {i} (at "
                           f"{track.t_in[i]:.3f} s) cannot be read ({got}); its {fourcc} "
                           "samples are lost.", error_class="CorruptMedia",
                           position=f"payload={i}", attrs={"payload": str(i)})
            continue
        found += [(i, p) for p in got]
    if not found:
        src.declared = None
        yield src.dead("missing_gpmf_stream", f"{path}: no GPMF payload holds a {fourcc} "
                       "stream; set options.gpmf_stream to one the camera recorded (GYRO, "
                       "ACCL, GPS5, ...).", error_class="SchemaMismatch")
        return
    counts = np.array([len(p.raw) for _, p in found], np.int64)
    ends = sample_ends(counts, [p.tsmp for _, p in found])
    src.declared = int(ends[-1])
    k = found[0][1].raw.shape[1]
    names = channel_names(fourcc, k, found[0][1].orin)
    keep = list(range(k))
    if opts.channels:
        missing = [c for c in opts.channels if c not in names]
        if missing:
            yield src.dead("missing_channel", f"{path}: the {fourcc} stream has no channel(s) "
                           f"{missing} (channels: {names}); fix options.channels.",
                           error_class="SchemaMismatch")
            return
        keep = [names.index(c) for c in opts.channels]
    channels = [names[j] for j in keep]
    idx = np.array([i for i, _ in found])
    try:
        times, rate, first = sample_times_s(counts, ends, track.t_in[idx], track.t_out[idx],
                                            found[0][1].timo)
    except GpmfError as e:
        yield src.dead(e.reason, f"{path}: {e}.", error_class="CorruptMedia")
        return
    src.meta.update(channels=channels, sample_rate_hz=float(rate), first_sample_s=float(first),
                    stream_name=found[0][1].name, units=found[0][1].units)
    for (i, p), n, end, t_s in zip(found, counts.tolist(), ends.tolist(), times):
        where = {"position": f"payload={i}", "records": n, "error_class": "CorruptMedia"}
        if p.raw.shape[1] != k:
            yield src.dead("corrupt_payload", f"{path}: GPMF payload {i} has {p.raw.shape[1]} "
                           f"{fourcc} elements, earlier payloads {k}.", **where)
            continue
        try:
            vals = scaled(p)[:, keep]
        except GpmfError as e:
            yield src.dead(e.reason, f"{path}: GPMF payload {i}: {e}.", **where)
            continue
        tt, over = src.t_array(np.rint(t_s * 1e9).astype(np.int64))
        rows = np.arange(end - n, end, dtype=np.int64)
        for j in np.flatnonzero(over):
            yield src.dead("timestamp_overflow", f"{path}: {fourcc} sample {rows[j]} (offset "
                           f"{src.time_offset_ns} ns) does not fit int64 nanoseconds.",
                           error_class="TimestampOverflow", position=f"row={rows[j]}")
        good = np.flatnonzero(~over)
        for lo in range(0, len(good), opts.chunk_rows):
            sel = good[lo:lo + opts.chunk_rows]
            arrays = [pa.array(tt[sel], pa.int64()), pa.array(rows[sel], pa.int64())]
            arrays += [pa.array(vals[sel, j], pa.float64()) for j in range(len(keep))]
            yield src.chunk(pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(channels)))


def span_gpmf(path: str, options: DecodeOptions | dict | None = None
              ) -> tuple[int, int] | None:
    """(first_ns, end_ns) of the GPMF stream: its decoded times (``SpanAccumulator``)."""
    acc = SpanAccumulator()
    for out in decode_gpmf(path, session_id="", stream_id="", options=options):
        if isinstance(out, Chunk):
            acc.add(out.t_ns())
    return acc.span()
