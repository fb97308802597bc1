"""Timestamp plausibility (transforms/validate/timestamps.py) and its use by validate_chunk."""

import numpy as np
import pyarrow as pa
import pytest

from mmalign.schemas import audio, text
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.clock import MAX_ABS_TIME_NS
from mmalign.schemas.sensor import arrow_schema
from mmalign.transforms.validate.stage import validate_chunk
from mmalign.transforms.validate.timestamps import (
    DEFAULT_MAX_SPAN_NS,
    TimestampRule,
    chunk_centre,
    implausible,
    weighted_median,
)

S = 1_000_000_000
YEAR_2200_NS = 7_258_118_400 * S


def test_absolute_bound_and_relative_span():
    rule = TimestampRule()
    t = np.array([0, S, 2 * S, MAX_ABS_TIME_NS + 1, -(MAX_ABS_TIME_NS + 1), YEAR_2200_NS,
                  DEFAULT_MAX_SPAN_NS + 2 * S], np.int64)
    bad = implausible(t, centre=S, rule=rule)
    assert bad.tolist() == [False, False, False, True, True, True, True]


def test_centre_defaults_to_the_chunks_own_median():
    t = np.array([10 * S, 11 * S, 12 * S, 9_000_000_000_000_000_000], np.int64)
    assert implausible(t, None, TimestampRule()).tolist() == [False, False, False, True]
    assert chunk_centre(t, TimestampRule()) == (11 * S, 3)     # the absurd one is not counted


def test_extremes_never_overflow():
    t = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0], np.int64)
    for centre in (None, np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0):
        assert implausible(t, centre, TimestampRule()).tolist()[:2] == [True, True]


def test_weighted_median_is_robust_to_a_few_far_chunks():
    assert weighted_median([(0, 100), (5, 100), (10**18, 3)]) == 5
    assert weighted_median([(0, 1), (10**18, 1)]) == 0
    assert weighted_median([None, (7, 0)]) is None


def test_rule_bounds():
    with pytest.raises(ValueError):
        TimestampRule(max_abs_ns=MAX_ABS_TIME_NS + 1)
    with pytest.raises(ValueError):
        TimestampRule(max_span_ns=0)


def _sensor(t, prev=None):
    b = pa.RecordBatch.from_pydict({"t_ns": t, "pos": list(range(len(t))),
                                    "ax": [0.0] * len(t)}, schema=arrow_schema(["ax"]))
    return Chunk("s", "imu", "sensor", 0, "imu.csv", b, prev_t_ns=prev)


def test_one_far_row_is_a_letter_and_does_not_condemn_the_rows_after_it():
    t = [S, 2 * S, YEAR_2200_NS, 3 * S, 4 * S]
    good, dead = validate_chunk(_sensor(t))
    assert good.data.column("pos").to_pylist() == [0, 1, 3, 4]
    assert [(d.position, d.reason) for d in dead] == [("row=2", "implausible_timestamp")]
    assert "plausible range" in dead[0].message


def test_stream_centre_wins_over_the_chunk_median():
    # a whole chunk far from the stream's median is implausible, though self-consistent
    far = [YEAR_2200_NS // 2 + i * S for i in range(3)]
    good, dead = validate_chunk(_sensor(far), centre=S)
    assert good is None and {d.reason for d in dead} == {"implausible_timestamp"}
    good, dead = validate_chunk(_sensor(far))
    assert good.num_records == 3 and not dead


def test_text_segment_end_is_checked_too():
    b = pa.RecordBatch.from_pydict(
        {"t_ns": [S, 5 * S], "t_end_ns": [2 * S, 2_000_000 * 3600 * S], "pos": [0, 1],
         "text": ["a", "b"], "kind": ["segment", "segment"]}, schema=text.ARROW_SCHEMA)
    good, dead = validate_chunk(Chunk("s", "subs", "text", 0, "a.srt", b))
    assert good.data.column("pos").to_pylist() == [0]
    assert dead[0].reason == "implausible_timestamp"


def _audio(samples):
    n = len(samples)
    b = pa.RecordBatch.from_arrays([
        pa.array([0], pa.int64()), pa.array([0], pa.int64()), pa.array([n], pa.int32()),
        pa.ListArray.from_arrays(pa.array([0, n], pa.int32()),
                                 pa.array(samples, pa.float32()))], schema=audio.ARROW_SCHEMA)
    return Chunk("s", "mic", "audio", 0, "m.wav", b, meta={"sample_rate": 8000})


def test_audio_beyond_full_scale_is_out_of_range_unless_allowed():
    good, dead = validate_chunk(_audio([0.0, 3.0, -0.5]))
    assert good is None and dead[0].reason == "out_of_range"
    good, dead = validate_chunk(_audio([0.0, 3.0, -0.5]), {"max_abs": 4.0})
    assert good.num_records == 1 and not dead
    good, dead = validate_chunk(_audio([0.0, float("inf")]))
    assert dead[0].reason == "non_finite"
