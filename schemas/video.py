"""Video contract: one row per decoded frame."""

import numpy as np
import pandera.pandas as pa_pd
import pyarrow as pa
from pandera.typing import Series

SCHEMA_VERSION = "video/1.0"

ARROW_SCHEMA = pa.schema([
    ("t_ns", pa.int64()),          # frame presentation time, ns (device clock until clocked)
    ("pos", pa.int64()),           # frame index in the source (container order / sequence line)
    ("pts", pa.int64()),           # container pts in stream time_base units (null for images)
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("keyframe", pa.bool_()),
    ("file", pa.string()),         # image file for image sequences, null for containers
    ("image", pa.binary()),        # encoded frame (JPEG/PNG) when carried inline, else null
])

MIN_SIDE, MAX_SIDE = 8, 16384


class VideoFrames(pa_pd.DataFrameModel):
    t_ns: int = pa_pd.Field()
    pos: int = pa_pd.Field(ge=0)
    width: Series[np.int32] = pa_pd.Field(ge=MIN_SIDE, le=MAX_SIDE)
    height: Series[np.int32] = pa_pd.Field(ge=MIN_SIDE, le=MAX_SIDE)

    class Config:
        strict = False
        coerce = False
