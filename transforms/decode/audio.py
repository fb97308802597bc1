"""Audio decoders: wav/flac/ogg/aiff via soundfile (blockwise), other files and the audio track
of video containers via PyAV (native rate, no resampling). Output rows follow
schemas/audio.py: blocks of ``block_samples`` mono float32 samples, ~1 s of blocks per chunk.

t_ns of a block = start_ns + round(first_sample * 1e9 / sample_rate), computed exactly in
integers; start_ns = options.start_ns, else 0 for files read by soundfile and the stream's first
pts for PyAV containers.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import soundfile as sf

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.audio import ARROW_SCHEMA
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.transforms.decode.base import (
    CONTAINER_FORMATS,
    SourceFile,
    checked_ns_array,
    open_container,
    short_error,
)

SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}


def sample_ns(first_sample: np.ndarray, sample_rate: int) -> np.ndarray:
    """round(first_sample * 1e9 / sample_rate) in int64 without overflow (half rounds up)."""
    q, r = np.divmod(np.asarray(first_sample, np.int64), np.int64(sample_rate))
    return q * 1_000_000_000 + (r * 2_000_000_000 + sample_rate) // (2 * sample_rate)


def _pcm_batch(pcm: np.ndarray, t_ns: np.ndarray, pos: np.ndarray, lens: np.ndarray
               ) -> pa.RecordBatch:
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return pa.RecordBatch.from_arrays([
        pa.array(t_ns, pa.int64()), pa.array(pos, pa.int64()),
        pa.array(lens.astype(np.int32), pa.int32()),
        pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                 pa.array(pcm.astype(np.float32, copy=False), pa.float32())),
    ], schema=ARROW_SCHEMA)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n, channels] float samples -> float32 mono mix (channel mean). Values are kept as
    decoded, not clipped: out-of-range, inf and NaN samples are the validate stage's to
    reject (a float WAV can hold them)."""
    with np.errstate(invalid="ignore", over="ignore"):
        mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
        return mono.astype(np.float32, copy=False)


