import json

import numpy as np
import pyarrow as pa

from mmalign.schemas import audio, text, video
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.sensor import arrow_schema
from mmalign.transforms.validate.stage import validate_chunk


def sensor_chunk(t, values, prev=None):
    b = pa.RecordBatch.from_pydict({"t_ns": t, "pos": list(range(len(t))), "ax": values},
                                   schema=arrow_schema(["ax"]))
    return Chunk("s", "imu", "sensor", 0, "imu.csv", b, prev_t_ns=prev)


def reasons(letters):
    return {d.position: d.reason for d in letters}


def test_sensor_rows_each_get_their_own_reason_and_a_copy():
    c = sensor_chunk([1, 2, 2, 5, 4, 6, 7], [0.0, np.nan, 1, 2, 3, np.inf, 2e9])
    good, dead = validate_chunk(c, run_id="r1")
    assert good.data.column("pos").to_pylist() == [0, 3]
    assert reasons(dead) == {"row=1": "non_finite", "row=2": "duplicate_timestamp",
                             "row=4": "out_of_order", "row=5": "non_finite",
                             "row=6": "out_of_range"}
    d = dead[0]
    assert d.stage == "validate" and d.run_id == "r1" and d.stream_id == "imu"
    assert json.loads(d.payload.replace(b"NaN", b"null"))["pos"] == 1
    assert good.num_records + len(dead) == c.num_records


def test_monotonicity_spans_chunk_edges():
    good, dead = validate_chunk(sensor_chunk([10, 11], [0.0, 0.0], prev=10))
    assert reasons(dead) == {"row=0": "duplicate_timestamp"}
    good, dead = validate_chunk(sensor_chunk([9, 11], [0.0, 0.0], prev=10))
    assert reasons(dead) == {"row=0": "out_of_order"}


def test_all_good_chunk_is_returned_unchanged():
    c = sensor_chunk([1, 2, 3], [0.0, 1.0, 2.0])
    good, dead = validate_chunk(c)
    assert good is c and dead == []


def test_text_contract():
    b = pa.RecordBatch.from_pydict(
        {"t_ns": [0, 10, 20, 30], "t_end_ns": [5, 5, 25, 35], "pos": [0, 1, 2, 3],
         "text": ["hello", "backwards", "bad \ufffd bytes", ""], "kind": ["segment"] * 4},
        schema=text.ARROW_SCHEMA)
    good, dead = validate_chunk(Chunk("s", "subs", "text", 0, "a.srt", b))
    assert good.data.column("pos").to_pylist() == [0]
    assert reasons(dead) == {"cue=1": "end_before_start", "cue=2": "bad_text_encoding",
                             "cue=3": "bad_text_length"}


def test_video_frame_size_and_range():
    b = pa.RecordBatch.from_pydict(
        {"t_ns": [0, 33, 66], "pos": [0, 1, 2], "pts": [0, 1, 2], "width": [320, 320, 4],
         "height": [240, 200, 4], "keyframe": [True, False, False], "file": [None] * 3,
         "image": [None] * 3}, schema=video.ARROW_SCHEMA)
    c = Chunk("s", "cam", "video", 0, "c.mp4", b, meta={"width": 320, "height": 240})
    good, dead = validate_chunk(c)
    assert good.data.column("pos").to_pylist() == [0]
    assert reasons(dead) == {"frame=1": "frame_size_changed", "frame=2": "out_of_range"}


def test_audio_rate_and_samples():
    pcm = [np.zeros(4, np.float32), np.array([0, np.nan, 0, 0], np.float32)]
    b = pa.RecordBatch.from_pydict(
        {"t_ns": [0, 250], "pos": [0, 4], "n_samples": [4, 4], "pcm": pcm},
        schema=audio.ARROW_SCHEMA)
    good, dead = validate_chunk(Chunk("s", "mic", "audio", 0, "m.wav", b,
                                      meta={"sample_rate": 16000}))
    assert reasons(dead) == {"sample=4": "non_finite"} and good.num_records == 1
    good, dead = validate_chunk(Chunk("s", "mic", "audio", 0, "m.wav", b,
                                      meta={"sample_rate": 12}))
    assert good is None and {d.reason for d in dead} == {"sample_rate_out_of_range"}
