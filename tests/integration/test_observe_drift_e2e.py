"""align-check --baseline as a user runs it: generated recordings backfilled; an unchanged
second session (another seed, same generator) passes with p > 0.05, a session whose IMU was
re-mounted (accelerometer x/y biased) fails with exit 1, and --save-baseline then
--baseline FILE gives the same verdict and numbers. The statistics: tests/unit/observe/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mmalign.pipelines import backfill
from mmalign.pipelines.align_check import run_check
from mmalign.pipelines.align_report import Thresholds
from mmalign.pipelines.drift import BASELINE_FORMAT
from mmalign.pipelines.sample_recording import generate_recording

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "align_report.schema.json").read_text())
BIAS = 1.0            # m/s² added to ax and ay: about 2 sd of the generated motion


def align_check(*args) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "mmalign.pipelines.align_check", "--json",
                        "--no-expectations", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode in (0, 1), p.stdout[-2000:] + p.stderr[-2000:]
    rep = json.loads(p.stdout)
    jsonschema.validate(rep, SCHEMA)
    assert rep["exit_code"] == p.returncode
    return p.returncode, rep


def bias_imu(csv: Path, bias: float) -> int:
    """Add ``bias`` to ax and ay of every finite row (planted bad rows stay as they are)."""
    lines = csv.read_text().splitlines()
    changed = 0
    for i, line in enumerate(lines[1:], 1):
        f = line.split(",")
        try:
            ax, ay = float(f[1]), float(f[2])
        except (IndexError, ValueError):
            continue
        if ax == ax and ay == ay:                       # not NaN
            f[1], f[2] = f"{ax + bias:.6f}", f"{ay + bias:.6f}"
            lines[i] = ",".join(f)
            changed += 1
    csv.write_text("\n".join(lines) + "\n")
    return changed


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift")
    out = {}
    for name, seed in (("base", 5), ("same", 6), ("shifted", 7)):
        manifest = generate_recording(root / name, seed=seed, duration_s=8.0,
                                      session=f"drift-{name}")
        if name == "shifted":
            assert bias_imu(manifest.parent / "imu.csv", BIAS) > 1000
        out[name] = root / f"out-{name}"
        backfill.run([manifest], out[name], run_id=f"drift-{name}")
    return out


def _imu(rep: dict) -> dict:
    (r,) = [s for s in rep["drift"]["streams"] if s["stream"] == "imu"]
    return r


@pytest.mark.slow
def test_baseline_output_unchanged_passes_shifted_fails(outputs, tmp_path) -> None:
    rc, rep = align_check(outputs["same"], "--baseline", outputs["base"])
    imu = _imu(rep)
    assert rc == 0 and "drift:imu" not in rep["failed"], imu
    assert imu["p_value"] > 0.05 and imu["status"] == "ok"
    assert imu["source"] == "values" and imu["n"] >= 200 and imu["n_baseline"] >= 200
    assert rep["drift"]["baseline_kind"] == "output"
    assert {c["name"]: c["status"] for c in rep["checks"]}["drift:imu"] == "pass"

    rc, rep = align_check(outputs["shifted"], "--baseline", outputs["base"])
    shifted = _imu(rep)
    assert rc == 1 and "drift:imu" in rep["failed"], shifted
    assert shifted["status"] == "drift"
    assert shifted["mmd2"] > rep["drift"]["thresholds"]["max_mmd"]
    assert shifted["p_value"] < rep["drift"]["thresholds"]["max_p_value"]
    assert shifted["psi"] > imu["psi"]
    # nothing else failed: the shift is a drift, not an alignment problem
    assert rep["failed"] == ["drift:imu"]

    # the baseline's statistics saved, then used: same verdicts, same numbers
    stats = tmp_path / "base.json"
    rc, rep = align_check(outputs["base"], "--save-baseline", stats)
    assert rc == 0 and rep["drift"]["saved"] == str(stats) and rep["drift"]["streams"] == []
    assert json.loads(stats.read_text())["format"] == BASELINE_FORMAT
    assert "imu" in json.loads(stats.read_text())["streams"]
    rc, rep = align_check(outputs["shifted"], "--baseline", stats)
    again = _imu(rep)
    assert rc == 1 and rep["drift"]["baseline_kind"] == "statistics"
    assert again["status"] == "drift" and again["n"] == shifted["n"]
    assert again["mmd2"] == pytest.approx(shifted["mmd2"], abs=1e-5)
    assert again["p_value"] == pytest.approx(shifted["p_value"])
    same = run_check(str(outputs["same"]), Thresholds(), expectations=False,
                     baseline=str(stats))
    assert same["ok"] and _imu(same)["status"] == "ok"
    assert _imu(same)["p_value"] == pytest.approx(imu["p_value"])


@pytest.mark.slow
def test_thresholds_from_the_command_line(outputs) -> None:
    # a looser MMD threshold than the shift's score passes the shifted session (the options
    # override deploy/slo.yaml); too few rows required: not judged
    rep = run_check(str(outputs["shifted"]), Thresholds(max_drift_mmd=10.0),
                    expectations=False, baseline=str(outputs["base"]))
    assert rep["ok"] and _imu(rep)["status"] == "ok"
    rep = run_check(str(outputs["shifted"]), Thresholds(min_drift_samples=10_000),
                    expectations=False, baseline=str(outputs["base"]))
    assert _imu(rep)["status"] == "too_few"
    assert {c["name"]: c["status"] for c in rep["checks"]}["drift:imu"] == "skip"
