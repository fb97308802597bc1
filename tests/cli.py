"""The mmalign CLI as a user runs it: ``python -m mmalign.pipelines.cli`` in a subprocess started
from the repo root, its output captured as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_mmalign(*args, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``mmalign <args>`` and wait: ``env`` replaces the whole environment when given."""
    return subprocess.run([sys.executable, "-m", "mmalign.pipelines.cli", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
