"""Sensor contract: one row per sample; t_ns, pos, then one float64 column per channel."""

import numpy as np
import pandas as pd
import pandera.pandas as pa_pd
import pyarrow as pa

SCHEMA_VERSION = "sensor/1.0"

BASE_FIELDS = [("t_ns", pa.int64()), ("pos", pa.int64())]
MAX_ABS_VALUE = 1e9   # default physical range check; per-stream override in options.max_abs


def arrow_schema(channels: list[str]) -> pa.Schema:
    return pa.schema(BASE_FIELDS + [(c, pa.float64()) for c in channels])


def finite(s: pd.Series) -> pd.Series:
    """The channel check "finite": NaN (missing) and +-inf fail."""
    return pd.Series(np.isfinite(s.to_numpy(dtype=np.float64, na_value=np.nan)),
                     index=s.index)


def pandera_schema(channels: list[str], max_abs: float = MAX_ABS_VALUE):
    """The sensor contract: int64 times, every channel finite and within +-max_abs."""
    cols = {
        "t_ns": pa_pd.Column("int64", nullable=False),
        "pos": pa_pd.Column("int64", pa_pd.Check.ge(0), nullable=False),
    }
    for c in channels:
        cols[c] = pa_pd.Column(
            "float64", nullable=True,   # NaN is caught by "finite", with that reason
            checks=[pa_pd.Check(finite, element_wise=False, ignore_na=False, name="finite"),
                    pa_pd.Check.in_range(-max_abs, max_abs, name="in_range")])
    return pa_pd.DataFrameSchema(cols, strict=False, name="SensorSamples")
