"""Audio decoders: wav/flac/ogg/aiff via soundfile (blockwise), other files and the audio track
of video containers via PyAV (native rate, no resampling). Output rows follow
schemas/audio.py: blocks of ``block_samples`` mono float32 samples, ~1 s of blocks per chunk.

t_ns of a block = start_ns + round(first_sample * 1e9 / sample_rate), computed exactly in
integers; start_ns = options.start_ns, else 0 for files read by soundfile and the stream's first
pts for PyAV containers.
"""

from __future__ import annotations

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
from mmalign.transforms.decode.base import SourceFile, short_error

SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}


def sample_ns(first_sample: np.ndarray, sample_rate: int) -> np.ndarray:
    """round(first_sample * 1e9 / sample_rate) in int64 without overflow (half rounds up)."""
    q, r = np.divmod(np.asarray(first_sample, np.int64), np.int64(sample_rate))
    return q * 1_000_000_000 + (r * 2_000_000_000 + sample_rate) // (2 * sample_rate)


def blocks_batch(pcm: np.ndarray, first_sample: int, block: int, sample_rate: int,
                 start_ns: int) -> pa.RecordBatch:
    """Consecutive mono samples starting at ``first_sample`` -> one row per block."""
    n = len(pcm)
    starts = np.arange(0, n, block, dtype=np.int64)
    lens = np.minimum(block, n - starts).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return pa.RecordBatch.from_arrays([
        pa.array(start_ns + sample_ns(first_sample + starts, sample_rate), pa.int64()),
        pa.array(first_sample + starts, pa.int64()),
        pa.array(lens, pa.int32()),
        pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                 pa.array(pcm.astype(np.float32, copy=False), pa.float32())),
    ], schema=ARROW_SCHEMA)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n, channels] float samples -> float32 mono mix clipped to [-1, 1]."""
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


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
    """Collects mono samples and cuts them into chunks of whole blocks (~1 s each)."""

    def __init__(self, src: SourceFile, sample_rate: int, block: int, start_ns: int):
        self.src, self.sr, self.block, self.start_ns = src, sample_rate, block, start_ns
        self.per_chunk = max(1, round(sample_rate / block)) * block
        self.parts: list[np.ndarray] = []
        self.buffered = 0
        self.next_sample = 0            # index of the first buffered sample

    def add(self, mono: np.ndarray) -> Iterator[Chunk]:
        if len(mono):
            self.parts.append(mono)
            self.buffered += len(mono)
        while self.buffered >= self.per_chunk:
            yield self._emit(self.per_chunk)

    def finish(self) -> Iterator[Chunk]:
        if self.buffered:
            yield self._emit(self.buffered)

    def _emit(self, n: int) -> Chunk:
        buf = np.concatenate(self.parts)
        head, tail = buf[:n], buf[n:]
        self.parts = [tail] if len(tail) else []
        self.buffered = len(tail)
        batch = blocks_batch(head, self.next_sample, self.block, self.sr, self.start_ns)
        self.next_sample += n
        return self.src.chunk(batch)


def decode_audio_file(path: str, *, session_id: str, stream_id: str,
                      block_samples: int | None = None,
                      options: DecodeOptions | dict | None = None
                      ) -> Iterator[Chunk | DeadLetter]:
    """Decode an audio file: wav/flac/ogg/aiff blockwise with soundfile, others with PyAV."""
    if Path(path).suffix.lower() not in SOUNDFILE_EXTS:
        yield from _decode_pyav(path, session_id, stream_id, block_samples, options)
        return
    opts = DecodeOptions.of(options)
    block = block_samples or opts.block_samples
    src = SourceFile(session_id, stream_id, "audio", str(path))
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        yield src.dead("corrupt_file", f"{path} cannot be opened as audio "
                       f"({short_error(e)}).", error_class="CorruptMedia")
        return
    with f:
        src.meta = {"kind": "file", "sample_rate": f.samplerate, "channels": f.channels,
                    "codec": f"{f.format}/{f.subtype}".lower(), "frames": f.frames}
        blocker = _Blocker(src, f.samplerate, block, opts.start_ns or 0)
        while True:
            try:
                data = f.read(blocker.per_chunk, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                yield src.dead("corrupt_samples", f"{path}: samples from "
                               f"{blocker.next_sample + blocker.buffered} on cannot be decoded "
                               f"({short_error(e)}).", error_class="CorruptMedia",
                               position=f"sample={blocker.next_sample + blocker.buffered}")
                break
            if not len(data):
                break
            yield from blocker.add(to_mono(data))
        yield from blocker.finish()
        got = blocker.next_sample
        if 0 <= got < f.frames and f.seekable():
            yield src.dead("truncated_audio", f"{path}: the header promises {f.frames} "
                           f"samples but only {got} could be read.", error_class="CorruptMedia",
                           position=f"sample={got}", attrs={"missing": str(f.frames - got)})


def decode_audio_track(path: str, *, session_id: str, stream_id: str,
                       block_samples: int | None = None,
                       options: DecodeOptions | dict | None = None
                       ) -> Iterator[Chunk | DeadLetter]:
    """Decode the first audio stream of a (video) container with PyAV, native rate, mono."""
    yield from _decode_pyav(path, session_id, stream_id, block_samples, options)


def _decode_pyav(path: str, session_id: str, stream_id: str, block_samples: int | None,
                 options: DecodeOptions | dict | None) -> Iterator[Chunk | DeadLetter]:
    opts = DecodeOptions.of(options)
    block = block_samples or opts.block_samples
    src = SourceFile(session_id, stream_id, "audio", str(path))
    if (bad := src.check_file(opts.max_bytes)) is not None:
        yield bad
        return
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
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
        sr = cc.sample_rate
        tb = stream.time_base or Fraction(1, sr)
        src.meta = {"kind": "track", "sample_rate": sr, "channels": cc.channels,
                    "codec": cc.name}
        blocker: _Blocker | None = None
        packets = container.demux(stream)
        while True:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                at = blocker.next_sample + blocker.buffered if blocker else 0
                yield src.dead("corrupt_container", f"{path}: demuxing stopped at sample {at} "
                               f"({short_error(e)}); later audio is lost.",
                               error_class="CorruptMedia", position=f"sample={at}")
                break
            try:
                frames = pkt.decode()
            except av.error.FFmpegError as e:
                at = blocker.next_sample + blocker.buffered if blocker else 0
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
    with av.open(uri) as c:
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
