"""Video decoders: containers via PyAV, image sequences (folder + timestamp index) via OpenCV.

Rows follow schemas/video.py. ``pos`` of a container frame is its presentation rank among all
video packets of the stream (the rank of its pts), so a frame that fails to decode still has a
position and ``load_frames`` finds the same frame by the same number. ``pos`` of an image is
its data-line number in the index (comments and the header line are not counted).
"""

from __future__ import annotations

import bisect
import functools
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.schemas.video import ARROW_SCHEMA
from mmalign.transforms.decode.base import (
    CONTAINER_FORMATS,
    SourceFile,
    SpanAccumulator,
    TimestampOverflow,
    inside_roots,
    iter_lines,
    open_container,
    parse_time_ns,
    short_error,
    time_reason,
)
from mmalign.transforms.decode.image_check import ImageCheck, check_image

RAW_IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
_HEADER_WORDS = {"timestamp", "time", "t", "t_ns", "timestamp_ns", "filename", "file"}


def pts_to_ns(pts: int, time_base: Fraction) -> int:
    """Container pts -> ns, exact (rounded half to even at the last ns)."""
    return round(Fraction(pts) * time_base * 1_000_000_000)


def _batch(rows: dict[str, list]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(rows, schema=ARROW_SCHEMA)


def _empty_rows() -> dict[str, list]:
    return {name: [] for name in ARROW_SCHEMA.names}


@dataclass(frozen=True)
class PacketIndex:
    """Sorted unique packet timestamps of one video stream, and those of keyframes."""

    pts: np.ndarray          # int64, presentation order; pos = index into this
    key_pts: np.ndarray      # int64, sorted
    complete: bool           # False if demuxing stopped on an error
    error: str = ""


def packet_index(path: str, stream_index: int = 0) -> PacketIndex:
    """Demux (no decoding) the video stream to learn every frame's pts."""
    pts: list[int] = []
    keys: list[int] = []
    complete, error = True, ""
    with open_container(path) as c:
        vs = c.streams.video[stream_index]
        try:
            for pkt in c.demux(vs):
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                if pkt.size == 0 or ts is None:
                    continue
                pts.append(ts)
                if pkt.is_keyframe:
                    keys.append(ts)
        except av.error.FFmpegError as e:
            complete, error = False, short_error(e)
    return PacketIndex(np.unique(np.asarray(pts, np.int64)),
                       np.unique(np.asarray(keys, np.int64)), complete, error)


@functools.lru_cache(maxsize=64)
def _cached_index(path: str, size: int, mtime_ns: int) -> PacketIndex:
    return packet_index(path)


def file_packet_index(path: str) -> PacketIndex:
    """``packet_index`` of stream 0, remembered per (path, size, mtime) for this process:
    a long file loaded bucket by bucket is demuxed once, not once per bucket."""
    st = os.stat(path)
    return _cached_index(path, st.st_size, st.st_mtime_ns)


# FFmpeg's colour codes for frames whose matrix is BT.601 (or unspecified, which FFmpeg's own
# swscale also converts as BT.601) and whose range is limited (or unspecified).
_BT601_SPACES = {2, 5, 6}          # AVCOL_SPC_UNSPECIFIED, BT470BG, SMPTE170M
_LIMITED_RANGES = {0, 1}           # AVCOL_RANGE_UNSPECIFIED, MPEG


def frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB (resized to ``size`` = (width, height)).

    yuv420p in BT.601 limited range (what most cameras and encoders write, and what FFmpeg
    assumes when untagged) goes through OpenCV's I420 -> RGB: the same matrix and range as
    FFmpeg's swscale, within 3 levels of it (chroma upsampling differs), about 13x faster at
    320x240 (0.12 ms vs 1.6 ms). Anything else (BT.709, full range, 10-bit, odd sizes) goes
    through swscale, which reads the frame's colour tags."""
    if (size is None and frame.format.name == "yuv420p" and frame.width % 2 == 0
            and frame.height % 2 == 0 and int(frame.colorspace) in _BT601_SPACES
            and int(frame.color_range) in _LIMITED_RANGES):
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    kw = {"width": size[0], "height": size[1]} if size else {}
    return frame.to_ndarray(format="rgb24", **kw)


def _jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_video_container(path: str, *, session_id: str, stream_id: str,
                           chunk_frames: int = 64, inline_images: bool = False,
                           options: DecodeOptions | dict | None = None,
                           roots: tuple[str, ...] = (), time_offset_ns: int = 0
                           ) -> Iterator[Chunk | DeadLetter]:
    """Decode every frame of the first video stream; yield metadata rows in chunks of
    ``chunk_frames`` (JPEG in ``image`` if ``inline_images``) and a DeadLetter per frame that
    fails (``frame=N``) or for the file (``file``). Times are shifted by ``time_offset_ns``.

    Declared frames: an MP4/MOV's sample table (``nb_frames``), else the demuxed packets (when
    demuxing reached the end); frames the decoding never reached are a ``truncated`` letter."""
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "video", str(path), roots=roots,
                     time_offset_ns=time_offset_ns, unit="frames")
    yield from src.run(_container(src, chunk_frames, inline_images, opts))


