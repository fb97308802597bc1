import numpy as np
import pyarrow as pa
import pytest

from mmalign.schemas.chunk import Chunk
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.text import ARROW_SCHEMA as TEXT_SCHEMA
from mmalign.transforms.clock.apply import apply_clock


def test_identity_is_exact():
    t = np.array([0, 1, 1_700_000_000_123_456_789], np.int64)
    assert (ClockModel().to_ref(t) == t).all()


def test_offset_and_drift_at_epoch_scale_keep_nanoseconds():
    m = ClockModel.declared(offset_ns=-250_000_000, drift_ppm=80.0, anchor_ns=1_700_000_000 * 10**9)
    t = np.int64(1_700_000_000 * 10**9) + np.arange(0, 10**12, 10**9, dtype=np.int64)
    ref = m.to_ref(t)
    # exact integer expectation: t + offset + drift * (t - anchor), rounded
    rel = (t - m.anchor_ns)
    expect = t + m.offset_ns + np.array([round(int(r) * 80 / 10**6) for r in rel], np.int64)
    assert (ref == expect).all()
    assert np.abs(m.to_dev(ref) - t).max() <= 1


@pytest.mark.parametrize("offset,ppm", [(0, 300.0), (5_000_000_000, -300.0), (-123, 1.5)])
def test_round_trip(offset, ppm):
    m = ClockModel.declared(offset, ppm)
    t = np.sort(np.random.default_rng(1).integers(0, 10**13, 1000)).astype(np.int64)
    assert np.abs(m.to_dev(m.to_ref(t)) - t).max() <= 1
    # t_ref = offset + (1 + drift) * t_dev
    assert np.allclose(m.to_ref(t), offset + (1 + ppm * 1e-6) * t.astype(float), atol=2)


def test_apply_clock_rewrites_start_and_end_and_keeps_device_time():
    b = pa.RecordBatch.from_pydict(
        {"t_ns": [1_000, 2_000], "t_end_ns": [1_500, 2_500], "pos": [0, 1], "text": ["a", "b"],
         "kind": ["segment", "segment"]}, schema=TEXT_SCHEMA)
    c = Chunk("s", "subs", "text", 0, "x.srt", b, prev_t_ns=500)
    out = apply_clock(c, ClockModel.declared(offset_ns=100))
    assert out.clock == "reference"
    assert out.data.column("t_ns").to_pylist() == [1_100, 2_100]
    assert out.data.column("t_end_ns").to_pylist() == [1_600, 2_600]
    assert out.data.column("t_dev_ns").to_pylist() == [1_000, 2_000]
    assert out.prev_t_ns == 600
    assert apply_clock(out, ClockModel.declared(offset_ns=100)) is out  # never twice
