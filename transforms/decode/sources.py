"""Reopening sources by reference: the frames, audio samples and sensor rows an aligned row
points at (``<stream>__src`` + ``__pos`` / ``__sample_start..__sample_end``), for the stages
after alignment (registration, encoders).

``SourceRef`` reads a stream's files with the decoder, options and allowed roots the decode
stage used, and returns **only data the validate stage accepted**: sensor rows are decoded and
validated again (a NaN, out-of-range, duplicate or out-of-order row never enters an encoder's
window), audio blocks that validation rejects (non-finite, beyond full scale) come back as
silence, and frames are loaded at positions of rows that were aligned (so valid).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas import audio as audio_schema
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.decode_options import DecodeOptions, decoder_key
from mmalign.schemas.manifest import Manifest, Stream
from mmalign.transforms.decode.audio import load_audio
from mmalign.transforms.decode.stage import DecodeRequest, decode_file, manifest_requests
from mmalign.transforms.decode.video import iter_frames, load_frames
from mmalign.transforms.validate.stage import validate_chunk
from mmalign.transforms.validate.timestamps import TimestampRule


def valid_chunks(manifest: Manifest, only: set[str] | None = None
                 ) -> Iterator[tuple[DecodeRequest, Chunk]]:
    """Every chunk of a manifest's files (of the streams in ``only`` when given) that the
    validate stage keeps, with its request: decoded inside the manifest's roots as the decode
    stage does, validated with the stream's options; dead letters and rejected rows dropped
    (for the tools that rebuild a stage's input without Beam: sync evidence, the sync tests)."""
    for req in manifest_requests(manifest):
        s = req.stream
        if only is not None and s.id not in only:
            continue
        for out in decode_file(s, req.path, session_id=manifest.session, roots=req.roots,
                               time_offset_ns=req.time_offset_ns):
            if isinstance(out, DeadLetter):
                continue
            good, _ = validate_chunk(out, s.options)
            if good is not None:
                yield req, good


@dataclass
class SensorRows:
    """A sensor file's valid rows: pos, device time (sorted by time) and channel values."""
    pos: np.ndarray
    t_ns: np.ndarray
    values: np.ndarray

    def window(self, pos_left: int, pos_right: int, half_ns: int) -> np.ndarray:
        """The rows within ``half_ns`` of the middle of rows ``pos_left`` and ``pos_right``."""
        by_pos = np.argsort(self.pos, kind="stable")
        sorted_pos = self.pos[by_pos]
        idx = []
        for p in (pos_left, pos_right):
            j = int(np.searchsorted(sorted_pos, p))
            if j >= len(sorted_pos) or sorted_pos[j] != p:
                raise ValueError(f"row {p} is not among the valid rows")
            idx.append(by_pos[j])
        centre = (int(self.t_ns[idx[0]]) + int(self.t_ns[idx[1]])) // 2
        a = np.searchsorted(self.t_ns, centre - half_ns, side="left")
        b = np.searchsorted(self.t_ns, centre + half_ns, side="right")
        return self.values[a:b]


@dataclass(frozen=True)
class SourceRef:
    """How to reopen one stream's source files (see the module docstring)."""
    session_id: str
    stream: Stream
    roots: tuple[str, ...] = ()
    rule: TimestampRule = field(default_factory=TimestampRule)

    @classmethod
    def of(cls, manifest: Manifest, stream_id: str) -> SourceRef:
        return cls(manifest.session, manifest.stream(stream_id),
                   tuple(str(r) for r in manifest.roots()),
                   TimestampRule(*manifest.validation.bounds_ns()))

    @property
    def options(self) -> DecodeOptions:
        return DecodeOptions.of(self.stream.options)

    def video_kind(self, uri: str) -> str:
        """"container" | "image_sequence": the decoder the decode stage used for ``uri``."""
        return decoder_key("video", self.stream.format, uri) or "container"

    def audio_kind(self, uri: str) -> str:
        """"file" | "track" (``load_audio``'s kinds)."""
        return "track" if decoder_key("audio", self.stream.format, uri) == "audio_track" \
            else "file"

    # ------------------------------------------------------------ frames

    def frames(self, uri: str, positions: Sequence[int],
               size: tuple[int, int] | None = None) -> np.ndarray:
        return load_frames(uri, positions, kind=self.video_kind(uri), size=size,
                           image_dir=self.options.image_dir)

    def iter_frames(self, uri: str, positions: Sequence[int],
                    size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        return iter_frames(uri, positions, kind=self.video_kind(uri), size=size,
                           image_dir=self.options.image_dir)

    # ------------------------------------------------------------ audio

    def audio(self, uri: str, start: int, end: int) -> np.ndarray:
        """Samples [start, end) as decoded, with every block the validator rejects (on the
        decoder's block grid: non-finite or beyond ``options.max_abs``) set to silence."""
        block = self.options.block_samples
        lo, hi = start // block * block, -(-end // block) * block
        pcm = load_audio(uri, lo, hi, self.audio_kind(uri))
        limit = float(self.options.max_abs or audio_schema.MAX_ABS_SAMPLE)
        for b in range(0, len(pcm), block):
            blk = pcm[b:b + block]
            if not np.isfinite(blk).all() or (np.abs(blk) > limit).any():
                pcm[b:b + block] = 0.0
        return pcm[start - lo:end - lo]

    # ------------------------------------------------------------ sensor rows

    def sensor_rows(self, uri: str, channels: Sequence[str] = ()) -> SensorRows:
        """The file's rows that pass validation (decoded with the stream's decoder, options
        and roots, checked by ``validate_chunk`` with the session's timestamp rule)."""
        pos, t, vals = [], [], []
        for item in decode_file(self.stream, Path(uri), session_id=self.session_id,
                                roots=self.roots):
            if not isinstance(item, Chunk):
                continue
            good, _ = validate_chunk(item, self.stream.options, rule=self.rule)
            if good is None:
                continue
            data = good.data
            names = list(channels) or [c for c in data.schema.names
                                       if c not in ("t_ns", "pos", "src", "t_dev_ns")]
            pos.append(data.column("pos").to_numpy(zero_copy_only=False))
            t.append(data.column("t_ns").to_numpy(zero_copy_only=False))
            vals.append(np.column_stack([data.column(c).to_numpy(zero_copy_only=False)
                                         .astype(np.float64) for c in names]))
        if not pos:
            raise ValueError(f"{uri}: no valid sensor rows")
        p, tt, v = np.concatenate(pos), np.concatenate(t).astype(np.int64), np.concatenate(vals)
        order = np.argsort(tt, kind="stable")
        return SensorRows(p[order], tt[order], v[order])
