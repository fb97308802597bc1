"""The decode stage: one source file of one stream -> Chunks, and DeadLetters for what fails.

The per-modality decoders (video, audio, text, sensor in this package) are plain generators
over what ``base`` provides; this module holds the format table, the dispatcher
``decode_file`` and the Beam shells ``DecodeFile`` (DoFn) and ``DecodeStreams`` (composite
PTransform), whose input elements are ``DecodeRequest``s. Multi-file streams: see
``segments`` for the offsets that make a stream's files consecutive.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas import metrics
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import FORMATS, DecodeOptions, decoder_key, format_name
from mmalign.schemas.fs import UriPath, is_remote
from mmalign.schemas.manifest import Stream
from mmalign.schemas.metrics import DECODE
from mmalign.transforms.decode import audio, gpmf, mcap, rosbag, sensor, text, video
from mmalign.transforms.decode.base import SourceFile, short_error
from mmalign.transforms.decode.segments import segment_offsets
from mmalign.transforms.io.source_cache import OutsideRoots, SourceCache, default_cache
from mmalign.transforms.tags import DEAD, MAIN

# ---------------------------------------------------------------- dispatch

DECODERS: dict[tuple[str, str], Callable[..., Iterator[Chunk | DeadLetter]]] = {
    ("video", "container"): video.decode_video_container,
    ("video", "image_sequence"): video.decode_image_sequence,
    ("audio", "audio_file"): audio.decode_audio_file,
    ("audio", "audio_track"): audio.decode_audio_track,
    ("text", "srt"): text.decode_srt,
    ("text", "vtt"): text.decode_vtt,
    ("text", "jsonl"): text.decode_text_jsonl,
    ("sensor", "csv"): sensor.decode_sensor_csv,
    ("sensor", "parquet"): sensor.decode_sensor_parquet,
    ("sensor", "jsonl"): sensor.decode_sensor_jsonl,
    ("sensor", "gpmf"): gpmf.decode_gpmf,
    ("sensor", "mcap"): mcap.decode_mcap_sensor,
    ("video", "mcap"): mcap.decode_mcap_video,
    ("sensor", "rosbag"): rosbag.decode_rosbag_sensor,
    ("video", "rosbag"): rosbag.decode_rosbag_video,
}


@dataclass(frozen=True)
class DecodeRequest:
    """One file of one stream to decode: the decode stage's input element. ``roots``: the
    resolved folders the decoder may open files in (empty = anywhere); ``time_offset_ns``: added
    to every time the file's samples get (see ``segments.segment_offsets``)."""

    session_id: str
    stream: Stream
    path: str
    roots: tuple[str, ...] = ()
    time_offset_ns: int = 0

    @classmethod
    def of(cls, element: DecodeRequest | tuple) -> DecodeRequest:
        """A DecodeRequest, or the older ``(session_id, stream, path)`` tuple."""
        if isinstance(element, DecodeRequest):
            return element
        session_id, stream, path = element
        return cls(session_id, stream, str(path))


def manifest_requests(manifest) -> list[DecodeRequest]:
    """Every file of a validated manifest as a DecodeRequest: resolved inside the manifest's
    allowed roots, and shifted so that a stream's files are consecutive segments
    (``segments.segment_offsets``; probed only for streams of several files or declared
    starts). Remote files (URIs) keep their URI; a multi-file stream's remote segments are
    probed through the local source cache (``localize``)."""
    roots = tuple(str(r) for r in manifest.roots())
    out = []
    for s in manifest.streams:
        paths = [manifest.resolve(f, f"streams[{s.id}].files[{i}]")
                 for i, f in enumerate(s.paths)]
        multi = len(paths) > 1 or any(x is not None for x in s.starts)
        offsets = segment_offsets(s, [localize(s, p, roots) if isinstance(p, UriPath) else p
                                      for p in paths]) if multi else [0] * len(paths)
        out += [DecodeRequest(manifest.session, s, str(p), roots, off)
                for p, off in zip(paths, offsets)]
    return out


