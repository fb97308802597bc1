"""DTW-sync end to end: a recording whose clocks are NOT declared, through `mmalign backfill`;
the recovered clock models must match the generator's truth (issue targets)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.sample_recording import generate_recording
from transforms.parquet_sink import read_aligned

pytestmark = pytest.mark.slow
# Issue 5 is open: on this 40 s recording the video- and IMU-based drift estimates miss 20 ppm
# (measured errors: cam1 118 ppm, imu 24-55 ppm, run to run). Strict: the suite fails once
# they pass, to lift the mark.
DRIFT_OPEN = "issue 5: drift from 40 s of video/IMU features misses 20 ppm"
ROOT = Path(__file__).resolve().parents[1]

CLOCKS = {"cam1": {"offset_ns": -1_700_000_000, "drift_ppm": 180.0},
          "mic": {"offset_ns": 2_350_000_000, "drift_ppm": -250.0},
          "imu": {"offset_ns": -4_200_000_000, "drift_ppm": 290.0},
          "transcript": {"offset_ns": 1_500_000_000, "drift_ppm": 0.0}}


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sync")
    manifest = generate_recording(tmp / "rec", seed=11, duration_s=40.0, clocks=CLOCKS,
                                  declare_clocks=False)
    out = tmp / "out"
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "backfill", "--manifest",
                        str(manifest), "--out", str(out), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    gt = json.loads((tmp / "rec" / "ground_truth.json").read_text())
    return {"summary": json.loads(p.stdout), "gt": gt, "out": out}


def truth(gt, stream):
    c = gt["streams"][stream]["clock"]
    return c["offset_ns"], c["drift_ppm"]


def offset_error_ms(result, gt, stream, at_ns):
    """Error of the recovered mapping at a device time inside the recording (offset and
    drift trade off against each other away from the anchor)."""
    from transforms.clock import ClockModel
    m = result["model"]
    est = ClockModel(m["offset_ns"], m["drift_ppm"] * 1e-6, m["anchor_ns"])
    off, ppm = truth(gt, stream)
    true = ClockModel.declared(off, ppm)
    return float(np.max(np.abs(est.to_ref(at_ns) - true.to_ref(at_ns)))) / 1e6


@pytest.mark.parametrize("stream,limit_ms", [("cam1", 33.0), ("mic", 10.0), ("imu", 33.0),
                                              ("transcript", 100.0)])
def test_recovered_clock_within_target(synced, stream, limit_ms):
    r = synced["summary"]["sync"][f"demo-001/{stream}"]
    assert not r["fell_back"], r
    gt = synced["gt"]
    dev = np.array(gt["streams"]["cam0"]["frames"]["t_dev_ns"][::30], np.int64)
    off, ppm = truth(gt, stream)
    from transforms.clock import ClockModel
    at = ClockModel.declared(off, ppm).to_dev(dev)    # the stream's device times over the take
    assert offset_error_ms(r, gt, stream, at) <= limit_ms


@pytest.mark.parametrize("stream", [
    "mic",
    pytest.param("cam1", marks=pytest.mark.xfail(strict=True, reason=DRIFT_OPEN)),
    pytest.param("imu", marks=pytest.mark.xfail(strict=True, reason=DRIFT_OPEN)),
])
def test_recovered_drift_within_20_ppm(synced, stream):
    r = synced["summary"]["sync"][f"demo-001/{stream}"]
    _, ppm = truth(synced["gt"], stream)
    assert abs(r["model"]["drift_ppm"] - ppm) <= 20.0


def test_alignment_uses_the_recovered_clocks(synced):
    a = read_aligned(synced["out"] / "aligned").to_pandas()
    gt = synced["gt"]
    f = gt["streams"]["cam1"]["frames"]
    t_true = dict(zip(f["pos"], f["t_true_ns"]))
    ok = a["cam1__status"] == "ok"
    assert ok.mean() > 0.9
    err = np.abs(a.loc[ok, "cam1__pos"].map(t_true) - a.loc[ok, "cam1__t_ns"])
    assert err.max() < 33_000_000
