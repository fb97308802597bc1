"""The decode stage: one source file of one stream -> Chunks, and DeadLetters for what fails.

The per-modality decoders (decode_video, decode_audio, decode_text, decode_sensor) are plain
generators; this module holds what they share (``DecodeOptions``, ``SourceFile``: chunk
numbering, ``prev_t_ns`` and dead-letter construction), the dispatcher ``decode_file`` and
the Beam shells ``DecodeFile`` (DoFn) and ``DecodeStreams`` (composite PTransform).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deadletter.record import DeadLetter
from schemas.envelope import Chunk
from schemas.manifest import Stream

TimeUnit = Literal["ns", "us", "ms", "s"]
UNIT_NS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class DecodeOptions(BaseModel):
    """Decoder options, read from ``Stream.options`` (keys other stages use are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    max_bytes: int = Field(2 * 1024**3, gt=0, description="larger files are dead letters")
    time_unit: TimeUnit | None = Field(None, description="unit of timestamps in index/sensor")
    start_ns: int | None = Field(None, description="audio: time of sample 0 (default 0/pts)")
    time_column: str | None = None
    channels: list[str] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1, description="sensor CSV")
    image_dir: str | None = Field(None, description="image folder, relative to the index")
    chunk_frames: int = Field(64, ge=1)
    block_samples: int = Field(1024, ge=1)
    chunk_rows: int = Field(4096, ge=1)
    inline_images: bool = False
    jpeg_quality: int = Field(90, ge=1, le=100)

    @classmethod
    def of(cls, options: DecodeOptions | dict | None) -> DecodeOptions:
        """Parse options; raises ``ValueError`` with one sentence naming the bad field."""
        if isinstance(options, DecodeOptions):
            return options
        try:
            return cls.model_validate(options or {})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ValueError(f"decoder option '{loc}': {err['msg']}; correct it in the "
                             f"stream's options") from None


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


# ---------------------------------------------------------------- dispatch

VIDEO_CONTAINERS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mpg", ".mpeg"}
AUDIO_FILES = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".m4a", ".opus", ".aac"}

# format name -> (modality, decoder key); the format field may also name an extension.
_FORMATS: dict[str, dict[str, str]] = {
    "video": {"container": "container", "image_sequence": "image_sequence",
              **{e[1:]: "container" for e in VIDEO_CONTAINERS},
              "txt": "image_sequence", "csv": "image_sequence"},
    "audio": {"audio_file": "audio_file", "audio_track": "audio_track",
              **{e[1:]: "audio_file" for e in AUDIO_FILES},
              **{e[1:]: "audio_track" for e in VIDEO_CONTAINERS}},
    "text": {"srt": "srt", "vtt": "vtt", "webvtt": "vtt", "jsonl": "jsonl"},
    "sensor": {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl"},
}


def _decoder(modality: str, key: str) -> Callable[..., Iterator[Chunk | DeadLetter]]:
    # Imported here: the decoder modules import this one (for SourceFile, DecodeOptions).
    if modality == "video":
        from transforms import decode_video as m
        return {"container": m.decode_video_container,
                "image_sequence": m.decode_image_sequence}[key]
    if modality == "audio":
        from transforms import decode_audio as m
        return {"audio_file": m.decode_audio_file, "audio_track": m.decode_audio_track}[key]
    if modality == "text":
        from transforms import decode_text as m
        return {"srt": m.decode_srt, "vtt": m.decode_vtt, "jsonl": m.decode_text_jsonl}[key]
    from transforms import decode_sensor as m
    return {"csv": m.decode_sensor_csv, "parquet": m.decode_sensor_parquet,
            "jsonl": m.decode_sensor_jsonl}[key]


def decode_file(stream: Stream, path: Path | str, *, session_id: str
                ) -> Iterator[Chunk | DeadLetter]:
    """Decode one file of ``stream``. Never raises: unknown formats, bad options and any
    decoder exception become file-level DeadLetters (after the chunks already yielded)."""
    src = SourceFile(session_id, stream.id, stream.modality, str(path))
    fmt = (stream.format or Path(path).suffix.lstrip(".")).lower()
    key = _FORMATS[stream.modality].get(fmt)
    if key is None:
        known = sorted(_FORMATS[stream.modality])
        yield src.dead("unknown_format", f"{path}: no {stream.modality} decoder for format "
                       f"{fmt!r}; set the stream's format to one of {known}.",
                       error_class="UnknownFormat")
        return
    try:
        opts = DecodeOptions.of(stream.options)
    except ValueError as e:
        yield src.dead("bad_options", f"{path}: {e}.", error_class="BadOptions")
        return
    fn = _decoder(stream.modality, key)
    kw: dict = {"session_id": session_id, "stream_id": stream.id, "options": opts}
    if stream.modality == "video":
        kw |= {"chunk_frames": opts.chunk_frames, "inline_images": opts.inline_images}
    try:
        yield from fn(str(path), **kw)
    except Exception as e:  # noqa: BLE001 -- a decoder bug must never escape
        yield src.dead("decoder_error", f"{path}: the {stream.modality} decoder failed "
                       f"({type(e).__name__}: {short_error(e)}).",
                       error_class=type(e).__name__,
                       attrs={"traceback": traceback.format_exc(limit=5)[-2000:]})


# ---------------------------------------------------------------- Beam shells

class DecodeFile(beam.DoFn):
    """(session_id, Stream, path) -> Chunks (main) and DeadLetters (tagged "dead")."""

    DEAD = "dead"

    def __init__(self, run_id: str = ""):
        self.run_id = run_id

    @staticmethod
    def _count(modality: str, what: str, n: int) -> None:
        # namespace "decode", name "<modality>.records|dead": reads as decode.<modality>.<what>
        beam.metrics.Metrics.counter("decode", f"{modality}.{what}").inc(n)

    def process(self, element):
        session_id, stream, path = element
        modality = stream.modality
        src = SourceFile(session_id, stream.id, modality, str(path))
        try:
            for out in decode_file(stream, Path(path), session_id=session_id):
                if isinstance(out, DeadLetter):
                    self._count(modality, "dead", 1)
                    yield beam.pvalue.TaggedOutput(self.DEAD, out.with_run(self.run_id))
                else:
                    self._count(modality, "records", out.num_records)
                    yield out
        except Exception as e:  # noqa: BLE001 -- nothing escapes the DoFn
            self._count(modality, "dead", 1)
            yield beam.pvalue.TaggedOutput(self.DEAD, src.dead(
                "decoder_error", f"{path}: decoding stopped ({type(e).__name__}: "
                f"{short_error(e)}).", error_class=type(e).__name__).with_run(self.run_id))


class DecodeStreams(beam.PTransform):
    """PCollection[(session_id, Stream, path)] -> tagged outputs ``chunks`` and ``dead``."""

    def __init__(self, run_id: str = ""):
        super().__init__()
        self.run_id = run_id

    def expand(self, pcoll):
        return pcoll | "DecodeFile" >> beam.ParDo(DecodeFile(self.run_id)).with_outputs(
            DecodeFile.DEAD, main="chunks")