def _open_failure(src: SourceFile, e: Exception, what: str) -> DeadLetter:
    if isinstance(e, av.error.ArgumentError):
        return src.dead("unsupported_container", f"{src.path} is not one of the container "
                        f"formats read ({', '.join(CONTAINER_FORMATS)}): playlists, concat "
                        "lists and other formats that open further files are refused.",
                        error_class="CorruptMedia")
    return src.dead("corrupt_file", f"{src.path} cannot be opened as {what} "
                    f"({short_error(e)}).", error_class="CorruptMedia")


def _header_frames(path: str) -> int | None:
    """The frames an MP4/MOV sample table declares, read from the header only (no demuxing);
    None for other containers or when it says nothing."""
    try:
        with open_container(path) as c:
            vs = c.streams.video[0]
            if "mov" in c.format.name.split(",") and (vs.frames or 0) > 0:
                return int(vs.frames)
    except (av.error.FFmpegError, OSError, IndexError, UnicodeDecodeError):
        pass
    return None


def _container(src: SourceFile, chunk_frames: int, inline_images: bool, opts: DecodeOptions
               ) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        if bad.reason == "oversize":            # the header alone says what the letter costs
            src.declared, src.declared_by = _header_frames(path), "its sample table"
        yield bad
        return
    try:
        container = open_container(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        yield _open_failure(src, e, "a video container")
        return
    with container:
        if not container.streams.video:
            yield src.dead("no_video_stream", f"{path} has no video stream.",
                           error_class="CorruptMedia")
            return
        vs = container.streams.video[0]
        tb = vs.time_base or Fraction(1, 1_000_000_000)
        index = packet_index(path, vs.index)
        if "mov" in container.format.name.split(",") and (vs.frames or 0) > 0:
            src.declared, src.declared_by = int(vs.frames), "its sample table"
        elif index.complete:
            src.declared, src.declared_by = len(index.pts), "its demuxed packets"
        rank = {int(p): i for i, p in enumerate(index.pts)}
        cc = vs.codec_context
        if cc is None:
            yield src.dead("unknown_codec", f"{path}: its video stream's codec has no "
                           "decoder.", error_class="CorruptMedia")
            return
        src.meta.update({"kind": "container", "codec": cc.name, "width": cc.width,
                         "height": cc.height, "time_base": f"{tb.numerator}/{tb.denominator}",
                         "avg_rate": float(vs.average_rate) if vs.average_rate else None,
                         "frames": len(index.pts)})

        def pos_of(ts: int) -> int:
            return rank.get(ts, int(np.searchsorted(index.pts, ts)))

        def stands_for(ts: int | None) -> int:
            """1 if a letter about pts ``ts`` is the first outcome of a demuxed frame."""
            return int(ts is not None and ts in rank and ts not in seen)

        seen: set[int] = set()
        rows = _empty_rows()
        packets = container.demux(vs)
        while True:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                yield src.dead("corrupt_container", f"{path}: demuxing stopped after "
                               f"{len(seen)} frames ({short_error(e)}); later frames are lost.",
                               error_class="CorruptMedia", position=f"frame={len(index.pts)}",
                               ends=True)
                break
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            try:
                frames = pkt.decode()
            except av.error.FFmpegError as e:
                where = "flushing the decoder" if pkt.size == 0 else f"pts {ts}"
                pos = pos_of(ts) if ts is not None else len(seen)
                n = stands_for(ts)
                if ts is not None:
                    seen.add(ts)
                yield src.dead("corrupt_frame", f"{path}: frame {pos} ({where}) failed to "
                               f"decode ({short_error(e)}).", error_class="CorruptFrame",
                               position=f"frame={pos}", records=n,
                               event_time_ns=src.event_ns(pts_to_ns(ts, tb))
                               if ts is not None else None, attrs={"pts": str(ts)})
                continue
            for f in frames:
                fts = f.pts if f.pts is not None else f.dts
                if fts is None:
                    # no demuxed frame to pin it on: the frame it was is frame_lost below
                    yield src.dead("no_timestamp", f"{path}: a decoded frame has no pts.",
                                   error_class="CorruptFrame", position=f"frame={len(seen)}",
                                   records=0)
                    continue
                n = stands_for(fts)
                seen.add(fts)
                pos = pos_of(fts)
                try:
                    t_ns = src.t(pts_to_ns(fts, tb), f"frame {pos} (pts {fts}) at")
                except TimestampOverflow as e:
                    yield src.time_dead(e, "timestamp_overflow", f"{path}: frame {pos} has no "
                                        "int64 time", position=f"frame={pos}", records=n,
                                        attrs={"pts": str(fts), "time_base": str(tb)})
                    continue
                if f.is_corrupt:
                    yield src.dead("corrupt_frame", f"{path}: frame {pos} (pts {fts}) decoded "
                                   "with errors.", error_class="CorruptFrame",
                                   position=f"frame={pos}", event_time_ns=t_ns, records=n,
                                   attrs={"pts": str(fts)})
                    continue
                image = None
                if inline_images:
                    image = _jpeg(f.to_ndarray(format="bgr24"), opts.jpeg_quality)
                for k, v in (("t_ns", t_ns), ("pos", pos), ("pts", fts), ("width", f.width),
                             ("height", f.height), ("keyframe", bool(f.key_frame)),
                             ("file", None), ("image", image)):
                    rows[k].append(v)
                if len(rows["t_ns"]) >= chunk_frames:
                    yield src.chunk(_batch(rows))
                    rows = _empty_rows()
        if rows["t_ns"]:
            yield src.chunk(_batch(rows))
        for ts in sorted(set(rank) - seen):
            yield src.dead("frame_lost", f"{path}: frame {rank[ts]} (pts {ts}) was demuxed "
                           "but the decoder produced no picture for it.",
                           error_class="CorruptFrame", position=f"frame={rank[ts]}",
                           event_time_ns=src.event_ns(pts_to_ns(ts, tb)),
                           attrs={"pts": str(ts)})


def span_video_container(path: str, options: DecodeOptions | dict | None = None
                         ) -> tuple[int, int] | None:
    """(first_ns, end_ns) of the first video stream without decoding: the stream's start time
    and duration when the container states them, else the demuxed packets' first pts and last
    pts + duration (end = where a following segment would start). None if unreadable."""
    try:
        with open_container(path) as c:
            vs = c.streams.video[0]
            tb = vs.time_base or Fraction(1, 1_000_000_000)
            if vs.start_time is not None and vs.duration:
                return (pts_to_ns(vs.start_time, tb),
                        pts_to_ns(vs.start_time + vs.duration, tb))
            first = end = None
            for pkt in c.demux(vs):
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                if pkt.size == 0 or ts is None:
                    continue
                first = ts if first is None else min(first, ts)
                e = ts + (pkt.duration or 0)
                end = e if end is None else max(end, e)
    except (av.error.FFmpegError, OSError, IndexError, UnicodeDecodeError):
        return None
    if first is None:
        return None
    return pts_to_ns(first, tb), pts_to_ns(end, tb)


# ---------------------------------------------------------------- image sequences

@dataclass(frozen=True)
class IndexEntry:
    pos: int
    line: bytes
    t_ns: int | None = None
    filename: str | None = None
    error: str | None = None
    reason: str = "bad_index_line"


def _split(line: str) -> list[str]:
    if "," in line:
        return [p.strip() for p in line.split(",")]
    return line.split()


_BOM = b"\xef\xbb\xbf"


def _is_data(line_b: bytes) -> bool:
    """A line that is neither blank (ASCII whitespace) nor a '#' comment."""
    stripped = line_b.strip()
    return bool(stripped) and not stripped.startswith(b"#")


def read_index(index_path: str, time_unit: str | None = None) -> Iterator[IndexEntry]:
    """Parse a ``timestamp filename`` index line by line (streamed, never whole-file; lines end
    at LF, CRLF or a bare CR: ``iter_lines``). Every
    data line (not blank, not a '#' comment, not the header) is one entry, with an error if it
    cannot be used: ``reason`` ``bad_timestamp`` (a time that is not a number),
    ``timestamp_overflow`` (outside int64 ns) or ``bad_index_line`` (no filename, not UTF-8)."""
    pos = 0
    first_data = True
    with open(index_path, "rb") as fh:
        for raw in iter_lines(fh):
            line_b = raw
            if first_data:
                line_b = line_b.removeprefix(_BOM)
            if not _is_data(line_b):
                continue
            try:
                line = line_b.decode("utf-8").strip()
            except UnicodeDecodeError:
                first_data = False
                yield IndexEntry(pos, line_b, error="is not valid UTF-8")
                pos += 1
                continue
            parts = _split(line) or [""]
            if first_data and parts[0].lower() in _HEADER_WORDS:
                first_data = False
                continue
            first_data = False
            if len(parts) < 2 or not parts[1]:
                yield IndexEntry(pos, line_b, error="needs a timestamp and a filename")
            elif "\x00" in parts[1]:
                yield IndexEntry(pos, line_b, error="has a NUL byte in its filename")
            else:
                try:
                    yield IndexEntry(pos, line_b, parse_time_ns(parts[0], time_unit), parts[1])
                except ValueError as e:
                    yield IndexEntry(pos, line_b, error=str(e),
                                     reason=time_reason(e, "bad_timestamp"))
            pos += 1


def count_index_lines(index_path: str) -> int:
    """The data lines of an index, counted without parsing them: lines that are not blank and
    not '#' comments, less a header line (a first line whose first field is a column name)."""
    n, first = 0, True
    with open(index_path, "rb") as fh:
        for raw in iter_lines(fh):
            line_b = raw
            if first:
                line_b = line_b.removeprefix(_BOM)
            if not _is_data(line_b):
                continue
            if first:
                first = False
                head = line_b.decode("utf-8", "replace").strip()
                if (_split(head) or [""])[0].lower() in _HEADER_WORDS:
                    continue
            n += 1
    return n


def _image_dir(index_path: str, opts: DecodeOptions) -> Path:
    base = Path(index_path).resolve().parent
    return (base / opts.image_dir).resolve() if opts.image_dir else base


def _resolve_image(image_dir: Path, filename: str) -> Path | None:
    """The image path, or None if it would leave ``image_dir``."""
    p = (image_dir / filename).resolve()
    return p if p == image_dir or image_dir in p.parents else None


def decode_image_sequence(index_path: str, *, session_id: str, stream_id: str,
                          chunk_frames: int = 64, inline_images: bool = False,
                          options: DecodeOptions | dict | None = None,
                          roots: tuple[str, ...] = (), time_offset_ns: int = 0
                          ) -> Iterator[Chunk | DeadLetter]:
    """Decode a folder of images listed in an index file; each image is decoded (integrity,
    size). Bad index lines, times outside int64 ns, images outside the allowed ``roots`` (no
    byte of them is read) and missing/unreadable images become ``frame=N`` DeadLetters; an
    ``options.image_dir`` outside the roots is a file-level letter. Declared frames: the
    index's data lines."""
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, "video", str(index_path), roots=roots,
                     time_offset_ns=time_offset_ns, unit="frames",
                     declared_by="its index's data lines")
    yield from src.run(_image_sequence(src, chunk_frames, inline_images, opts))