def decode_file(stream: Stream, path: Path | str, *, session_id: str,
                roots: tuple[str, ...] = (), time_offset_ns: int = 0
                ) -> Iterator[Chunk | DeadLetter]:
    """Decode one file of ``stream``: files outside ``roots`` (when given) are not opened,
    ``time_offset_ns`` shifts every time. Never raises: unknown formats, bad options and any
    decoder exception become file-level DeadLetters (after the chunks already yielded).
    A remote ``path`` (``s3://``, ``gs://``) is decoded from the worker's source cache
    (``_decode_remote``); reading it may raise ``OSError`` (network, permissions) so that the
    runner retries the work item."""
    if is_remote(path):
        yield from _decode_remote(stream, str(path), session_id=session_id, roots=roots,
                                  time_offset_ns=time_offset_ns)
        return
    src = SourceFile(session_id, stream.id, stream.modality, str(path), roots=roots)
    fmt = format_name(stream.format, str(path))
    key = decoder_key(stream.modality, stream.format, str(path))
    if key is None:
        known = sorted(FORMATS[stream.modality])
        yield src.dead("unknown_format", f"{path}: no {stream.modality} decoder for format "
                       f"{fmt!r}; set the stream's format to one of {known}.",
                       error_class="UnknownFormat")
        return
    try:
        opts = DecodeOptions.of(stream.options)
    except ValueError as e:
        yield src.dead("bad_options", f"{path}: {e}.", error_class="BadOptions")
        return
    fn = DECODERS[(stream.modality, key)]
    kw: dict = {"session_id": session_id, "stream_id": stream.id, "options": opts,
                "roots": tuple(roots), "time_offset_ns": int(time_offset_ns)}
    if stream.modality == "video":
        kw |= {"chunk_frames": opts.chunk_frames, "inline_images": opts.inline_images}
    try:
        yield from fn(str(path), **kw)
    except Exception as e:  # noqa: BLE001 -- a decoder bug must never escape
        yield src.dead("decoder_error", f"{path}: the {stream.modality} decoder failed "
                       f"({type(e).__name__}: {short_error(e)}).",
                       error_class=type(e).__name__,
                       attrs={"traceback": traceback.format_exc(limit=5)[-2000:]})


# ---------------------------------------------------------------- remote files


def localize(stream: Stream, uri: str | UriPath, roots: tuple[str, ...] = (),
             cache: SourceCache | None = None) -> Path:
    """The local copy of a remote file of ``stream`` (downloaded once per worker machine:
    ``transforms/io/source_cache.py``); for an image sequence also the images its index names
    inside the image folder and the roots. ``OutsideRoots`` for a file outside the remote
    ``roots`` (nothing is read), ``FileNotFoundError`` for a missing one."""
    cache = cache or default_cache()
    local = cache.fetch(uri, roots)
    if decoder_key(stream.modality, stream.format, str(uri)) == "image_sequence":
        _fetch_images(stream, local, roots, cache)
    return local


def _fetch_images(stream: Stream, index: Path, roots, cache: SourceCache) -> None:
    """The images an index names, fetched next to its copy: each resolved as the decoder
    resolves it (``video._resolve_image`` on the mirror), so only images the decoder would
    open are read; missing ones and ones outside the roots are left to its letters."""
    try:
        opts = DecodeOptions.of(stream.options)
    except ValueError:
        return                                  # the decoder reports bad_options
    image_dir = (index.parent / (opts.image_dir or ".")).resolve()
    for e in video.read_index(str(index), opts.time_unit):
        if e.error is not None or not e.filename:
            continue
        p = (image_dir / e.filename).resolve()
        uri = cache.uri_of(p) if (p == image_dir or image_dir in p.parents) else None
        if uri is not None:
            try:
                cache.fetch(uri, roots)
            except (OutsideRoots, FileNotFoundError, IsADirectoryError):
                continue


