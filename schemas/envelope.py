"""The Kafka message: one chunk of one stream, as an envelope + payload.

Key = the session id (UTF-8), so a session stays in order within a partition. Value:

    b"MMK1" | uint32 big-endian header length | header (UTF-8 JSON) | payload bytes

Header fields: ``v`` schema version, ``session``, ``stream``, ``modality``, ``seq`` (message
number within the stream, from 0), ``chunk_seq`` (chunk number within its source file),
``t_ns`` / ``t_last_ns`` (event time of the first / last sample, ns, *device* clock),
``prev_t_ns`` (max device time of earlier samples of the same file, for order checks),
``t_end_ns`` (optional: the latest end of an interval sample, text cues), ``eos`` (optional,
true on the last message the producer will send for this stream of this session),
``source_uri`` (the original file), ``meta`` (sample_rate, width, height, ...), ``extents``
(optional: {stream: [first, last]} of every stream of the session on the reference clock,
declared by a producer that knows them; see README "Streaming on Kafka"), and ``payload``:

- ``{"kind": "arrow"}``: the payload bytes are the chunk's samples as one Arrow IPC stream
  (columns t_ns, pos + the modality's: JPEG ``image``, PCM ``pcm``, ``text``, sensor channels);
- ``{"kind": "uri", "uri": "file:///...", "offset": o, "length": n}``: the same Arrow IPC
  bytes live in a file at that byte range (large chunks); the payload bytes are empty.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc

from mmalign.schemas.chunk import MODALITIES, SCHEMA_VERSION, Chunk

MAGIC = b"MMK1"
_LEN = struct.Struct(">I")
EXTENTS_META_KEY = "stream_extents"   # where the declared extents travel inside Chunk.meta
REQUIRED = ("v", "session", "stream", "modality", "seq", "t_ns", "payload")


class MessageError(ValueError):
    """A message that cannot be read; ``reason`` is the dead-letter slug."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    session: str
    stream: str
    modality: str
    seq: int
    t_ns: int
    t_last_ns: int
    source_uri: str
    chunk_seq: int = 0
    prev_t_ns: int | None = None
    t_end_ns: int | None = None
    eos: bool = False
    meta: dict = field(default_factory=dict)
    extents: dict[str, list[int]] | None = None
    payload: dict = field(default_factory=lambda: {"kind": "arrow"})
    v: str = SCHEMA_VERSION

    def header(self) -> dict:
        h = {"v": self.v, "session": self.session, "stream": self.stream,
             "modality": self.modality, "seq": self.seq, "chunk_seq": self.chunk_seq,
             "t_ns": self.t_ns, "t_last_ns": self.t_last_ns, "prev_t_ns": self.prev_t_ns,
             "source_uri": self.source_uri, "meta": self.meta, "payload": self.payload}
        if self.extents is not None:
            h["extents"] = self.extents
        if self.t_end_ns is not None:
            h["t_end_ns"] = self.t_end_ns
        if self.eos:
            h["eos"] = True
        return h


def _json_default(o):
    if hasattr(o, "item"):          # numpy scalars
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def batch_to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def ipc_to_batch(data: bytes) -> pa.RecordBatch:
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def encode(env: Envelope, payload: bytes) -> bytes:
    head = json.dumps(env.header(), default=_json_default, separators=(",", ":")).encode()
    return MAGIC + _LEN.pack(len(head)) + head + payload


def chunk_envelope(chunk: Chunk, seq: int, extents: dict | None = None,
                   eos: bool = False) -> Envelope:
    t = chunk.t_ns()
    names = chunk.data.schema.names
    end = pc.max(chunk.data.column("t_end_ns")).as_py() if "t_end_ns" in names else None
    return Envelope(session=chunk.session_id, stream=chunk.stream_id, modality=chunk.modality,
                    seq=seq, chunk_seq=chunk.seq, t_ns=int(t.min()), t_last_ns=int(t.max()),
                    prev_t_ns=chunk.prev_t_ns, t_end_ns=None if end is None else int(end),
                    eos=eos, source_uri=chunk.source_uri,
                    meta=json.loads(json.dumps(chunk.meta, default=_json_default)),
                    extents=extents)


