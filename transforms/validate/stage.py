"""The validate stage: every chunk checked against its modality's contract, row by row.

``validate_chunk`` is the plain function: it returns the chunk with only its good rows and one
DeadLetter per bad row (stage "validate", a reason slug, a copy of the row). Checks:

- every modality: timestamps present, strictly increasing within the file (a row equal to the
  running maximum is a ``duplicate_timestamp``, one below it is ``out_of_order``; the running
  maximum spans chunk edges through ``Chunk.prev_t_ns``);
- the modality's pandera contract (schemas/video.py, audio.py, text.py, sensor.py): types,
  ranges (frame size, block size, finite sensor values within range), text length, cue order;
- stream-level metadata: audio sample rate in range, constant frame size within a video stream,
  text free of replacement/control characters (encoding damage that got past the decoder).

``Validate`` is the Beam shell: good chunks on the main output, dead letters on "dead",
counters ``validate.<modality>.valid`` / ``validate.<modality>.dead``.
"""

from __future__ import annotations

import contextlib
import functools
import json

import apache_beam as beam
import numpy as np
import pandas as pd
import pandera.pandas as pa_pd
import pyarrow as pa
import pyarrow.compute as pc

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas import audio as audio_schema
from mmalign.schemas import metrics
from mmalign.schemas import sensor as sensor_schema
from mmalign.schemas import text as text_schema
from mmalign.schemas import video as video_schema
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.envelope import EXTENTS_META_KEY
from mmalign.schemas.metrics import VALIDATE
from mmalign.transforms.tags import DEAD, MAIN
from mmalign.transforms.validate.fast_contract import FastContract
from mmalign.transforms.validate.timestamps import (
    TimestampRule,
    chunk_centre,
    implausible,
    weighted_median,
)

# Columns never handed to pandera (large binary/list payloads are checked with numpy).
_PAYLOAD_COLUMNS = {"pcm", "image"}

# pandera check name -> dead-letter reason
_REASONS = {
    "not_nullable": "missing_value",
    "finite": "non_finite",
    "in_range": "out_of_range",
    "greater_than_or_equal_to": "out_of_range",
    "less_than_or_equal_to": "out_of_range",
    "greater_than": "out_of_range",
    "str_length": "bad_text_length",
    "isin": "bad_enum",
    "ends_after_start": "end_before_start",
    "dtype": "wrong_type",
}

# Chunk.meta key whose dict (e.g. the Kafka topic/partition/offset a chunk came from) is
# copied into the attrs of every dead letter the chunk yields.
ORIGIN_META_KEY = "origin"

_CONTROL = "".join(chr(c) for c in range(32) if chr(c) not in "\n\t") + "\x7f"


@functools.lru_cache(maxsize=64)
def _contract_for(modality: str, channels: tuple[str, ...] = (), max_abs: float = 0.0
                  ) -> tuple[pa_pd.DataFrameSchema, FastContract | None]:
    """(pandera schema, its vectorised pre-check), built once per process: pandera's schema
    construction is far costlier than a check."""
    if modality == "video":
        schema = video_schema.VideoFrames
    elif modality == "audio":
        schema = audio_schema.AudioBlocks
    elif modality == "text":
        schema = text_schema.TextSegments
    else:
        schema = sensor_schema.pandera_schema(list(channels), max_abs)
    return schema, FastContract.of(schema)


def warm() -> None:
    """Build the contracts and load pandera's pandas back end now (~0.2 s on first use), in a
    process that forks workers afterwards, so each worker does not pay it again."""
    for modality in ("video", "audio", "text"):
        schema, _ = _contract_for(modality)
        with contextlib.suppress(Exception):   # an empty frame fails its checks: not the point
            schema.validate(pd.DataFrame())


def _contract(chunk: Chunk, options: dict):
    if chunk.modality != "sensor":
        return _contract_for(chunk.modality)
    channels = tuple(c for c in chunk.data.schema.names if c not in ("t_ns", "pos"))
    return _contract_for("sensor", channels,
                         float(options.get("max_abs", sensor_schema.MAX_ABS_VALUE)))