def _image_sequence(src: SourceFile, chunk_frames: int, inline_images: bool,
                    opts: DecodeOptions) -> Iterator[Chunk | DeadLetter]:
    index_path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    src.declared = functools.partial(count_index_lines, index_path)
    image_dir = _image_dir(index_path, opts)
    if not inside_roots(image_dir, src.roots):
        yield src.outside_roots(image_dir, "options.image_dir")
        return
    src.meta.update({"kind": "image_sequence", "codec": "image", "width": None, "height": None,
                     "time_base": None, "avg_rate": None, "image_dir": str(image_dir)})
    rows = _empty_rows()
    for e in read_index(index_path, opts.time_unit):
        where = f"frame={e.pos}"
        line = {"payload": e.line, "payload_format": "index-line"}
        if e.error is not None:
            yield src.dead(e.reason, f"{index_path}: line for frame {e.pos} {e.error}.",
                           error_class="TimestampOverflow" if e.reason == "timestamp_overflow"
                           else "EncodingError" if "UTF-8" in e.error else "ParseError",
                           position=where, **line)
            continue
        try:
            t_ns = src.t(e.t_ns, f"frame {e.pos} at")
        except TimestampOverflow as err:
            yield src.time_dead(err, "timestamp_overflow", f"{index_path}: frame {e.pos} has "
                                "no int64 time", position=where, **line)
            continue
        target = image_dir / e.filename
        if not inside_roots(target, src.roots):
            yield src.outside_roots(target, f"frame {e.pos} names", position=where,
                                    event_time_ns=t_ns, **line)
            continue
        img_path = _resolve_image(image_dir, e.filename)
        if img_path is None:
            yield src.dead("bad_path", f"{index_path}: frame {e.pos} names {e.filename!r}, "
                           f"which is outside {image_dir}.", error_class="ParseError",
                           position=where, event_time_ns=t_ns, **line)
            continue
        img_src = {"position": where, "source_uri": str(img_path), "event_time_ns": t_ns}
        try:
            st = img_path.stat()
        except FileNotFoundError:
            yield src.dead("missing_image", f"{index_path}: frame {e.pos} image {img_path} "
                           "does not exist.", error_class="FileNotFound", **img_src)
            continue
        except OSError as err:
            st, problem = None, short_error(err)
        else:
            problem = None if stat.S_ISREG(st.st_mode) else "it is not a regular file"
            if problem is None and st.st_size > opts.max_bytes:
                problem = (f"it is {st.st_size} bytes, over the {opts.max_bytes}-byte limit "
                           "(options.max_bytes)")
        data = b""
        if problem is None:
            try:
                data = img_path.read_bytes()
            except OSError as err:
                problem = short_error(err)
        if problem is not None:
            yield src.dead("unreadable_image", f"{index_path}: frame {e.pos} image "
                           f"{img_path} cannot be read ({problem}).",
                           error_class="CorruptMedia", **img_src)
            continue
        # PNG and JPEG are checked from their structure (image_check.py); other formats, a
        # structure in doubt, or pixels to re-encode inline are decoded
        raw = img_path.suffix.lower() in RAW_IMAGE_EXTS
        verdict = check_image(data)
        img = None
        if verdict is None or (verdict.problem is None and inline_images and not raw):
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            verdict = ImageCheck(problem="") if img is None else \
                ImageCheck(img.shape[1], img.shape[0])
        if (problem := verdict.problem) is not None:
            yield src.dead("corrupt_image", f"{index_path}: frame {e.pos} image {img_path} "
                           f"cannot be decoded{f' ({problem})' if problem else ''}.",
                           error_class="CorruptMedia", **img_src)
            continue
        w, h = verdict.width, verdict.height
        if src.meta["width"] is None:
            src.meta.update(width=w, height=h)
        image = None
        if inline_images:
            image = data if raw else cv2.imencode(".png", img)[1].tobytes()
        for k, v in (("t_ns", t_ns), ("pos", e.pos), ("pts", None), ("width", w),
                     ("height", h), ("keyframe", True), ("file", e.filename),
                     ("image", image)):
            rows[k].append(v)
        if len(rows["t_ns"]) >= chunk_frames:
            yield src.chunk(_batch(rows))
            rows = _empty_rows()
    if rows["t_ns"]:
        yield src.chunk(_batch(rows))


