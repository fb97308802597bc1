"""Decoder options: the ``options:`` mapping of a manifest stream, validated.

Every key a stage reads from ``Stream.options`` is a field here; see the README's decoder table.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


