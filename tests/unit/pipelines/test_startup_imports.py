"""A command's start-up imports no more than its runs need: scipy's signal, ndimage and
interpolate (~0.5-0.7 s a process) load on the first DTW-sync feature, not with the CLI
and the jobs' modules."""

from __future__ import annotations

import subprocess
import sys

LAZY = ("scipy.signal", "scipy.ndimage", "scipy.interpolate")

PROBE = """
import sys
import mmalign.pipelines.cli, mmalign.pipelines.backfill, mmalign.pipelines.time_slices
import mmalign.pipelines.stream, mmalign.pipelines.align_check
print(sorted(m for m in {lazy!r} if m in sys.modules))
from mmalign.transforms.clock import features
import numpy as np
features.moving_average(np.arange(10.0), 0.04, 100.0)
print(sorted(m for m in {lazy!r} if m in sys.modules))
"""


def test_the_commands_modules_leave_scipy_signal_for_dtw_sync():
    p = subprocess.run([sys.executable, "-c", PROBE.format(lazy=LAZY)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    before, after = p.stdout.splitlines()[-2:]
    assert before == "[]"
    assert after == "['scipy.ndimage']"          # loaded by the first feature that uses it