def split(value: bytes) -> tuple[dict, bytes]:
    """(header, payload bytes) of a message value; ``MessageError`` if it is not one."""
    if not isinstance(value, (bytes, bytearray)) or value[:4] != MAGIC:
        raise MessageError("not_an_envelope", "message value does not start with the "
                           "mmalign envelope magic b'MMK1'")
    if len(value) < 8:
        raise MessageError("truncated", "message value ends inside the envelope header length")
    (n,) = _LEN.unpack_from(value, 4)
    if 8 + n > len(value):
        raise MessageError("truncated", f"envelope header says {n} bytes but the value has "
                           f"{len(value) - 8}")
    try:
        header = json.loads(bytes(value[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageError("bad_header", f"envelope header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise MessageError("bad_header", "envelope header is not a JSON object")
    missing = [k for k in REQUIRED if k not in header]
    if missing:
        raise MessageError("bad_header", f"envelope header lacks field(s) {missing}")
    if header["v"].split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise MessageError("schema_version", f"envelope schema version {header['v']!r} is not "
                           f"readable by this version ({SCHEMA_VERSION})")
    if header["modality"] not in MODALITIES:
        raise MessageError("bad_header", f"modality {header['modality']!r} is not one of "
                           f"{list(MODALITIES)}")
    if not isinstance(header["t_ns"], int):
        raise MessageError("bad_header", "envelope field t_ns is not an integer (ns)")
    return header, bytes(value[8 + n:])


def read_payload(header: dict, payload: bytes, allowed_roots: tuple[str, ...] = ()) -> bytes:
    """The Arrow IPC bytes: inline, or read from the referenced file's byte range (which must
    lie under one of ``allowed_roots``)."""
    p = header["payload"]
    kind = p.get("kind") if isinstance(p, dict) else None
    if kind == "arrow":
        return payload
    if kind != "uri":
        raise MessageError("bad_header", f"payload kind {kind!r} is not 'arrow' or 'uri'")
    url = urlparse(str(p.get("uri", "")))
    if url.scheme != "file":
        raise MessageError("bad_uri", f"payload uri {p.get('uri')!r}: only file:// is readable")
    path = Path(unquote(url.path)).resolve()
    if not any(path.is_relative_to(Path(r).resolve()) for r in allowed_roots):
        raise MessageError("uri_not_allowed", f"payload uri {path} is outside the allowed "
                           f"payload roots {list(allowed_roots)}; add its folder with "
                           f"--payload-root")
    offset, length = int(p.get("offset", 0)), int(p.get("length", -1))
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length if length >= 0 else -1)
    except OSError as e:
        raise MessageError("bad_uri", f"payload uri {path}: {e.strerror}") from None
    if length >= 0 and len(data) != length:
        raise MessageError("truncated", f"payload uri {path}: byte range {offset}+{length} "
                           f"ends past the file")
    return data


def decode_chunk(value: bytes, allowed_roots: tuple[str, ...] = ()) -> Chunk:
    """The Chunk a message carries (declared extents go to ``meta['stream_extents']``).
    Raises ``MessageError`` for anything unreadable."""
    header, payload = split(value)
    data = read_payload(header, payload, allowed_roots)
    try:
        batch = ipc_to_batch(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise MessageError("bad_payload", f"payload is not an Arrow IPC stream ({e})") from None
    for col, kind in (("t_ns", pa.int64()), ("pos", pa.int64())):
        if col not in batch.schema.names or batch.schema.field(col).type != kind:
            raise MessageError("bad_payload", f"payload lacks an int64 column {col!r}")
    meta = dict(header.get("meta") or {})
    if header.get("extents"):
        meta[EXTENTS_META_KEY] = {k: tuple(v) for k, v in header["extents"].items()}
    return Chunk(session_id=str(header["session"]), stream_id=str(header["stream"]),
                 modality=header["modality"], seq=int(header.get("chunk_seq", 0)),
                 source_uri=str(header.get("source_uri") or ""), data=batch, meta=meta,
                 prev_t_ns=header.get("prev_t_ns"), schema_version=header["v"])
