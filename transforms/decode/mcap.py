"""MCAP recordings: one topic (``options.topic``) -> sensor rows or image frames; and what the
ROS bag decoder (``rosbag``) shares with it: turning ROS messages into rows.

The stream's modality decides what a topic becomes:

- **sensor**: every numeric field of the message, flattened by path (``angular_velocity_x``,
  ``position_2``; fixed-size numeric arrays give one channel per element; strings, variable
  arrays and the header are not channels; fields named ``*covariance`` are left out unless
  ``options.channels`` names them). ``sensor_msgs/Imu`` gives ``orientation_x..w``,
  ``angular_velocity_x..z``, ``linear_acceleration_x..z``. ``options.channels`` picks.
- **video** (an image-sequence stream): ``sensor_msgs/CompressedImage`` keeps its JPEG/PNG
  bytes, ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1/3, 16UC1) is
  encoded as PNG (lossless); frames are inline (``image``), ``file`` is null.

Time: the message's ``header.stamp`` (sec + nanosec) when it has a header, else the time the
recorder logged it (``meta.time_source`` says which). ``pos`` = the message's rank on the
topic in log-time order. Records: the topic's messages; declared by the file's summary
(MCAP channel message counts, bag connection counts). A message that cannot be deserialized or
converted is a ``bad_message`` letter with its bytes; a missing topic, a message type the
modality cannot use or an unreadable file are file letters.

MCAP messages are deserialized by their channel's encoding: ``cdr`` (ROS 2, schema
``ros2msg``) and ``ros1`` (schema ``ros1msg``) through rosbags' typestore built from the
file's own schemas, ``json`` as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
from mcap.exceptions import McapError
from mcap.reader import make_reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.schemas.sensor import arrow_schema
from mmalign.schemas.video import ARROW_SCHEMA as VIDEO_SCHEMA
from mmalign.transforms.decode.base import SourceFile, SpanAccumulator, short_error

MAX_ARRAY_CHANNELS = 64            # a fixed array longer than this is data, not channels
PAYLOAD_COPY_MAX = 64 * 1024       # a bad message's bytes are copied into its letter up to this
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


class BagError(ValueError):
    """The file or topic cannot be used; ``reason`` is the dead-letter slug."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class RawMessage:
    """One message of the topic: log time (ns), its bytes, and how to deserialize them."""
    log_ns: int
    data: bytes
    decode: Callable[[], Any]


@dataclass
class Topic:
    """The topic in one file: message type, declared count, messages (in log-time order)."""
    name: str
    msgtype: str
    count: int | None
    messages: Iterator[RawMessage]