def span_image_sequence(index_path: str, options: DecodeOptions | dict | None = None
                        ) -> tuple[int, int] | None:
    """(first_ns, end_ns) of an index without reading images: its smallest valid time, and
    its largest + the median gap between frames (``SpanAccumulator``). None if no line has a
    valid time."""
    opts = DecodeOptions.of(options)
    acc = SpanAccumulator()
    try:
        times = [e.t_ns for e in read_index(index_path, opts.time_unit) if e.error is None]
    except OSError:
        return None
    acc.add(np.asarray(times, np.int64))
    return acc.span()


# ---------------------------------------------------------------- random access

def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _iter_images(index_path: str, wanted: list[int], size: tuple[int, int] | None,
                 image_dir: str | None) -> Iterator[tuple[int, np.ndarray]]:
    opts = DecodeOptions(image_dir=image_dir)
    base = _image_dir(index_path, opts)
    todo = set(wanted)
    for e in read_index(index_path):
        if e.pos not in todo:
            continue
        p = _resolve_image(base, e.filename) if e.filename else None
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED) if p is not None else None
        if img is None:
            raise ValueError(f"{index_path}: frame {e.pos} ({e.filename or e.error}) cannot be "
                             "loaded; it was a decode dead letter")
        img = _to_rgb(img)
        yield e.pos, cv2.resize(img, size, interpolation=cv2.INTER_AREA) if size else img
        todo.discard(e.pos)
        if not todo:
            break
    if todo:
        raise ValueError(f"{index_path} has no frames {sorted(todo)[:5]}; its index has fewer "
                         "data lines")


