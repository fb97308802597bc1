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


class TextSegments(pa_pd.DataFrameModel):
    t_ns: int = pa_pd.Field()
    t_end_ns: int = pa_pd.Field()
    pos: int = pa_pd.Field(ge=0)
    text: str = pa_pd.Field(str_length={"min_value": 1, "max_value": MAX_TEXT_CHARS})
    kind: str = pa_pd.Field(isin=["segment", "word"])

    @pa_pd.dataframe_check(element_wise=False)
    def ends_after_start(cls, df):
        return df["t_end_ns"] >= df["t_ns"]

    class Config:
        strict = False
