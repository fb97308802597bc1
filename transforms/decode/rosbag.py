"""ROS bags: ROS 1 ``.bag`` files and ROS 2 bags (a folder with ``metadata.yaml`` and its
``.db3`` / ``.mcap`` storage files), one topic (``options.topic``) -> sensor rows or image
frames, converted as ``mcap`` converts them (flattened numeric fields, header stamps, images
inline; see that module).

Read with rosbags' ``AnyReader``, which takes message definitions from the bag itself (ROS 1
connection headers, ROS 2 metadata) and falls back to the ROS 2 Humble types. A stream's file
is the ``.bag`` file, or the ROS 2 bag's ``metadata.yaml`` or one of its storage files (the
bag is the folder holding them). Records: the topic's messages as the bag's index counts
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.transforms.decode.base import SourceFile, inside_roots, short_error
from mmalign.transforms.decode.mcap import (
    BagError,
    RawMessage,
    Topic,
    ros_type,
    span_topic,
    topic_chunks,
)


def bag_path(path: str) -> Path:
    """What rosbags opens for a stream file: a ``.bag`` file itself, else the ROS 2 bag
    folder (the file's folder when it holds ``metadata.yaml``)."""
    p = Path(path)
    if p.suffix.lower() == ".bag":
        return p
    if p.name == "metadata.yaml" or (p.parent / "metadata.yaml").is_file():
        return p.parent
    raise BagError("corrupt_file", "is neither a ROS 1 .bag file nor a file of a ROS 2 bag "
                   "folder (no metadata.yaml beside it)")


def open_bag_topic(path: str, topic: str) -> Topic:
    """``topic`` of a ROS bag (``""``: a Topic whose name lists the bag's topics)."""
    where = bag_path(path)
    reader = AnyReader([where], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
    try:
        reader.open()
    except Exception as e:  # noqa: BLE001 -- rosbags raises several reader error types
        raise BagError("corrupt_file", f"is not a readable ROS bag ({type(e).__name__}: "
                       f"{short_error(e)})") from None
    names = sorted({c.topic for c in reader.connections})
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        reader.close()
        if not topic:
            return Topic(f"topics: {names}", "", None, iter(()))
        raise BagError("missing_topic", f"has no topic {topic!r} (topics: {names}); fix "
                       "options.topic")
    msgtype = ros_type(conns[0].msgtype)
    count = sum(int(c.msgcount) for c in conns)

    def messages() -> Iterator[RawMessage]:
        try:
            for conn, t, raw in reader.messages(connections=conns):
                data = bytes(raw)
                yield RawMessage(int(t), data,
                                 lambda d=data, c=conn: reader.deserialize(d, c.msgtype))
        finally:
            reader.close()
    return Topic(topic, msgtype, count, messages())


def decode_rosbag(path: str, *, session_id: str, stream_id: str, modality: str = "sensor",
                  options: DecodeOptions | dict | None = None, roots: tuple[str, ...] = (),
                  time_offset_ns: int = 0, **_video_kw) -> Iterator[Chunk | DeadLetter]:
    """One topic of a ROS 1 or ROS 2 bag -> sensor or video chunks (module docstring)."""
    opts = DecodeOptions.of(options)
    src = SourceFile(session_id, stream_id, modality, str(path), meta={"format": "rosbag"},
                     roots=roots, time_offset_ns=time_offset_ns, unit="messages",
                     declared_by="its index's message count")

    def opener(topic: str) -> Topic:
        check_storage_roots(str(path), src.roots)
        return open_bag_topic(str(path), topic)
    yield from src.run(topic_chunks(src, opts, opener))


def check_storage_roots(path: str, roots: tuple[str, ...]) -> None:
    """A ROS 2 bag's storage files (metadata.yaml's ``relative_file_paths``) must lie inside
    the allowed roots too: ``BagError`` (path_outside_roots) names the first that does not."""
    where = bag_path(path)
    if not roots or not where.is_dir():
        return
    try:
        meta = yaml.safe_load((where / "metadata.yaml").read_text())
        files = meta["rosbag2_bagfile_information"]["relative_file_paths"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise BagError("corrupt_file", f"has an unreadable metadata.yaml ({short_error(e)})") \
            from None
    for name in files:
        if not inside_roots(where / str(name), roots):
            raise BagError("path_outside_roots", f"lists the storage file {name!r}, which "
                           f"resolves outside the allowed roots {list(roots)}; it was not read")


def decode_rosbag_sensor(path: str, **kw) -> Iterator[Chunk | DeadLetter]:
    return decode_rosbag(path, modality="sensor", **kw)


def decode_rosbag_video(path: str, **kw) -> Iterator[Chunk | DeadLetter]:
    return decode_rosbag(path, modality="video", **kw)


def span_rosbag(path: str, modality: str, options: DecodeOptions | dict | None = None
                ) -> tuple[int, int] | None:
    return span_topic(decode_rosbag, path, modality, options)
