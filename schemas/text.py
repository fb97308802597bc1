"""Text contract: one row per timed segment (subtitle cue, JSONL segment or word)."""

import pandera.pandas as pa_pd
import pyarrow as pa

SCHEMA_VERSION = "text/1.0"

ARROW_SCHEMA = pa.schema([
    ("t_ns", pa.int64()),        # segment start, ns
    ("t_end_ns", pa.int64()),    # segment end, ns
    ("pos", pa.int64()),         # cue/line index in the source, from 0
    ("text", pa.string()),       # decoded text; invalid bytes are a decode dead letter
    ("kind", pa.string()),       # "segment" | "word"
])

MAX_TEXT_CHARS = 10_000


def ends_after_start(df):
    """The frame check "ends_after_start": a segment's end is not before its start."""
    return df["t_end_ns"] >= df["t_ns"]


# pandera contract on the scalar columns (a DataFrameSchema: see schemas/video.py)
TextSegments = pa_pd.DataFrameSchema({
    "t_ns": pa_pd.Column("int64"),
    "t_end_ns": pa_pd.Column("int64"),
    "pos": pa_pd.Column("int64", pa_pd.Check.ge(0)),
    "text": pa_pd.Column(str, pa_pd.Check.str_length(1, MAX_TEXT_CHARS)),
    "kind": pa_pd.Column(str, pa_pd.Check.isin(["segment", "word"])),
}, checks=[pa_pd.Check(ends_after_start, element_wise=False, name="ends_after_start")],
    strict=False, name="TextSegments")
