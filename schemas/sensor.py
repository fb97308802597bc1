"""Sensor contract: one row per sample; t_ns, pos, then one float64 column per channel."""

import pyarrow as pa

SCHEMA_VERSION = "sensor/1.0"

BASE_FIELDS = [("t_ns", pa.int64()), ("pos", pa.int64())]
MAX_ABS_VALUE = 1e9   # default physical range check; per-stream override in options.max_abs


def arrow_schema(channels: list[str]) -> pa.Schema:
    return pa.schema(BASE_FIELDS + [(c, pa.float64()) for c in channels])
