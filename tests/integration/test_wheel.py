"""The installed distribution: one top-level package, ``mmalign``; nothing that shadows the
PyPI distributions named schemas, transforms, encoders or pipelines."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_one_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True,
                   timeout=600)
    wheel = next((tmp_path / "dist").glob("mmalign-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mmalign"}
    for sub in ("schemas", "deadletter", "transforms", "encoders", "pipelines"):
        assert f"mmalign/{sub}/__init__.py" in names
    assert "mmalign/transforms/align/join.py" in names
    assert "mmalign/schemas/align_report.schema.json" in names
    assert not any(n.startswith("mmalign/tests/") for n in names)
    # a fresh venv, the wheel only (no dependencies): the namespace imports
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    out = subprocess.run([str(py), "-c", "import mmalign.transforms, mmalign.schemas; "
                          "import importlib.util as u; print(mmalign.transforms.__file__); "
                          "print([m for m in ('schemas', 'transforms', 'encoders', 'pipelines') "
                          "if u.find_spec(m)])"], cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    path, shadows = out.stdout.splitlines()
    assert str(env_dir) in path
    assert shadows == "[]"
