"""Where samples, covered spans and dead letters sit on the reference clock, read from aligned
rows (pipelines/placement.py), and mmalign view's small helpers (subsampling, max-pooled
curves, modalities and channels of an output without its manifest)."""

import numpy as np
import pyarrow as pa
import pytest

from mmalign.pipelines.placement import (
    StreamTimes,
    covered_spans,
    place_letter,
    position_number,
    stream_times,
)
from mmalign.pipelines.view import _channels, _guess_modality, _pool_max, _subsample
from mmalign.schemas.clock import ClockModel

MS = 1_000_000


def _rows() -> pa.Table:
    ticks = np.arange(6, dtype=np.int64) * 100 * MS
    return pa.table({
        "tick_ns": ticks,
        "cam__status": ["ok", "ok", "no_sample_in_tolerance", "ok", "ok", "ok"],
        "cam__t_ns": [0, 98 * MS, None, 301 * MS, 301 * MS, 502 * MS],
        "cam__pos": [0, 3, None, 9, 9, 15],
        "cam__src": ["c.mp4"] * 6,
        "imu__status": ["ok"] * 6,
        "imu__dt_ns": [-2 * MS, 3 * MS, 0, -1 * MS, 4 * MS, 0],
        "imu__ax": [0.1] * 6,
        "imu__pos": [0, 19, 40, 59, 79, 100],
        "imu__pos_right": [1, 20, 41, 60, 80, 101],
        "imu__src": ["i.csv"] * 6,
        "tr__status": ["no_overlap", "ok", "ok", "no_overlap", "ok", "no_overlap"],
        "tr__text": [None, "hi", "hi", None, "yo", None],
        "tr__cues": [[], [0], [0], [], [2], []],
        "tr__src": [None, "t.srt", "t.srt", None, "t.srt", None],
        "mic__status": ["ok"] * 6,
        "mic__sample_start": [0, 800, 1600, 2400, 3200, 4000],
        "mic__sample_end": [800, 1600, 2400, 3200, 4000, 4800],
        "mic__sample_rate": pa.array([16000] * 6, pa.int32()),
        "mic__src": ["m.wav"] * 6,
    })


def test_stream_times_per_policy():
    rows = _rows()
    cam = stream_times(rows, "cam").sorted_unique()
    assert cam.pos.tolist() == [0, 3, 9, 15]                    # frame 9 used twice: once
    assert cam.t_ns.tolist() == [0, 98 * MS, 301 * MS, 502 * MS]
    imu = stream_times(rows, "imu")
    # the nearer bracketing row: left when dt <= 0, right when dt > 0, at tick + dt
    assert imu.pos.tolist() == [0, 20, 40, 59, 80, 100]
    assert imu.t_ns.tolist() == [-2 * MS, 103 * MS, 200 * MS, 299 * MS, 404 * MS, 500 * MS]
    tr = stream_times(rows, "tr")
    assert tr.pos.tolist() == [0, 0, 2] and tr.t_ns.tolist() == [100 * MS, 200 * MS, 400 * MS]
    mic = stream_times(rows, "mic")                # the window's first sample: tick - 25 ms
    assert mic.pos.tolist()[:2] == [0, 800] and mic.t_ns.tolist()[:2] == [-25 * MS, 75 * MS]


def test_covered_spans_widen_runs_by_half_a_tick():
    rows = _rows()
    assert covered_spans(rows, "tr") == [(50 * MS, 250 * MS), (350 * MS, 450 * MS)]
    assert covered_spans(rows, "cam") == [(-50 * MS, 150 * MS), (250 * MS, 550 * MS)]
    assert covered_spans(rows, "nope") == []


def test_letters_are_placed_by_event_time_then_position_then_file():
    times = StreamTimes(np.asarray([0, 10, 20], np.int64),
                        np.asarray([1000, 2000, 3000], np.int64) * MS,
                        np.asarray(["a.csv"] * 3, object))
    model = ClockModel(500 * MS, 0.0, 0)
    # event time: device -> reference through the stream's model
    assert place_letter({"event_time_ns": 100 * MS}, times, model, 0) == 600 * MS
    # a row between two known rows: linear between them
    assert place_letter({"event_time_ns": None, "position": "row=15",
                         "source_uri": "a.csv"}, times, model, 0) == 2500 * MS
    # beyond the last known row: the rows' rate carries on
    assert place_letter({"position": "row=25"}, times, model, 0) == 3500 * MS
    # a whole-file letter: the stream's first sample; no samples: the session's start
    assert place_letter({"position": "file"}, times, model, 7) == 1000 * MS
    empty = StreamTimes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object))
    assert place_letter({"position": "cue=3"}, empty, model, 7) == 7
    assert position_number("frame=42") == 42 and position_number("file") is None


def test_subsample_and_pool_max():
    t = np.arange(0, 10_000, 33, dtype=np.int64) * MS          # ~30 fps for 10 s
    keep = _subsample(t, 2.0)
    assert 19 <= keep.size <= 21 and np.diff(t[keep]).min() >= 499 * MS
    assert _subsample(t, 0).size == t.size                     # 0: every frame
    tc = np.arange(1000, dtype=np.float64) * 1e7                # 100 Hz curve
    v = np.zeros(1000)
    v[[37, 512]] = [1.0, 0.7]
    tp, vp = _pool_max(tc, v, 25.0)
    assert tp.size == 250 and sorted(vp)[-2:] == [0.7, 1.0]     # impulses keep their height
    assert tp[np.argmax(vp)] == tc[37]


@pytest.mark.parametrize("stream, modality", [("cam", "video"), ("imu", "sensor"),
                                              ("tr", "text"), ("mic", "audio")])
def test_modality_and_channels_without_a_manifest(stream, modality):
    names = _rows().column_names + ["cam1__reg_status", "imu__cam1__u", "cam__emb"]
    assert _guess_modality(names, stream) == modality
    assert _channels(names, "imu") == ["ax"]