def _timestamp_order(t: np.ndarray, prev: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate, out_of_order) masks against the running maximum of earlier rows."""
    if t.size == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    before = np.empty_like(t)
    before[0] = np.iinfo(np.int64).min if prev is None else prev
    if t.size > 1:
        before[1:] = np.maximum.accumulate(t[:-1])
        if prev is not None:
            before[1:] = np.maximum(before[1:], prev)
    return t == before, t < before


def _row_payload(batch: pa.RecordBatch, i: int) -> bytes:
    """A copy of the rejected row (payload columns left out) as JSON; NaN/inf kept as tokens."""
    return json.dumps(batch.slice(i, 1).to_pylist()[0], default=str, allow_nan=True).encode()


def _int64(col, fill: int) -> np.ndarray:
    """A timestamp column as int64, nulls as ``fill`` (no compute call when it has none)."""
    if col.null_count:
        col = col.fill_null(fill)
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def validate_chunk(chunk: Chunk, options: dict | None = None, run_id: str = "", *,
                   rule: TimestampRule | None = None, centre: int | None = None
                   ) -> tuple[Chunk | None, list[DeadLetter]]:
    """The chunk's good rows and one DeadLetter per bad row. ``rule``/``centre``: the
    session's timestamp plausibility rule and the stream's median time (transforms/validate/
    timestamps.py; None: the default rule around the chunk's own median)."""
    options = options or {}
    rule = rule or TimestampRule()
    n = chunk.data.num_rows
    reasons: dict[int, tuple[str, str, str]] = {}   # row -> (reason, error_class, message)

    def flag(rows, reason, error_class, message):
        for r in np.flatnonzero(rows) if isinstance(rows, np.ndarray) and rows.dtype == bool \
                else rows:
            reasons.setdefault(int(r), (reason, error_class, message))

    # 1. stream-level metadata: a bad rate/size condemns every row of the chunk.
    if chunk.modality == "audio":
        sr = chunk.meta.get("sample_rate")
        if not isinstance(sr, (int, float)) or not (
                audio_schema.MIN_RATE <= sr <= audio_schema.MAX_RATE):
            flag(range(n), "sample_rate_out_of_range", "ContractViolation",
                 f"audio sample rate {sr!r} is outside [{audio_schema.MIN_RATE}, "
                 f"{audio_schema.MAX_RATE}] Hz")

    # 2. timestamps: present, strictly increasing across the whole file.
    tcol = chunk.data.column("t_ns")
    if tcol.null_count:
        flag(np.asarray(pc.is_null(tcol)), "missing_timestamp", "ContractViolation",
             "sample has no timestamp")
    t = _int64(tcol, np.iinfo(np.int64).min)
    present = ~np.asarray(pc.is_null(tcol)) if tcol.null_count else np.ones(n, bool)
    odd = np.zeros(n, bool)
    for name in ("t_ns", "t_end_ns"):     # a text segment's two ends
        if name in chunk.data.schema.names:
            v = t if name == "t_ns" and not tcol.null_count else \
                _int64(chunk.data.column(name), 0)
            odd |= implausible(v, centre, rule) & present
    flag(odd, "implausible_timestamp", "ImplausibleTimestamp",
         f"timestamp outside the plausible range ({rule.describe()})")
    # order among the believable rows only: one absurd row must not condemn those after it
    keep = present & ~odd
    dup, ooo = np.zeros(n, bool), np.zeros(n, bool)
    dup[keep], ooo[keep] = _timestamp_order(t[keep], chunk.prev_t_ns)
    flag(dup, "duplicate_timestamp", "DuplicateTimestamp",
         "timestamp repeats the previous sample's")
    flag(ooo, "out_of_order", "OutOfOrderTimestamp",
         "timestamp is earlier than a previous sample's")

    # 3. the pandera contract on the scalar columns; a chunk the vectorised pre-check passes
    #    skips pandas and pandera (transforms/validate/fast_contract.py)
    scalars = chunk.data.select([c for c in chunk.data.schema.names
                                 if c not in _PAYLOAD_COLUMNS])
    schema, fast = _contract(chunk, options)
    df = None
    try:
        if fast is None or not fast.passes(scalars):
            df = scalars.to_pandas()
            schema.validate(df, lazy=True)
    except pa_pd.errors.SchemaErrors as e:
        fc = e.failure_cases
        for check, col, idx in zip(fc["check"], fc["column"], fc["index"]):
            if idx is None or pd.isna(idx):
                flag(range(n), "schema_mismatch", "ContractViolation",
                     f"column {col!r} fails {check}")
                continue
            name = str(check).split("(")[0]
            reason = _REASONS.get(name, "contract_" + name)
            flag([int(idx)], reason, "ContractViolation", f"column {col!r} fails check {check}")

    # 4. modality specifics that pandera cannot see cheaply.
    if chunk.modality == "audio" and n:
        pcm = chunk.data.column("pcm")
        lengths = pc.list_value_length(pcm).to_numpy(zero_copy_only=False)
        flag(lengths != chunk.data.column("n_samples").to_numpy(zero_copy_only=False),
             "block_length_mismatch", "ContractViolation", "pcm length differs from n_samples")
        flat = pc.list_flatten(pcm).to_numpy(zero_copy_only=False)
        if flat.size and not np.isfinite(flat).all():
            owner = np.repeat(np.arange(n), lengths)
            flag(np.unique(owner[~np.isfinite(flat)]), "non_finite", "ContractViolation",
                 "audio block has NaN or infinite samples")
        limit = float(options.get("max_abs") or audio_schema.MAX_ABS_SAMPLE)
        loud = np.abs(flat) > limit
        if loud.any():
            owner = np.repeat(np.arange(n), lengths)
            flag(np.unique(owner[loud]), "out_of_range", "ContractViolation",
                 f"audio block has samples beyond +-{limit:g} (clipped or mis-scaled audio; "
                 f"options.max_abs sets the limit)")
    if chunk.modality == "video" and n:
        w0, h0 = chunk.meta.get("width"), chunk.meta.get("height")
        if w0 and h0:
            w = scalars.column("width").to_numpy(zero_copy_only=False)
            h = scalars.column("height").to_numpy(zero_copy_only=False)
            flag((w != w0) | (h != h0), "frame_size_changed", "ContractViolation",
                 f"frame size differs from the stream's {w0}x{h0}")
    if chunk.modality == "text" and n:
        txt = (scalars.column("text").to_pandas() if df is None else df["text"]).astype(str)
        bad = txt.str.contains("\ufffd", regex=False) | txt.str.contains(
            f"[{_CONTROL}]", regex=True)
        flag(bad.to_numpy(), "bad_text_encoding", "ContractViolation",
             "text holds replacement or control characters")

    if not reasons:
        return chunk, []
    letters = []
    for r in sorted(reasons):
        reason, err, msg = reasons[r]
        letters.append(DeadLetter(
            stage="validate", error_class=err, reason=reason,
            message=f"{chunk.source_uri} {chunk.position(r)}: {msg}",
            run_id=run_id, session_id=chunk.session_id, stream_id=chunk.stream_id,
            modality=chunk.modality, source_uri=chunk.source_uri, position=chunk.position(r),
            event_time_ns=int(t[r]) if t[r] != np.iinfo(np.int64).min else None,
            payload=_row_payload(scalars, r), payload_format="json",
            attrs=dict(chunk.meta.get(ORIGIN_META_KEY) or {})))
    keep = np.ones(n, bool)
    keep[list(reasons)] = False
    good = chunk.data.filter(pa.array(keep))
    return (chunk.with_data(good) if good.num_rows else None), letters


def stream_key(chunk: Chunk) -> tuple[str, str]:
    return (chunk.session_id, chunk.stream_id)


class ValidateFn(beam.DoFn):
    """Chunks -> good chunks (main) and DeadLetters ("dead"). ``options``: (session, stream)
    -> the stream's options; ``rules``: session -> TimestampRule; side input ``centres``:
    (session, stream) -> the stream's median time (batch; absent in streaming)."""

    def __init__(self, options: dict[tuple[str, str], dict] | None = None, run_id: str = "",
                 rules: dict[str, TimestampRule] | None = None,
                 clocks: dict[tuple[str, str], ClockModel] | None = None):
        self.options = options or {}
        self.run_id = run_id
        self.rules = rules or {}
        self.clocks = clocks or {}

    def _declared_centre(self, chunk: Chunk) -> int | None:
        """Streaming: the middle of the stream's extents its producer declared (reference
        clock, EXTENTS_META_KEY), on the stream's device clock."""
        span = (chunk.meta.get(EXTENTS_META_KEY) or {}).get(chunk.stream_id)
        model = self.clocks.get(stream_key(chunk))
        if not span or model is None:
            return None
        mid = int(span[0]) // 2 + int(span[1]) // 2
        return int(model.to_dev([mid])[0])

    def process(self, chunk: Chunk, centres=None):
        m = chunk.modality
        key = stream_key(chunk)
        try:
            centre = (centres or {}).get(key)
            if centre is None:
                centre = self._declared_centre(chunk)
            with VALIDATE.timed(m, session=chunk.session_id, stream=chunk.stream_id,
                                seq=chunk.seq):      # processing time + sampled span
                good, letters = validate_chunk(
                    chunk, self.options.get(key), self.run_id, rule=self.rules.get(
                        chunk.session_id), centre=centre)
        except Exception as e:  # a validator bug must not lose the chunk: dead-letter it whole
            letters = [DeadLetter.from_exception(
                "validate", e, "validator_error", run_id=self.run_id,
                session_id=chunk.session_id, stream_id=chunk.stream_id, modality=m,
                source_uri=chunk.source_uri, position=f"chunk={chunk.seq}",
                records=chunk.num_records,
                attrs={"rows": str(chunk.num_records),
                       **(chunk.meta.get(ORIGIN_META_KEY) or {})})]
            good = None
        VALIDATE.count(metrics.DEAD, modality=m, n=
            sum(d.records for d in letters))
        if good is not None:
            VALIDATE.count(metrics.VALID, good.num_records, modality=m)
            yield good
        for d in letters:
            yield beam.pvalue.TaggedOutput(DEAD, d)


class _WeightedMedian(beam.CombineFn):
    """(median, count) per chunk -> the weighted median of them (not associative, so the
    pairs are collected and the median taken once)."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, pair):
        if pair is not None:
            acc.append(pair)
        return acc

    def merge_accumulators(self, accs):
        return [p for a in accs for p in a]

    def extract_output(self, acc):
        return weighted_median(acc)


class StreamCentres(beam.PTransform):
    """Chunks -> ((session, stream), median time): the weighted median of the chunks' medians
    of absolutely plausible times (the centre of the relative plausibility bound)."""

    def __init__(self, rules: dict[str, TimestampRule] | None = None):
        super().__init__()
        self.rules = rules or {}

    def expand(self, chunks):
        rules = self.rules

        def centre(chunk: Chunk):
            rule = rules.get(chunk.session_id) or TimestampRule()
            return stream_key(chunk), chunk_centre(chunk.t_ns(), rule)

        return chunks | "ChunkMedian" >> beam.Map(centre) | MedianPerStream()


class MedianPerStream(beam.PTransform):
    """((session, stream), (median, count) or None) per chunk -> ((session, stream), the
    weighted median), for streams with any plausible time."""

    def expand(self, pairs):
        return (pairs
                | "StreamMedian" >> beam.CombinePerKey(_WeightedMedian())
                | "Known" >> beam.Filter(lambda kv: kv[1] is not None))


class Validate(beam.PTransform):
    """Chunks -> {MAIN: valid chunks, DEAD: DeadLetters}. With ``centres`` (batch), the
    relative plausibility bound is measured from each stream's median over the whole run;
    without (streaming), from the middle of the stream's extents when the producer declared
    them (``clocks``: the declared models, to put that middle on the device clock), else from
    each chunk's own median."""

    def __init__(self, options: dict[tuple[str, str], dict] | None = None, run_id: str = "",
                 rules: dict[str, TimestampRule] | None = None, centres: bool = False,
                 clocks: dict[tuple[str, str], ClockModel] | None = None):
        super().__init__()
        self.options = options
        self.run_id = run_id
        self.rules = rules
        self.centres = centres
        self.clocks = clocks

    def expand(self, chunks):
        side = {}
        if self.centres:
            side["centres"] = beam.pvalue.AsDict(chunks | "Centres" >> StreamCentres(self.rules))
        return chunks | "ValidateChunk" >> beam.ParDo(
            ValidateFn(self.options, self.run_id, self.rules, self.clocks), **side).with_outputs(
                DEAD, main=MAIN)