def _iter_container(path: str, wanted: list[int], size: tuple[int, int] | None
                    ) -> Iterator[tuple[int, np.ndarray]]:
    index = file_packet_index(path)
    n = len(index.pts)
    if wanted and (wanted[0] < 0 or wanted[-1] >= n):
        raise ValueError(f"{path} has frames 0..{n - 1}; positions {wanted[0]}..{wanted[-1]} "
                         "are out of range")
    keys = index.key_pts.tolist()
    with open_container(path) as c:
        vs = c.streams.video[0]
        frames: Iterator | None = None
        last = None                                   # pts of the last decoded frame
        for pos in wanted:
            target = int(index.pts[pos])
            k = bisect.bisect_right(keys, target) - 1
            kf = keys[k] if k >= 0 else None
            # seek when nothing is open, when going back, or when a keyframe lies ahead
            if frames is None or last is None or last >= target or (kf is not None and
                                                                     kf > last):
                for attempt_from_start in (False, True):
                    if attempt_from_start or kf is None:
                        c.seek(0, stream=vs, backward=True, any_frame=False)
                    else:
                        c.seek(kf, stream=vs, backward=True, any_frame=False)
                    frames = c.decode(vs)
                    first = _next_frame(frames)
                    if first is not None and first.pts is not None and first.pts <= target:
                        break
                last, pending = None, first
            else:
                pending = None
            found = None
            while True:
                f = pending if pending is not None else _next_frame(frames)
                pending = None
                if f is None:
                    break
                if f.pts is None:
                    continue
                last = f.pts
                if f.pts == target:
                    found = f
                    break
                if f.pts > target:
                    break
            if found is None:
                raise ValueError(f"{path}: frame {pos} (pts {target}) cannot be decoded; it "
                                 "was a decode dead letter")
            yield pos, frame_to_rgb(found, size)


