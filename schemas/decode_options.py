"""A stream's ``options:`` mapping and its format, validated: the decoder table (which formats
each modality reads) and every option any stage reads from ``Stream.options``. Unknown keys
are errors, so a typo never passes silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TimeUnit = Literal["ns", "us", "ms", "s"]
UNIT_NS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class DecodeOptions(BaseModel):
    """A stream's options (``Stream.options``): decoder settings, plus ``channels`` (align,
    encoders) and ``max_abs`` (validate). Strict: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_bytes: int = Field(2 * 1024**3, gt=0, description="larger files are dead letters")
    time_unit: TimeUnit | None = Field(None, description="unit of timestamps in index/sensor")
    start_ns: int | None = Field(None, description="audio: time of sample 0 (default 0/pts); "
                                 "load_manifest bounds it by MAX_ABS_TIME_NS")
    time_column: str | None = None
    channels: list[str] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1, description="sensor CSV")
    image_dir: str | None = Field(None, description="image folder, relative to the index")
    chunk_frames: int = Field(64, ge=1)
    block_samples: int = Field(1024, ge=1)
    chunk_rows: int = Field(4096, ge=1)
    inline_images: bool = False
    jpeg_quality: int = Field(90, ge=1, le=100)
    max_abs: float | None = Field(None, gt=0, description="sensor: largest plausible |value|")
    gpmf_stream: str | None = Field(None, pattern=r"^[A-Z0-9][A-Z0-9 ]{3}$",
                                    description="gpmf: the GPMF stream's FourCC (GYRO, ACCL, "
                                    "GPS5, GPS9, MAGN, GRAV, CORI, ...; default GYRO)")
    topic: str | None = Field(None, min_length=1, max_length=1024,
                              description="mcap / rosbag: the topic to read (required)")

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




VIDEO_CONTAINERS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mpg", ".mpeg"}
AUDIO_FILES = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".m4a", ".opus", ".aac"}

# modality -> {format name or file extension: decoder key}
FORMATS: dict[str, dict[str, str]] = {
    "video": {"container": "container", "image_sequence": "image_sequence",
              **{e[1:]: "container" for e in VIDEO_CONTAINERS},
              "txt": "image_sequence", "csv": "image_sequence"},
    "audio": {"audio_file": "audio_file", "audio_track": "audio_track",
              **{e[1:]: "audio_file" for e in AUDIO_FILES},
              **{e[1:]: "audio_track" for e in VIDEO_CONTAINERS}},
    "text": {"srt": "srt", "vtt": "vtt", "webvtt": "vtt", "jsonl": "jsonl"},
    "sensor": {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl",
               "gpmf": "gpmf", "mp4": "gpmf"},
}
# robotics recordings: one topic per stream, sensor rows or (video) image frames
BAG_FORMATS = {"mcap": "mcap", "rosbag": "rosbag", "bag": "rosbag", "rosbag2": "rosbag",
               "db3": "rosbag"}
FORMATS["sensor"] |= BAG_FORMATS
FORMATS["video"] |= BAG_FORMATS


def format_name(fmt: str | None, path: str) -> str:
    """The format a file is read as: the stream's ``format``, else the file's extension."""
    return (fmt or Path(path).suffix.lstrip(".")).lower()


def decoder_key(modality: str, fmt: str | None, path: str) -> str | None:
    """Which decoder reads ``path`` of a ``modality`` stream (None: no decoder for it)."""
    return FORMATS[modality].get(format_name(fmt, path))