def ros_type(name: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


# ---------------------------------------------------------------- messages -> values

def _get(msg: Any, name: str) -> Any:
    if isinstance(msg, dict):
        return msg.get(name)
    return getattr(msg, name, None)


def _fields(msg: Any) -> list[tuple[str, Any]]:
    if isinstance(msg, dict):
        return list(msg.items())
    names = getattr(msg, "__dataclass_fields__", None)
    if names is None:
        return []
    return [(n, getattr(msg, n)) for n in names if not n.startswith("__")]


def stamp_ns(msg: Any) -> int | None:
    """``header.stamp`` in ns (ROS 2 sec/nanosec, ROS 1 secs/nsecs), or None without one."""
    header = _get(msg, "header")
    stamp = _get(header, "stamp") if header is not None else None
    if stamp is None:
        return None
    sec = _get(stamp, "sec")
    if sec is None:
        sec = _get(stamp, "secs")
    nsec = _get(stamp, "nanosec")
    if nsec is None:
        nsec = _get(stamp, "nsecs")
    if sec is None or nsec is None:
        return None
    return int(sec) * 1_000_000_000 + int(nsec)


def flatten(msg: Any, prefix: str = "") -> dict[str, float]:
    """Numeric fields by path (module docstring); the header is skipped."""
    out: dict[str, float] = {}
    for name, value in _fields(msg):
        if not prefix and name == "header":
            continue
        key = f"{prefix}{name}"
        if isinstance(value, bool | int | float | np.number | np.bool_):
            out[key] = float(value)
        elif isinstance(value, np.ndarray):
            if value.dtype.kind in "biuf" and value.ndim == 1 and \
                    0 < value.size <= MAX_ARRAY_CHANNELS:
                for j, v in enumerate(value.tolist()):
                    out[f"{key}_{j}"] = float(v)
        elif isinstance(value, list | tuple):
            if 0 < len(value) <= MAX_ARRAY_CHANNELS and all(
                    isinstance(v, bool | int | float) for v in value):
                for j, v in enumerate(value):
                    out[f"{key}_{j}"] = float(v)
        elif isinstance(value, dict) or hasattr(value, "__dataclass_fields__"):
            out.update(flatten(value, key + "_"))
    return out


def default_channels(names: list[str]) -> list[str]:
    """Channels read when ``options.channels`` is not given: all but covariance fields."""
    return [n for n in names if not any(p.endswith("covariance") for p in n.split("_"))]


_RAW_ENCODINGS = {"rgb8": (np.uint8, 3, cv2.COLOR_RGB2BGR), "bgr8": (np.uint8, 3, None),
                  "rgba8": (np.uint8, 4, cv2.COLOR_RGBA2BGR),
                  "bgra8": (np.uint8, 4, cv2.COLOR_BGRA2BGR), "mono8": (np.uint8, 1, None),
                  "8uc1": (np.uint8, 1, None), "8uc3": (np.uint8, 3, None),
                  "mono16": (np.uint16, 1, None), "16uc1": (np.uint16, 1, None)}


def image_of(msg: Any, msgtype: str) -> tuple[bytes, int, int]:
    """(encoded image, width, height) of an Image or CompressedImage message."""
    if msgtype.endswith("CompressedImage"):
        data = bytes(np.asarray(_get(msg, "data"), np.uint8).tobytes())
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise BagError("corrupt_image", f"format {_get(msg, 'format')!r}: the bytes do not "
                           "decode as an image")
        return data, int(img.shape[1]), int(img.shape[0])
    enc = str(_get(msg, "encoding") or "").lower()
    if enc not in _RAW_ENCODINGS:
        raise BagError("unsupported_encoding", f"image encoding {enc!r} is not one of "
                       f"{sorted(_RAW_ENCODINGS)}")
    dtype, ch, convert = _RAW_ENCODINGS[enc]
    h, w, step = int(_get(msg, "height")), int(_get(msg, "width")), int(_get(msg, "step"))
    raw = np.asarray(_get(msg, "data"), np.uint8)
    row = w * ch * np.dtype(dtype).itemsize
    if h <= 0 or w <= 0 or step < row or raw.size < step * (h - 1) + row:
        raise BagError("corrupt_image", f"{w}x{h} {enc} with step {step} needs more than its "
                       f"{raw.size} bytes")
    big = bool(_get(msg, "is_bigendian"))
    rows = np.lib.stride_tricks.as_strided(raw, (h, row), (step, 1)).copy()
    img = rows.view(np.dtype(dtype).newbyteorder(">" if big else "<")).astype(dtype)
    img = img.reshape(h, w, ch) if ch > 1 else img.reshape(h, w)
    if convert is not None:
        img = cv2.cvtColor(img, convert)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise BagError("corrupt_image", "PNG encoding failed")
    return png.tobytes(), w, h


# ---------------------------------------------------------------- topic -> chunks

def _file_dead(src: SourceFile, e: BagError) -> DeadLetter:
    return src.dead(e.reason, f"{src.path}: {e}.", error_class="SchemaMismatch"
                    if e.reason in ("missing_topic", "unsupported_message") else "CorruptMedia")


def topic_chunks(src: SourceFile, opts: DecodeOptions, open_topic: Callable[[str], Topic]
                 ) -> Iterator[Chunk | DeadLetter]:
    """The decoder body both formats share: the topic's messages -> sensor or video chunks."""
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    if not opts.topic:
        try:
            listing = open_topic("")
        except BagError as e:
            yield _file_dead(src, e)
            return
        yield src.dead("missing_topic", f"{src.path}: set options.topic to the topic to read "
                       f"({listing.name}).", error_class="SchemaMismatch")
        return
    try:
        topic = open_topic(opts.topic)
    except BagError as e:
        yield _file_dead(src, e)
        return
    except Exception as e:  # noqa: BLE001 -- the readers raise their own error types
        yield src.dead("corrupt_file", f"{src.path} cannot be read ({type(e).__name__}: "
                       f"{short_error(e)}).", error_class="CorruptMedia")
        return
    src.declared = topic.count
    src.meta.update(topic=topic.name, msgtype=topic.msgtype)
    is_image = topic.msgtype in IMAGE_TYPES
    if src.modality == "video" and not is_image:
        yield src.dead("unsupported_message", f"{src.path}: topic {topic.name} carries "
                       f"{topic.msgtype}; a video stream reads {list(IMAGE_TYPES)}.",
                       error_class="SchemaMismatch")
        return
    if src.modality == "sensor" and is_image:
        yield src.dead("unsupported_message", f"{src.path}: topic {topic.name} carries images "
                       f"({topic.msgtype}); read it as a video stream.",
                       error_class="SchemaMismatch")
        return
    rows = _image_rows if is_image else _sensor_rows
    yield from rows(src, opts, topic)


def _bad(src: SourceFile, pos: int, m: RawMessage, why: str, reason: str = "bad_message"
         ) -> DeadLetter:
    return src.dead(reason, f"{src.path}: message {pos} of the topic (logged at {m.log_ns} ns) "
                    f"{why}.", error_class="ParseError", position=f"msg={pos}",
                    payload=m.data if len(m.data) <= PAYLOAD_COPY_MAX else None,
                    payload_format="ros-message", event_time_ns=src.event_ns(m.log_ns))


def _times(src: SourceFile, msg: Any, m: RawMessage) -> int:
    t = stamp_ns(msg)
    src.meta.setdefault("time_source", "log_time" if t is None else "header.stamp")
    return src.t(m.log_ns if t is None else t, "stamp")


def _sensor_rows(src: SourceFile, opts: DecodeOptions, topic: Topic
                 ) -> Iterator[Chunk | DeadLetter]:
    channels: list[str] | None = None
    t_l: list[int] = []
    pos_l: list[int] = []
    vals: list[list[float]] = []

    def flush() -> Chunk:
        arrays = [pa.array(t_l, pa.int64()), pa.array(pos_l, pa.int64())]
        arrays += [pa.array(col, pa.float64()) for col in zip(*vals, strict=True)] if vals \
            else [pa.array([], pa.float64()) for _ in channels]
        c = src.chunk(pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(channels)))
        t_l.clear(), pos_l.clear(), vals.clear()
        return c

    for pos, m in enumerate(topic.messages):
        try:
            msg = m.decode()
        except Exception as e:  # noqa: BLE001 -- any deserializer failure is this message's
            yield _bad(src, pos, m, f"cannot be deserialized as {topic.msgtype} "
                       f"({type(e).__name__}: {short_error(e)})")
            continue
        flat = flatten(msg)
        if channels is None:
            names = list(flat)
            wanted = list(opts.channels) if opts.channels else default_channels(names)
            missing = [c for c in wanted if c not in flat]
            if missing or not wanted:
                src.declared = None if not missing else src.declared
                yield src.dead("missing_channel" if missing else "no_channels",
                               f"{src.path}: {topic.msgtype} on {topic.name} has "
                               + (f"no field(s) {missing}" if missing else "no numeric fields")
                               + f" (fields: {names}); fix options.channels.",
                               error_class="SchemaMismatch")
                return
            channels = wanted
            src.meta.update(channels=channels)
        if any(c not in flat for c in channels):
            yield _bad(src, pos, m, f"lacks field(s) {[c for c in channels if c not in flat]}",
                       "missing_field")
            continue
        try:
            t = _times(src, msg, m)
        except ValueError as e:
            yield src.time_dead(e, "bad_timestamp", f"{src.path}: message {pos} stamp",
                                position=f"msg={pos}")
            continue
        t_l.append(t)
        pos_l.append(pos)
        vals.append([flat[c] for c in channels])
        if len(t_l) >= opts.chunk_rows:
            yield flush()
    if t_l:
        yield flush()


