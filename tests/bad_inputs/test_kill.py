"""SIGKILL a backfill at random points, the final commit included: the output is then the
previous complete output or the new complete output (after the recovery every mmalign
command runs first), never a mix; a rerun succeeds and leaves no leftovers."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.commit import JOURNAL, STAGING, recover
from mmalign.transforms.io.parquet import read_aligned

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI with every filesystem rename of the commit slowed down, so a kill can land
# inside the commit (the commit itself takes milliseconds).
SLOW_COMMIT = """
import os, sys, time
import mmalign.transforms.io.commit as c
real = os.replace
def slow(a, b):
    time.sleep(0.15)
    return real(a, b)
c.os = type(os)("os_slow")
c.os.__dict__.update(os.__dict__)
c.os.replace = slow
from mmalign.pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def state(out: Path) -> tuple:
    """What a reader sees, after the recovery a reader runs first."""
    recover(out)
    aligned = read_aligned(out / "aligned")
    dead = read_dead_letters(out / "deadletter").drop_columns(["created_at_ns", "run_id"])
    summary = (out / "summary.json").read_text() if (out / "summary.json").exists() else ""
    return aligned.to_pylist(), dead.to_pylist(), '"run_id"' in summary


def backfill(manifest: Path, out: Path, run_id: str, slow: bool = False) -> subprocess.Popen:
    args = ["backfill", "--manifest", str(manifest), "--out", str(out), "--run-id", run_id]
    cmd = ([sys.executable, "-c", SLOW_COMMIT, *args] if slow
           else [sys.executable, "-m", "mmalign.pipelines.cli", *args])
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_anywhere_leaves_old_or_new(tmp_path):
    rec = generate_recording(tmp_path / "rec", duration_s=4.0, seed=3, size=(160, 120),
                             fps=20.0)
    doc = yaml.safe_load(rec.read_text())
    doc["alignment"]["bucket_s"] = 2.5              # the new run: other buckets, other files
    doc["alignment"]["policies"]["cam1"]["tolerance_ms"] = 5.0
    rec_new = rec.with_name("manifest-new.yaml")
    rec_new.write_text(yaml.safe_dump(doc, sort_keys=False))

    old_out = tmp_path / "old"
    assert backfill(rec, old_out, "run-old").wait(300) == 0
    new_out = tmp_path / "new"
    t0 = time.monotonic()
    assert backfill(rec_new, new_out, "run-new").wait(300) == 0
    duration = time.monotonic() - t0
    old, new = state(old_out), state(new_out)
    assert old[0] != new[0]                         # the two outputs differ

    rng = random.Random(5)
    kills = [rng.uniform(0.5, duration) for _ in range(4)] + ["commit"] * 3
    seen = set()
    for i, when in enumerate(kills):
        out = tmp_path / f"k{i}"
        shutil.copytree(old_out, out)
        proc = backfill(rec_new, out, "run-new", slow=when == "commit")
        if when == "commit":
            # wait for the journal (the point of no return), then kill inside the commit
            journal = out / STAGING / "run-new" / JOURNAL
            deadline = time.monotonic() + 300
            while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            time.sleep(when)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
        got = state(out)
        assert got in (old, new), f"kill {i} at {when}: a mix of old and new"
        seen.add("new" if got == new else "old")
        assert not (out / STAGING).exists()
        assert not list(out.rglob(".*.old-*"))
        # a rerun succeeds and gives the new output
        rerun = backfill(rec_new, out, "run-new-2")
        assert rerun.wait(300) == 0, rerun.stderr.read().decode()[-2000:]
        assert state(out) == new
    assert "old" in seen
