"""Multi-file streams as consecutive segments.

A stream may list several files that each restart their times: a camera that splits a
recording into 4 GB MP4s starting at pts 0, a recorder that writes one WAV per hour, a logger
that rotates its CSV. Decoded as they are, the second file's samples would get the first's
times. ``segment_offsets`` computes, per file, the ``time_offset_ns`` the decoder adds to every
time of that file (``DecodeRequest.time_offset_ns``), from a cheap probe of each file
(``segment_span``: its first time and where the next segment would start, no decoding of
media).

The rule, file by file in the stream's order (deterministic, nothing but the files and the
declared starts decides):

1. a file with a declared start (``starts[k]``: device ns of its first sample) is shifted so
   its first time is exactly that start;
2. otherwise file 0 keeps its own times (offset 0);
3. otherwise a file whose first time is before the previous file's end (it restarted) is
   shifted to begin exactly at the previous file's end: no gap, no overlap at the seam;
4. otherwise (it already starts at or after the previous end) it keeps its times.

The previous file's end is its probed end plus its offset. A file that cannot be probed (it
is missing or unreadable; its decode will be a dead letter) keeps offset 0 (or its declared
start) and does not move the end: the next file continues from the last good one.

End of a segment (``segment_span``): video = last frame + one frame duration (container
start + duration, or the last packet's pts + duration), audio = last sample + 1/rate
(declared frames / rate), image index and sensor files = last time + the median period, text
= the last cue's end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mmalign.schemas.decode_options import DecodeOptions, decoder_key
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode import audio, gpmf, mcap, rosbag, sensor, text, video

Span = tuple[int, int]

PROBES: dict[tuple[str, str], Callable[[str, DecodeOptions], Span | None]] = {
    ("video", "container"): video.span_video_container,
    ("video", "image_sequence"): video.span_image_sequence,
    ("audio", "audio_file"): audio.span_audio_file,
    ("audio", "audio_track"): audio.span_audio_track,
    ("text", "srt"): lambda p, o: text.span_subtitles(p, "srt", o),
    ("text", "vtt"): lambda p, o: text.span_subtitles(p, "vtt", o),
    ("text", "jsonl"): text.span_text_jsonl,
    ("sensor", "csv"): lambda p, o: sensor.span_sensor(p, "csv", o),
    ("sensor", "parquet"): lambda p, o: sensor.span_sensor(p, "parquet", o),
    ("sensor", "jsonl"): lambda p, o: sensor.span_sensor(p, "jsonl", o),
    ("sensor", "gpmf"): gpmf.span_gpmf,
    ("sensor", "mcap"): lambda p, o: mcap.span_mcap(p, "sensor", o),
    ("video", "mcap"): lambda p, o: mcap.span_mcap(p, "video", o),
    ("sensor", "rosbag"): lambda p, o: rosbag.span_rosbag(p, "sensor", o),
    ("video", "rosbag"): lambda p, o: rosbag.span_rosbag(p, "video", o),
}


def segment_span(stream: Stream, path: Path | str) -> Span | None:
    """(first_ns, end_ns) of one file of ``stream`` on its own times (no offset): its first
    sample's time and where a following segment would start. None if the file has no decoder,
    bad options, or cannot be probed. Never raises."""
    key = decoder_key(stream.modality, stream.format, str(path))
    if key is None:
        return None
    try:
        opts = DecodeOptions.of(stream.options)
        return PROBES[(stream.modality, key)](str(path), opts)
    except Exception:  # noqa: BLE001 -- a probe failure only means "unknown"
        return None


def segment_offsets(stream: Stream, paths: Sequence[Path | str],
                    starts: Sequence[int | None] | None = None) -> list[int]:
    """The ``time_offset_ns`` of each of ``paths`` (the files of ``stream``, in order) that
    makes them consecutive segments; ``starts[k]`` is file k's declared start (device ns of
    its first sample) or None; ``starts=None`` takes the stream's own (``Stream.starts``,
    the manifest's ``{path, start_ns|start_s}`` items). See the module docstring for the
    rule."""
    if starts is None:
        own = list(getattr(stream, "starts", []) or [])
        starts = own if len(own) == len(paths) else [None] * len(paths)
    starts = list(starts)
    if len(starts) != len(paths):
        raise ValueError(f"segment_offsets: {len(paths)} files but {len(starts)} starts")
    return offsets_from_spans([segment_span(stream, p) for p in paths], starts)


def offsets_from_spans(spans: Sequence[Span | None], starts: Sequence[int | None]
                       ) -> list[int]:
    """``segment_offsets`` on already probed spans (one per file, None = unknown)."""
    offsets: list[int] = []
    prev_end: int | None = None
    for k, (span, start) in enumerate(zip(spans, starts, strict=True)):
        if start is not None:
            off = int(start) - (span[0] if span is not None else 0)
        elif k == 0 or span is None or prev_end is None or span[0] >= prev_end:
            off = 0
        else:
            off = prev_end - span[0]
        offsets.append(off)
        if span is not None:
            prev_end = span[1] + off
    return offsets