def _image_rows(src: SourceFile, opts: DecodeOptions, topic: Topic
                ) -> Iterator[Chunk | DeadLetter]:
    rows: dict[str, list] = {n: [] for n in VIDEO_SCHEMA.names}

    def flush() -> Chunk:
        c = src.chunk(pa.RecordBatch.from_pydict(rows, schema=VIDEO_SCHEMA))
        for v in rows.values():
            v.clear()
        return c

    for pos, m in enumerate(topic.messages):
        try:
            msg = m.decode()
        except Exception as e:  # noqa: BLE001 -- any deserializer failure is this message's
            yield _bad(src, pos, m, f"cannot be deserialized as {topic.msgtype} "
                       f"({type(e).__name__}: {short_error(e)})")
            continue
        try:
            image, w, h = image_of(msg, topic.msgtype)
        except BagError as e:
            yield _bad(src, pos, m, str(e), e.reason)
            continue
        try:
            t = _times(src, msg, m)
        except ValueError as e:
            yield src.time_dead(e, "bad_timestamp", f"{src.path}: message {pos} stamp",
                                position=f"msg={pos}")
            continue
        for k, v in (("t_ns", t), ("pos", pos), ("pts", None), ("width", w), ("height", h),
                     ("keyframe", True), ("file", None), ("image", image)):
            rows[k].append(v)
        if len(rows["t_ns"]) >= opts.chunk_frames:
            yield flush()
    if rows["t_ns"]:
        yield flush()


