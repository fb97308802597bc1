"""align-check as a user runs it: generated recordings (good, wrong declared offset, heavy drops,
broken calibration), garbage input, and a backfill output with its great-expectations suite.
The plain measurements and checks: tests/unit/pipelines/test_align_check.py."""

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from mmalign.pipelines.sample_recording import generate_recording

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "align_report.schema.json").read_text())
SCRIPT = Path(sys.executable).parent / "align-check"


def align_check(*args, script: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "mmalign.pipelines.align_check"]
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def report_of(p: subprocess.CompletedProcess) -> dict:
    rep = json.loads(p.stdout)
    jsonschema.validate(rep, SCHEMA)
    assert rep["exit_code"] == p.returncode
    return rep


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aligncheck")
    return generate_recording(root / "good", seed=5, duration_s=6.0).parent


def variant(rec: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(rec, dest)
    return dest


@pytest.fixture(scope="module")
def good(rec, tmp_path_factory):
    png = tmp_path_factory.mktemp("plot") / "timeline.png"
    p = align_check(rec / "manifest.yaml", "--json", "--plot", png)
    return p, png


@pytest.mark.slow
def test_good_recording_passes(good):
    p, png = good
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = report_of(p)
    assert rep["ok"] and rep["failed"] == [] and rep["kind"] == "recording"
    clocks = {c["stream"]: c for c in rep["clocks"]}
    assert clocks["cam0"]["state"] == "reference"
    compared = [s for s, c in clocks.items() if c["state"] == "compared"]
    assert {"mic", "imu"} <= set(compared)       # estimated by DTW, checked vs the calibration
    for s in compared:
        assert clocks[s]["error_ms"] <= rep["thresholds"]["max_offset_ms"]
    streams = {s["stream"]: s for s in rep["streams"]}
    assert streams["imu"]["duplicates"] == 1 and streams["imu"]["out_of_order"] == 1
    assert streams["imu"]["rate_hz"] == pytest.approx(200, rel=0.02)
    assert {c["name"] for c in rep["checks"]} >= {"calibration", "drops:cam1", "clock:mic",
                                                  "missing:cam1", "dead_letters"}
    assert png_size(png) == (1400, 800)


@pytest.mark.slow
def test_wrong_declared_offset_fails_clock_check(rec, tmp_path):
    d = variant(rec, tmp_path, "offset")
    cal = yaml.safe_load((d / "calibration.yaml").read_text())
    cal["clocks"]["mic"]["offset_ns"] += 300_000_000          # 300 ms off
    (d / "calibration.yaml").write_text(yaml.safe_dump(cal))
    p = align_check(d / "manifest.yaml", "--no-color")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert "FAILED" in p.stdout and "clock:mic" in p.stdout.splitlines()[-1]
    line = next(x for x in p.stdout.splitlines() if x.startswith("clock:mic"))
    assert "FAIL" in line and "> 40 ms" in line


@pytest.mark.slow
def test_heavy_drops_and_broken_calibration_fail_their_checks(rec, tmp_path):
    d = variant(rec, tmp_path, "drops")
    idx = d / "cam1" / "timestamps.txt"
    lines = idx.read_text().splitlines()
    keep = [x for i, x in enumerate(lines) if not (20 <= i < 80 and i % 3)]   # 40 of 60 gone
    idx.write_text("\n".join(keep) + "\n")
    cal = yaml.safe_load((d / "calibration.yaml").read_text())
    cal["cameras"] = {"cam1": {
        "intrinsics": {"image_size": [320, 240], "K": [[300, 0, 160], [0, 300, 120], [0, 0, 1]]},
        "extrinsics": {"frame": "rig", "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 2]],
                       "translation": [0, 0, 0]}}}
    (d / "calibration.yaml").write_text(yaml.safe_dump(cal))
    p = align_check(d / "manifest.yaml", "--json", "--no-estimate")
    assert p.returncode == 1, p.stderr[-3000:]
    rep = report_of(p)
    assert "drops:cam1" in rep["failed"] and "calibration" in rep["failed"]
    assert "drops:cam0" not in rep["failed"] and "drops:imu" not in rep["failed"]
    cam1 = next(s for s in rep["streams"] if s["stream"] == "cam1")
    assert cam1["dropped"] >= 40
    msg = next(c["message"] for c in rep["checks"] if c["name"] == "calibration")
    assert "calibration.yaml" in msg and "rotation" in msg
    assert all(c["state"] in ("reference", "not estimated") for c in rep["clocks"])


@pytest.mark.slow
def test_garbage_input_exits_2_with_one_sentence(tmp_path):
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)) * 4)
    p = align_check(junk)
    assert p.returncode == 2 and p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("align-check: ") and str(junk) in err[0]
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_backfill_output_passes_with_expectations(rec, good, tmp_path):
    from mmalign.pipelines import backfill

    out = tmp_path / "out"
    # the same recording with spatial registration of cam1 onto cam0 (the backfill's stage)
    m = yaml.safe_load((rec / "manifest.yaml").read_text())
    m["registration"] = {"reference": "cam0", "cameras": ["cam1"]}
    (rec / "manifest_reg.yaml").write_text(yaml.safe_dump(m))
    backfill.run([rec / "manifest_reg.yaml"], out, run_id="align-check-test")
    p = align_check(out, "--json", script=SCRIPT.exists())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = report_of(p)
    ex = rep["expectations"]
    assert ex["state"] == "run" and ex["success"] and ex["evaluated"] > 20
    assert {r["expectation"] for r in ex["results"]} >= {
        "expect_column_values_to_be_increasing", "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_between", "expect_column_values_to_be_in_set"}
    reg = rep["registration"]
    assert reg["state"] == "run" and [c["camera"] for c in reg["cameras"]] == ["cam1"]
    assert reg["cameras"][0]["ok"] > 0 and reg["cameras"][0]["failed"] == 0
    assert {c["name"]: c["status"] for c in rep["checks"]}["reg_rmse:cam1"] == "pass"
    assert "Calculating Metrics" not in p.stderr              # GX kept quiet
    # the summary names the manifest: the recording's own rates and drops are in the report
    streams = {s["stream"]: s for s in rep["streams"]}
    assert streams["imu"]["rate_hz"] > 0 and streams["cam1"]["dropped"] is not None
    assert any(c["name"] == "drops:cam1" for c in rep["checks"])
    # the recording's preview (align kernels on the declared clocks) equals the backfill
    preview = {a["stream"]: a["status"] for a in report_of(good[0])["alignment"]}
    assert {a["stream"]: a["status"] for a in rep["alignment"]} == preview
