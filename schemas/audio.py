"""Audio contract: one row per block of consecutive PCM samples (mono mix, float32 in [-1, 1])."""

import numpy as np
import pandera.pandas as pa_pd
import pyarrow as pa
from pandera.typing import Series

SCHEMA_VERSION = "audio/1.0"

ARROW_SCHEMA = pa.schema([
    ("t_ns", pa.int64()),              # time of the block's first sample, ns
    ("pos", pa.int64()),               # index of the block's first sample in the source
    ("n_samples", pa.int32()),
    ("pcm", pa.list_(pa.float32())),   # the samples (mono mix); dropped before the align shuffle
])

MIN_RATE, MAX_RATE = 1000, 384000   # meta["sample_rate"] must be in this range
MAX_ABS_SAMPLE = 1.0   # |sample| above this is out of range (options.max_abs overrides)


class AudioBlocks(pa_pd.DataFrameModel):
    t_ns: int = pa_pd.Field()
    pos: int = pa_pd.Field(ge=0)
    n_samples: Series[np.int32] = pa_pd.Field(gt=0)

    class Config:
        strict = False