# ---------------------------------------------------------------- MCAP

def _mcap_decoder(schema, channel) -> tuple[str, Callable[[bytes], Any]]:
    """(message type, bytes -> message) for an MCAP channel."""
    enc = channel.message_encoding
    if enc == "json":
        return (schema.name if schema else channel.topic), lambda b: json.loads(b)
    if schema is None:
        raise BagError("unsupported_message", f"channel {channel.topic} has no schema")
    name = ros_type(schema.name)
    if enc in ("cdr", "ros1") and schema.encoding in ("ros2msg", "ros1msg"):
        store = get_typestore(Stores.EMPTY)
        store.register(get_types_from_msg(schema.data.decode(), name))
        if enc == "cdr":
            return name, lambda b: store.deserialize_cdr(b, name)
        return name, lambda b: store.deserialize_ros1(b, name)
    raise BagError("unsupported_message", f"channel {channel.topic} is {enc} with a "
                   f"{schema.encoding} schema; readable: cdr/ros2msg, ros1/ros1msg, json")


def open_mcap_topic(path: str, topic: str) -> Topic:
    """``topic`` of an MCAP file (``""``: a Topic whose name lists the file's topics)."""
    try:
        fh = open(path, "rb")
        reader = make_reader(fh)
        summary = reader.get_summary()
    except (McapError, OSError, ValueError, EOFError) as e:
        raise BagError("corrupt_file", f"is not a readable MCAP file ({short_error(e)})") \
            from None
    if summary is None:
        fh.close()
        raise BagError("corrupt_file", "has no MCAP summary (an unfinished recording); "
                       "recover it with `mcap recover`")
    channels = {c.id: c for c in summary.channels.values()}
    names = sorted({c.topic for c in channels.values()})
    if not topic or topic not in names:
        fh.close()
        if not topic:
            return Topic(f"topics: {names}", "", None, iter(()))
        raise BagError("missing_topic", f"has no topic {topic!r} (topics: {names}); fix "
                       "options.topic")
    ids = [i for i, c in channels.items() if c.topic == topic]
    chan = channels[ids[0]]
    msgtype, decode = _mcap_decoder(summary.schemas.get(chan.schema_id), chan)
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    count = sum(counts.get(i, 0) for i in ids) if summary.statistics else None

    def messages() -> Iterator[RawMessage]:
        try:
            for _, _, msg in reader.iter_messages(topics=[topic], log_time_order=True):
                data = bytes(msg.data)
                yield RawMessage(int(msg.log_time), data, lambda d=data: decode(d))
        finally:
            fh.close()
    return Topic(topic, msgtype, count, messages())


def decode_mcap(path: str, *, session_id: str, stream_id: str, modality: str = "sensor",
                options: DecodeOptions | dict | None = None, roots: tuple[str, ...] = (),
                time_offset_ns: int = 0, **_video_kw) -> Iterator[Chunk | DeadLetter]:
    """One topic of an MCAP file -> sensor or video chunks (module docstring)."""
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, modality, str(path), meta={"format": "mcap"},
                     roots=roots, time_offset_ns=time_offset_ns, unit="messages",
                     declared_by="its summary's message count")
    yield from src.run(topic_chunks(src, opts, lambda t: open_mcap_topic(str(path), t)))


def decode_mcap_sensor(path: str, **kw) -> Iterator[Chunk | DeadLetter]:
    return decode_mcap(path, modality="sensor", **kw)


def decode_mcap_video(path: str, **kw) -> Iterator[Chunk | DeadLetter]:
    return decode_mcap(path, modality="video", **kw)


def span_mcap(path: str, modality: str, options: DecodeOptions | dict | None = None
              ) -> tuple[int, int] | None:
    return span_topic(decode_mcap, path, modality, options)


def span_topic(decode: Callable[..., Iterator], path: str, modality: str,
               options: DecodeOptions | dict | None) -> tuple[int, int] | None:
    """(first_ns, end_ns) of a topic from its decoded times (``SpanAccumulator``)."""
    acc = SpanAccumulator()
    for out in decode(path, session_id="", stream_id="", modality=modality, options=options):
        if isinstance(out, Chunk):
            acc.add(out.t_ns())
    return acc.span()
