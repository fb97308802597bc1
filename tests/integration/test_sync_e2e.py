"""DTW-sync end to end: a recording whose clocks are NOT declared, through `mmalign backfill`;
the recovered clock models must match the generator's truth (issue targets).

Why 240 s at 160x120: drift is a slope, and a 20 fps camera times each impact only to within
its frame interval (uniform, sd ~14 ms), so the slope's standard error over N impacts spread
over D seconds is ~ 14 ms * sqrt(12) / (sqrt(N) * D) -- about 170 ppm at 40 s, 11 ppm at 240 s
(README "Clock sync (DTW)"). A small frame size keeps the 240 s run cheap; cam1 is timed against
the camera's audio track (a high-rate reference) instead of the 30 fps video.
"""

import json

import numpy as np
import pytest

from mmalign.pipelines.sample_recording import generate_recording
from mmalign.pipelines.summary import render
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.layout import SYNC, session_dir
from mmalign.schemas.sync import SYNC_FILE, SyncResult
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import run_mmalign

pytestmark = pytest.mark.slow

CLOCKS = {"cam1": {"offset_ns": -1_700_000_000, "drift_ppm": 180.0},
          "mic": {"offset_ns": 2_350_000_000, "drift_ppm": -250.0},
          "imu": {"offset_ns": -4_200_000_000, "drift_ppm": 290.0},
          "transcript": {"offset_ns": 1_500_000_000, "drift_ppm": 0.0}}
SMALL = {"size": (160, 120), "fps": 15.0, "imu_hz": 100.0, "mic_rate": 8000}


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """One backfill run over two sessions: the 240 s recording (demo-001), and a short one
    (demo-002) whose mic asks for an unreachable min_confidence (the fallback case)."""
    tmp = tmp_path_factory.mktemp("sync")
    manifest = generate_recording(tmp / "rec", seed=11, duration_s=240.0, clocks=CLOCKS,
                                  declare_clocks=False, **SMALL,
                                  sync={"cam1": {"reference": "cam0_audio"}})
    strict = generate_recording(tmp / "strict", seed=5, duration_s=8.0, clocks=CLOCKS,
                                declare_clocks=False, bad_records=False, **SMALL,
                                session="demo-002", sync={"mic": {"min_confidence": 1.0}})
    out = tmp / "out"
    p = run_mmalign("backfill", "--manifest", manifest, "--manifest", strict, "--out", out,
                    "--json", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    gt = json.loads((tmp / "rec" / "ground_truth.json").read_text())
    return {"summary": json.loads(p.stdout), "gt": gt, "out": out}


def truth(gt, stream):
    c = gt["streams"][stream]["clock"]
    return c["offset_ns"], c["drift_ppm"]


def offset_error_ms(result, gt, stream, at_ns):
    """Error of the recovered mapping at a device time inside the recording (offset and
    drift trade off against each other away from the anchor)."""
    est = SyncResult.from_dict(result).model
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
    at = ClockModel.declared(off, ppm).to_dev(dev)    # the stream's device times over the take
    assert offset_error_ms(r, gt, stream, at) <= limit_ms


@pytest.mark.parametrize("stream", ["cam1", "mic", "imu"])
def test_recovered_drift_within_20_ppm(synced, stream):
    r = synced["summary"]["sync"][f"demo-001/{stream}"]
    _, ppm = truth(synced["gt"], stream)
    assert abs(r["model"]["drift_ppm"] - ppm) <= 20.0


def test_alignment_uses_the_recovered_clocks(synced):
    a = read_aligned(synced["out"] / "aligned").to_pandas()
    a = a[a["session_id"] == "demo-001"]
    gt = synced["gt"]
    f = gt["streams"]["cam1"]["frames"]
    t_true = dict(zip(f["pos"], f["t_true_ns"]))
    ok = a["cam1__status"] == "ok"
    assert ok.mean() > 0.9
    err = np.abs(a.loc[ok, "cam1__pos"].map(t_true) - a.loc[ok, "cam1__t_ns"])
    assert err.max() < 33_000_000


def test_low_confidence_falls_back_marked_in_sync_json_and_summary(synced):
    """min_confidence 1.0 cannot be met: the mic keeps its declared (here: identity) clock,
    and sync.json, the JSON summary and the printed summary all say so, with the reason."""
    summary, out = synced["summary"], synced["out"]
    on_disk = json.loads((session_dir(out / SYNC, "demo-002") / SYNC_FILE).read_text())
    for r in (summary["sync"]["demo-002/mic"], on_disk["mic"]):
        assert r["fell_back"] and "below min_confidence 1.00" in r["reason"]
        assert r["model"]["source"] == "fallback"
        assert r["model"]["offset_ns"] == 0 and r["model"]["drift_ppm"] == 0
        assert r["estimate"] is not None and r["estimate"]["source"] == "estimated"
    assert not summary["sync"]["demo-002/imu"]["fell_back"]
    assert not summary["sync"]["demo-001/mic"]["fell_back"]
    text = render(summary)                                # what `mmalign backfill` prints
    assert "clock demo-002/mic" in text and "FELL BACK (confidence" in text