def _decode_remote(stream: Stream, uri: str, *, session_id: str, roots: tuple[str, ...],
                   time_offset_ns: int) -> Iterator[Chunk | DeadLetter]:
    """``decode_file`` of a remote file: decoded from its local copy with the roots mirrored
    (so the allowed-roots rule holds as for local files), every cache path in what comes out
    written back as its URI (chunks' ``source_uri`` and meta, letters' source, message,
    attributes)."""
    cache = default_cache()
    src = SourceFile(session_id, stream.id, stream.modality, uri, roots=roots)
    try:
        local = localize(stream, uri, roots, cache)
    except OutsideRoots:
        yield src.dead("path_outside_roots", f"{uri} is outside the allowed roots "
                       f"{list(roots)}; it was not read.", error_class="PathOutsideRoots",
                       attrs={"target": uri})
        return
    except FileNotFoundError:
        yield src.dead("missing_file", f"{uri} does not exist.", error_class="FileNotFound")
        return
    except IsADirectoryError:
        yield src.dead("not_a_file", f"{uri} is not a file (a prefix of other objects).",
                       error_class="FileNotFound")
        return
    for out in decode_file(stream, str(local), session_id=session_id,
                           roots=cache.local_roots(roots), time_offset_ns=time_offset_ns):
        yield _with_uris(out, cache)


def _with_uris(out: Chunk | DeadLetter, cache: SourceCache) -> Chunk | DeadLetter:
    def back(v):
        return cache.uris(v) if isinstance(v, str) else v

    if isinstance(out, DeadLetter):
        return dataclasses.replace(out, source_uri=back(out.source_uri),
                                   message=back(out.message),
                                   attrs={k: back(v) for k, v in out.attrs.items()})
    return dataclasses.replace(out, source_uri=back(out.source_uri),
                               meta={k: back(v) for k, v in out.meta.items()})


# ---------------------------------------------------------------- Beam shells

class DecodeFile(beam.DoFn):
    """DecodeRequest (or the older ``(session_id, Stream, path)`` tuple) -> Chunks (main) and
    DeadLetters (tagged "dead")."""

    DEAD = DEAD

    def __init__(self, run_id: str = ""):
        self.run_id = run_id

    @staticmethod
    def _count(modality: str, what: str, n: int) -> None:
        # namespace "decode", name "<modality>.records|dead": reads as decode.<modality>.<what>
        DECODE.count(what, n, modality=modality)

    def process(self, element):
        req = DecodeRequest.of(element)
        modality = req.stream.modality
        src = SourceFile(req.session_id, req.stream.id, modality, str(req.path))
        try:
            for out in DECODE.timed_iter(     # processing time + sampled span (metrics.py)
                    decode_file(req.stream, req.path, session_id=req.session_id,
                                roots=req.roots, time_offset_ns=req.time_offset_ns),
                    modality, session=req.session_id, stream=req.stream.id, file=str(req.path)):
                if isinstance(out, DeadLetter):
                    self._count(modality, metrics.DEAD, out.records)
                    yield beam.pvalue.TaggedOutput(self.DEAD, out.with_run(self.run_id))
                else:
                    self._count(modality, metrics.RECORDS, out.num_records)
                    yield out
        except Exception as e:  # noqa: BLE001 -- nothing escapes the DoFn
            self._count(modality, metrics.DEAD, 1)
            yield beam.pvalue.TaggedOutput(self.DEAD, src.dead(
                "decoder_error", f"{req.path}: decoding stopped ({type(e).__name__}: "
                f"{short_error(e)}).", error_class=type(e).__name__).with_run(self.run_id))


class DecodeStreams(beam.PTransform):
    """PCollection[DecodeRequest | (session_id, Stream, path)] -> tagged outputs ``chunks``
    and ``dead``."""

    def __init__(self, run_id: str = ""):
        super().__init__()
        self.run_id = run_id

    def expand(self, pcoll):
        return pcoll | "DecodeFile" >> beam.ParDo(DecodeFile(self.run_id)).with_outputs(
            DEAD, main=MAIN)
