"""SourceRef: what the stages after alignment reload is the data the validator accepted.
A sensor row or audio block the validate stage dead-letters never reaches an encoder window."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import soundfile as sf

from mmalign.encoders.stage import StreamEncode, sensor_inputs
from mmalign.schemas.aligned import POS, POS_RIGHT, SRC, column
from mmalign.schemas.encoders import EncoderConfig
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.sources import SourceRef
from mmalign.transforms.validate.stage import validate_chunk

MS = 1_000_000


def _imu(tmp_path):
    t = np.arange(100) * 10 * MS
    rows = [f"{x},{i * 0.01},{1.0},{2.0}" for i, x in enumerate(t)]
    rows[50] = f"{t[50]},5000000000.0,1.0,2.0"      # beyond max_abs: out_of_range
    rows[52] = f"{t[52]},nan,1.0,2.0"               # non_finite
    rows[54] = f"{t[53]},0.999,1.0,2.0"             # duplicate timestamp
    rows[56] = f"{t[40]},0.888,1.0,2.0"             # out of order
    path = tmp_path / "imu.csv"
    path.write_text("t_ns,x,y,z\n" + "\n".join(rows) + "\n")
    return path


def test_sensor_rows_are_the_validated_rows(tmp_path):
    path = _imu(tmp_path)
    stream = Stream(id="imu", modality="sensor", files=[str(path)],
                    options={"channels": ["x", "y", "z"]})
    ref = SourceRef("s", stream, (str(tmp_path),))
    rows = ref.sensor_rows(str(path), ("x", "y", "z"))
    assert sorted(set(range(100)) - set(rows.pos.tolist())) == [50, 52, 54, 56]
    # the same rows the validate stage keeps, decided by its own code
    from mmalign.transforms.decode.stage import decode_file
    kept = []
    for c in decode_file(stream, path, session_id="s"):
        good, _ = validate_chunk(c, stream.options)
        kept += good.data.column("pos").to_pylist()
    assert sorted(rows.pos.tolist()) == kept


def test_a_rejected_row_never_reaches_an_encoder_window(tmp_path):
    path = _imu(tmp_path)
    stream = Stream(id="imu", modality="sensor", files=[str(path)],
                    options={"channels": ["x", "y", "z"]})
    se = StreamEncode(stream, EncoderConfig(modality="sensor"), window_ns=200 * MS,
                      channels=("x", "y", "z"), source=SourceRef("s", stream, (str(tmp_path),)))
    # ticks whose neighbours are rows 49/51 and 53/55: their windows span the bad rows
    table = pa.table({column("imu", POS): [49, 53, 55], column("imu", POS_RIGHT): [51, 55, 57],
                      column("imu", SRC): [str(path)] * 3})
    windows = sensor_inputs(table, se, lambda uri: se.ref.sensor_rows(uri, se.channels))
    for w in windows:
        assert isinstance(w, np.ndarray) and len(w) >= 15
        assert np.isfinite(w).all() and np.abs(w).max() < 10
        assert not np.isin(w[:, 0], [0.999, 0.888]).any()


def test_rejected_audio_blocks_come_back_as_silence(tmp_path):
    x = np.full(8 * 1024, 0.25, np.float32)
    x[3 * 1024 + 10] = 3.0                   # block 3: beyond full scale
    x[5 * 1024 + 7] = np.inf                 # block 5: non-finite
    sf.write(str(tmp_path / "a.wav"), x, 16000, subtype="FLOAT")
    ref = SourceRef("s", Stream(id="mic", modality="audio", files=["a.wav"]))
    got = ref.audio(str(tmp_path / "a.wav"), 1000, 7000)
    want = x[1000:7000].copy()
    for b in (3, 5):
        want[max(0, b * 1024 - 1000):(b + 1) * 1024 - 1000] = 0.0
    np.testing.assert_array_equal(got, want)
