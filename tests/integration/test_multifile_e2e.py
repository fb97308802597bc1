"""A stream of several files that each restart at 0 (a camera splitting its recording into
segments): the files are consecutive segments, the stream stays monotonic and every file's
samples are aligned (none silently dropped as duplicates of the first file's)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.transforms.io.parquet import read_aligned
from tests.media import ffmpeg_testsrc, sensor_csv


@pytest.mark.slow
def test_two_mp4s_that_both_start_at_zero(tmp_path):
    ffmpeg_testsrc(tmp_path / "a.mp4", 2, pattern="testsrc", rate=20)
    ffmpeg_testsrc(tmp_path / "b.mp4", 2, pattern="smptebars", rate=20)
    # a sensor logged in two files that each restart at 0, 100 Hz
    t = np.arange(0, 2_000_000_000, 10_000_000)
    for name, v in (("imu_a.csv", 1.0), ("imu_b.csv", 2.0)):
        sensor_csv(tmp_path / name, t, x=[v] * len(t))
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({
        "session": "segments",
        "streams": [{"id": "cam", "modality": "video", "files": ["a.mp4", "b.mp4"]},
                    {"id": "imu", "modality": "sensor", "files": ["imu_a.csv", "imu_b.csv"]}],
        "alignment": {"ticks": {"anchor": "cam"}, "bucket_s": 1.0}}))
    backfill.run([manifest], tmp_path / "out", run_id="seg")
    rows = read_aligned(tmp_path / "out" / "aligned")
    assert read_dead_letters(tmp_path / "out" / "deadletter").num_rows == 0
    ticks = rows.column("tick_ns").to_numpy()
    assert len(ticks) == 80 and np.all(np.diff(ticks) > 0)
    np.testing.assert_array_equal(ticks, np.arange(80) * 50_000_000)   # 20 fps, no seam gap
    src = rows.column("cam__src").to_pylist()
    assert [s.endswith("a.mp4") for s in src] == [True] * 40 + [False] * 40
    # the second sensor file follows the first one: ticks of the second camera file read it
    x = rows.column("imu__x").to_numpy(zero_copy_only=False)
    status = rows.column("imu__status").to_pylist()
    assert np.all(x[:39] == 1.0) and np.all(x[41:79] == 2.0)
    assert status.count("ok") >= 76