_INT_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A PyAV audio frame (any sample format, planar or packed) -> float32 mono."""
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    name = frame.format.name.rstrip("p")
    if not frame.format.is_planar:
        a = a.reshape(-1, channels).T
    a = a[:, : frame.samples].T                       # [n, channels]
    if name == "u8":
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif name in _INT_SCALE:
        a = a.astype(np.float64) / _INT_SCALE[name]
    return to_mono(a)


class _Blocker:
    """Collects mono samples and cuts them into chunks of whole blocks (~1 s each). A block
    whose time (start + sample time + the file's offset) is outside int64 ns is a
    ``timestamp_overflow`` letter instead of a row."""

    def __init__(self, src: SourceFile, sample_rate: int, block: int, start_ns: int):
        self.src, self.sr, self.block, self.start_ns = src, sample_rate, block, start_ns
        self.per_chunk = max(1, round(sample_rate / block)) * block
        self.parts: list[np.ndarray] = []
        self.buffered = 0
        self.next_sample = 0            # index of the first buffered sample

    @property
    def at(self) -> int:
        """Index of the next sample to arrive."""
        return self.next_sample + self.buffered

    def add(self, mono: np.ndarray) -> Iterator[Chunk | DeadLetter]:
        if len(mono):
            self.parts.append(mono)
            self.buffered += len(mono)
        while self.buffered >= self.per_chunk:
            yield from self._emit(self.per_chunk)

    def finish(self) -> Iterator[Chunk | DeadLetter]:
        if self.buffered:
            yield from self._emit(self.buffered)

    def _emit(self, n: int) -> Iterator[Chunk | DeadLetter]:
        buf = np.concatenate(self.parts)
        head, tail = buf[:n], buf[n:]
        self.parts = [tail] if len(tail) else []
        self.buffered = len(tail)
        first = self.next_sample
        self.next_sample += n
        starts = np.arange(0, n, self.block, dtype=np.int64)
        lens = np.minimum(self.block, n - starts)
        t_ns, bad = checked_ns_array(sample_ns(first + starts, self.sr),
                                     self.start_ns + self.src.time_offset_ns)
        for i in np.flatnonzero(bad):
            s0 = int(first + starts[i])
            when = self.start_ns + self.src.time_offset_ns + int(sample_ns(s0, self.sr))
            yield self.src.dead("timestamp_overflow", f"{self.src.path}: the block at sample "
                                f"{s0} would be at {when} ns, outside int64 nanoseconds.",
                                error_class="TimestampOverflow", position=f"sample={s0}",
                                attrs={"sample": str(s0)})
        if bad.any():
            keep = ~bad
            cuts = [head[s:s + ln] for s, ln, k in zip(starts, lens, keep, strict=True) if k]
            if not cuts:
                return
            head = np.concatenate(cuts)
            t_ns, starts, lens = t_ns[keep], starts[keep], lens[keep]
        yield self.src.chunk(_pcm_batch(head, t_ns, first + starts, lens))


# ---------------------------------------------------------------- declared lengths

class HeaderCut(ValueError):
    """The file ends inside its header: it declares something, but not how much."""


def wav_header(path: str) -> tuple[int, int] | None:
    """(frames, sample_rate) a RIFF/WAVE file's header declares: its ``data`` chunk size over
    the ``fmt `` block size, read from the chunks themselves (libsndfile reports the frames
    actually present, so a file cut short would look whole). None if not a WAV with a known
    data size (RF64, a streaming writer's 0xFFFFFFFF) or not PCM/float/A-law/mu-law;
    ``HeaderCut`` if the file ends before its ``data`` chunk starts."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        end = "<" if head[:4] == b"RIFF" else ">"
        fmt = None
        while True:
            ch = f.read(8)
            if len(ch) < 8:
                raise HeaderCut(f"the file ends inside its WAV header (before the data chunk, "
                                f"at byte {f.tell()})")
            cid, (size,) = ch[:4], struct.unpack(end + "I", ch[4:])
            if cid == b"fmt ":
                body = f.read(min(size, 40))
                if len(body) < 16:
                    raise HeaderCut("the file ends inside its WAV fmt chunk")
                tag, _ch, rate, _br, align, _bits = struct.unpack(end + "HHIIHH", body[:16])
                if tag == 0xFFFE and len(body) >= 26:         # WAVE_FORMAT_EXTENSIBLE
                    (tag,) = struct.unpack(end + "H", body[24:26])
                fmt = (tag, rate, align)
                f.seek(size - len(body) + (size & 1), 1)
            elif cid == b"data":
                if fmt is None or size == 0xFFFFFFFF:
                    return None
                tag, rate, align = fmt
                if tag not in (1, 3, 6, 7) or align == 0 or rate == 0:
                    return None
                return size // align, rate
            else:
                f.seek(size + (size & 1), 1)


def flac_header(path: str) -> tuple[int, int] | None:
    """(total samples, sample_rate) from a FLAC file's STREAMINFO; None if not stated."""
    with open(path, "rb") as f:
        head = f.read(8 + 34)
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return None
    v = int.from_bytes(head[18:26], "big")
    rate, total = v >> 44, v & ((1 << 36) - 1)
    return (total, rate) if total and rate else None


def declared_frames(path: str) -> tuple[int, int, str] | None:
    """(frames, rate, what states it) from the file's own header (WAV, FLAC), else None;
    ``HeaderCut`` if a WAV file ends inside its header."""
    for fn, what in ((wav_header, "its WAV header"), (flac_header, "its FLAC STREAMINFO")):
        try:
            got = fn(path)
        except (OSError, struct.error):
            got = None
        if got is not None:
            return (*got, what)
    return None


# ---------------------------------------------------------------- decoders

def decode_audio_file(path: str, *, session_id: str, stream_id: str,
                      block_samples: int | None = None,
                      options: DecodeOptions | dict | None = None,
                      roots: tuple[str, ...] = (), time_offset_ns: int = 0
                      ) -> Iterator[Chunk | DeadLetter]:
    """Decode an audio file: wav/flac/ogg/aiff blockwise with soundfile, others with PyAV.

    Declared blocks = ceil(declared frames / block_samples), the frames from the WAV header
    or FLAC STREAMINFO (else libsndfile's count): a file cut short is a ``truncated`` letter
    for the blocks it lost, a read error a ``corrupt_samples`` letter that stands for them."""
    if Path(path).suffix.lower() not in SOUNDFILE_EXTS:
        yield from _decode_pyav(path, session_id, stream_id, block_samples, options, roots,
                                time_offset_ns)
        return
    opts = DecodeOptions.of(options)
    block = block_samples or opts.block_samples
    src = SourceFile(session_id, stream_id, "audio", str(path), roots=roots,
                     time_offset_ns=time_offset_ns, unit="blocks")
    yield from src.run(_soundfile(src, block, opts))


def _soundfile(src: SourceFile, block: int, opts: DecodeOptions
               ) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        if bad.reason == "oversize":            # the header alone says what the letter costs
            with contextlib.suppress(HeaderCut):
                if (header := declared_frames(path)) is not None:
                    src.declared, src.declared_by = -(-header[0] // block), header[2]
        yield bad
        return
    try:
        header = declared_frames(path)
    except HeaderCut as e:
        yield src.dead("truncated", f"{path}: {e}; its samples cannot be counted or read.",
                       error_class="TruncatedSource")
        return
    if header is not None:
        src.declared, src.declared_by = -(-header[0] // block), header[2]
        src.extra_attrs["declared_samples"] = str(header[0])
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        yield src.dead("corrupt_file", f"{path} cannot be opened as audio "
                       f"({short_error(e)}).", error_class="CorruptMedia")
        return
    with f:
        if header is None and f.seekable():
            src.declared, src.declared_by = -(-f.frames // block), "libsndfile's frame count"
            src.extra_attrs["declared_samples"] = str(f.frames)
        src.meta.update({"kind": "file", "sample_rate": f.samplerate, "channels": f.channels,
                         "codec": f"{f.format}/{f.subtype}".lower(), "frames": f.frames})
        blocker = _Blocker(src, f.samplerate, block, opts.start_ns or 0)
        failure = None
        while True:
            try:
                data = f.read(blocker.per_chunk, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                failure = e
                break
            if not len(data):
                break
            yield from blocker.add(to_mono(data))
    if failure is not None:
        # the failed read may have held good samples: read them again block by block
        for data in _salvage(path, blocker.at, block):
            yield from blocker.add(to_mono(data))
        at = blocker.at
        yield src.dead("corrupt_samples", f"{path}: samples from {at} on cannot be decoded "
                       f"({short_error(failure)}).", error_class="CorruptMedia",
                       position=f"sample={at}", ends=True)
    yield from blocker.finish()
    src.extra_attrs["decoded_samples"] = str(blocker.at)


def _salvage(path: str, start: int, block: int) -> Iterator[np.ndarray]:
    """Samples from ``start`` read ``block`` at a time until the first that fails."""
    try:
        with sf.SoundFile(path) as g:
            g.seek(start)
            while len(data := g.read(block, dtype="float32", always_2d=True)):
                yield data
    except (sf.LibsndfileError, RuntimeError, OSError):
        return


def decode_audio_track(path: str, *, session_id: str, stream_id: str,
                       block_samples: int | None = None,
                       options: DecodeOptions | dict | None = None,
                       roots: tuple[str, ...] = (), time_offset_ns: int = 0
                       ) -> Iterator[Chunk | DeadLetter]:
    """Decode the first audio stream of a (video) container with PyAV, native rate, mono."""
    yield from _decode_pyav(path, session_id, stream_id, block_samples, options, roots,
                            time_offset_ns)


def _decode_pyav(path: str, session_id: str, stream_id: str, block_samples: int | None,
                 options: DecodeOptions | dict | None, roots: tuple[str, ...] = (),
                 time_offset_ns: int = 0) -> Iterator[Chunk | DeadLetter]:
    opts = DecodeOptions.of(options)
    block = block_samples or opts.block_samples
    src = SourceFile(session_id, stream_id, "audio", str(path), roots=roots,
                     time_offset_ns=time_offset_ns, unit="blocks")
    yield from src.run(_pyav(src, block, opts))


def _pyav(src: SourceFile, block: int, opts: DecodeOptions) -> Iterator[Chunk | DeadLetter]:
    path = src.path
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    try:
        container = open_container(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        if isinstance(e, av.error.ArgumentError):
            yield src.dead("unsupported_container", f"{path} is not one of the container "
                           f"formats read ({', '.join(CONTAINER_FORMATS)}).",
                           error_class="CorruptMedia")
        else:
            yield src.dead("corrupt_file", f"{path} cannot be opened as a media container "
                           f"({short_error(e)}).", error_class="CorruptMedia")
        return
    with container:
        if not container.streams.audio:
            yield src.dead("no_audio_stream", f"{path} has no audio stream.",
                           error_class="CorruptMedia")
            return
        stream = container.streams.audio[0]
        cc = stream.codec_context
        if cc is None or not cc.sample_rate:
            yield src.dead("unknown_codec", f"{path}: its audio stream's codec has no decoder "
                           "or no sample rate.", error_class="CorruptMedia")
            return
        sr = cc.sample_rate
        tb = stream.time_base or Fraction(1, sr)
        src.meta.update({"kind": "track", "sample_rate": sr, "channels": cc.channels,
                         "codec": cc.name})
        blocker: _Blocker | None = None
        packets = container.demux(stream)
        while True:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                at = blocker.at if blocker else 0
                yield src.dead("corrupt_container", f"{path}: demuxing stopped at sample {at} "
                               f"({short_error(e)}); later audio is lost.",
                               error_class="CorruptMedia", position=f"sample={at}", ends=True)
                break
            try:
                frames = pkt.decode()
            except av.error.FFmpegError as e:
                at = blocker.at if blocker else 0
                yield src.dead("corrupt_packet", f"{path}: an audio packet (pts {pkt.pts}) at "
                               f"sample {at} failed to decode ({short_error(e)}).",
                               error_class="CorruptFrame", position=f"sample={at}",
                               attrs={"pts": str(pkt.pts)})
                continue
            for fr in frames:
                if blocker is None:
                    if opts.start_ns is not None:
                        start = opts.start_ns
                    else:
                        start = round(Fraction(fr.pts or 0) * tb * 1_000_000_000)
                    src.meta["start_ns"] = start
                    blocker = _Blocker(src, sr, block, start)
                yield from blocker.add(frame_to_mono(fr))
        if blocker is not None:
            yield from blocker.finish()


# ---------------------------------------------------------------- segment spans

def _ns_of_samples(n: int, rate: int) -> int:
    return round(Fraction(n * 1_000_000_000, rate))


def span_audio_file(path: str, options: DecodeOptions | dict | None = None
                    ) -> tuple[int, int] | None:
    """(first_ns, end_ns) from the header alone: start_ns (options, default 0) and start + the
    declared frames / rate (end = where the sample after the last would be). Files PyAV reads
    use ``span_audio_track``. None if unreadable."""
    if Path(path).suffix.lower() not in SOUNDFILE_EXTS:
        return span_audio_track(path, options)
    opts = DecodeOptions.of(options)
    start = opts.start_ns or 0
    header = _file_header(path)
    if header is None:
        return None
    frames, rate = header
    return start, start + _ns_of_samples(frames, rate)


def _file_header(path: str) -> tuple[int, int] | None:
    """(frames, rate) a soundfile-read file states: its own header (WAV, FLAC), else
    libsndfile's reading of it; None if unreadable or cut inside its header."""
    try:
        header = declared_frames(path)
    except HeaderCut:
        return None
    if header is not None:
        return header[0], header[1]
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None
    return info.frames, info.samplerate


def span_audio_track(path: str, options: DecodeOptions | dict | None = None
                     ) -> tuple[int, int] | None:
    """(first_ns, end_ns) of a container's first audio stream from its start time and
    duration (first pts, or options.start_ns), else its demuxed packets. None if unreadable."""
    opts = DecodeOptions.of(options)
    try:
        with open_container(path) as c:
            st = c.streams.audio[0]
            tb = st.time_base or Fraction(1, st.codec_context.sample_rate)
            if st.start_time is not None and st.duration:
                first, end = st.start_time, st.start_time + st.duration
            else:
                first = end = None
                for pkt in c.demux(st):
                    if pkt.pts is None or pkt.size == 0:
                        continue
                    first = pkt.pts if first is None else min(first, pkt.pts)
                    e = pkt.pts + (pkt.duration or 0)
                    end = e if end is None else max(end, e)
                if first is None:
                    return None
    except (av.error.FFmpegError, OSError, IndexError, UnicodeDecodeError):
        return None
    t0 = round(Fraction(first) * tb * 1_000_000_000)
    t1 = round(Fraction(end) * tb * 1_000_000_000)
    if opts.start_ns is not None:
        return opts.start_ns, opts.start_ns + (t1 - t0)
    return t0, t1


def load_audio(uri: str, start_sample: int, end_sample: int, kind: str = "file"
               ) -> np.ndarray:
    """Mono float32 samples [start_sample, end_sample) exactly as the decoder produced them
    (same ``pos`` numbering); fewer at the end of the file. ``kind``: "file" | "track"."""
    if start_sample < 0 or end_sample < start_sample:
        raise ValueError(f"load_audio({uri!r}): need 0 <= start_sample <= end_sample, got "
                         f"{start_sample}..{end_sample}")
    if kind not in ("file", "track"):
        raise ValueError(f"load_audio kind must be 'file' or 'track', not {kind!r}")
    if kind == "file" and Path(uri).suffix.lower() in SOUNDFILE_EXTS:
        data, _ = sf.read(uri, start=start_sample, stop=end_sample, dtype="float32",
                          always_2d=True)
        return to_mono(data)
    parts, seen = [], 0
    with open_container(uri) as c:
        for fr in _frames_skipping_bad_packets(c, c.streams.audio[0]):
            n = fr.samples
            if seen + n > start_sample:
                mono = frame_to_mono(fr)
                parts.append(mono[max(0, start_sample - seen): end_sample - seen])
            seen += n
            if seen >= end_sample:
                break
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _frames_skipping_bad_packets(container, stream) -> Iterator[av.AudioFrame]:
    """Decoded frames in order, skipping packets that fail, as the decoder does."""
    packets = container.demux(stream)
    while True:
        try:
            pkt = next(packets)
        except (StopIteration, av.error.FFmpegError):
            return
        try:
            yield from pkt.decode()
        except av.error.FFmpegError:
            continue


# ---------------------------------------------------------------- block length, ahead of decoding

def audio_rate(path: str) -> int | None:
    """The sample rate a file's first audio stream declares (WAV/FLAC header, libsndfile, or
    the container's codec), read without decoding; None when the file cannot say."""
    try:
        if Path(path).suffix.lower() in SOUNDFILE_EXTS:
            header = _file_header(path)
            return int(header[1]) if header is not None else None
        with open_container(path) as c:
            return int(c.streams.audio[0].codec_context.sample_rate) or None
    except Exception:  # noqa: BLE001 -- any unreadable file: the caller assumes the worst case
        return None
