"""Audio contract: one row per block of consecutive PCM samples (mono mix, float32 in [-1, 1])."""

import pandera.pandas as pa_pd
import pyarrow as pa

SCHEMA_VERSION = "audio/1.0"

ARROW_SCHEMA = pa.schema([
    ("t_ns", pa.int64()),              # time of the block's first sample, ns
    ("pos", pa.int64()),               # index of the block's first sample in the source
    ("n_samples", pa.int32()),
    ("pcm", pa.list_(pa.float32())),   # the samples (mono mix); dropped before the align shuffle
])

MIN_RATE, MAX_RATE = 1000, 384000   # meta["sample_rate"] must be in this range
MAX_ABS_SAMPLE = 1.0   # |sample| above this is out of range (options.max_abs overrides)


# pandera contract on the scalar columns (a DataFrameSchema: see schemas/video.py)
AudioBlocks = pa_pd.DataFrameSchema({
    "t_ns": pa_pd.Column("int64"),
    "pos": pa_pd.Column("int64", pa_pd.Check.ge(0)),
    "n_samples": pa_pd.Column("int32", pa_pd.Check.gt(0)),
}, strict=False, name="AudioBlocks")
