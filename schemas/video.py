"""Video contract: one row per decoded frame."""

import pandera.pandas as pa_pd
import pyarrow as pa

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


# pandera contract on the scalar columns (a DataFrameSchema, not a DataFrameModel: a model's
# to_schema() imports every typing back end pandera knows, dask among them: ~0.8 s a process)
VideoFrames = pa_pd.DataFrameSchema({
    "t_ns": pa_pd.Column("int64"),
    "pos": pa_pd.Column("int64", pa_pd.Check.ge(0)),
    "width": pa_pd.Column("int32", [pa_pd.Check.ge(MIN_SIDE), pa_pd.Check.le(MAX_SIDE)]),
    "height": pa_pd.Column("int32", [pa_pd.Check.ge(MIN_SIDE), pa_pd.Check.le(MAX_SIDE)]),
}, strict=False, coerce=False, name="VideoFrames")