def _next_frame(frames: Iterator) -> av.VideoFrame | None:
    while True:
        try:
            return next(frames)
        except StopIteration:
            return None
        except av.error.FFmpegError:
            continue        # a broken packet: skip it, the wanted frame may still come


def iter_frames(uri: str, positions: Sequence[int], *, kind: str = "container",
                size: tuple[int, int] | None = None, image_dir: str | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(pos, frame) for each distinct position in increasing order, as (H, W, 3) uint8 RGB
    (``size`` = (width, height) to resize to): one sequential decode (a container seeks only
    when a keyframe lies between two wanted frames), one frame in memory at a time, so a caller
    that reduces each frame as it comes (a 112 px crop) never holds a bucket of full frames.
    Raises ``ValueError`` at the first frame that cannot be loaded (those before it came)."""
    wanted = sorted({int(p) for p in positions})
    if kind == "container":
        yield from _iter_container(uri, wanted, size)
    elif kind == "image_sequence":
        yield from _iter_images(uri, wanted, size, image_dir)
    else:
        raise ValueError(f"load_frames kind must be 'container' or 'image_sequence', "
                         f"not {kind!r}")


def load_frames(uri: str, positions: Sequence[int], *, kind: str = "container",
                size: tuple[int, int] | None = None, image_dir: str | None = None
                ) -> np.ndarray:
    """Frames by ``pos`` as [n, H, W, 3] uint8 RGB, in the order asked; ``size`` is
    (width, height) to resize to (needed when frame sizes differ). Raises ``ValueError`` for
    a frame that cannot be loaded. Holds every frame asked for: see ``iter_frames``."""
    positions = [int(p) for p in positions]
    got = dict(iter_frames(uri, positions, kind=kind, size=size, image_dir=image_dir))
    if not positions:
        h, w = (size[1], size[0]) if size else (0, 0)
        return np.zeros((0, h, w, 3), np.uint8)
    frames = [got[p] for p in positions]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"{uri}: frames have different sizes {sorted(shapes)}; pass size=")
    return np.stack(frames)

