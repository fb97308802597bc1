"""Beam Python pipelines on the local Flink job server (PortableRunner, LOOPBACK): batch and
streaming.

Fixture ``flink_job_server`` comes from tests/conftest_infra.py (registered by tests/conftest.py).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window
from apache_beam.transforms.periodicsequence import PeriodicImpulse

from mmalign.infra import REPO_ROOT


def _options(endpoint: str, streaming: bool = False) -> PipelineOptions:
    args = [
        "--runner=PortableRunner", f"--job_endpoint={endpoint}",
        "--environment_type=LOOPBACK", "--parallelism=2",
    ]  # fmt: skip
    return PipelineOptions([*args, "--streaming"] if streaming else args)


@pytest.mark.slow
def test_batch_create_map_group_by_key_write(flink_job_server: str, tmp_path: Path) -> None:
    records = [(f"s{i % 5}", i) for i in range(200)]
    with beam.Pipeline(options=_options(flink_job_server)) as p:
        (
            p
            | beam.Create(records)
            | beam.Map(lambda kv: (kv[0], kv[1] * 2))
            | beam.GroupByKey()
            | beam.MapTuple(lambda key, values: f"{key},{len(values)},{sum(values)}")
            | beam.io.WriteToText(str(tmp_path / "out"), file_name_suffix=".csv")
        )
    lines = [line for path in glob.glob(str(tmp_path / "out*.csv"))
             for line in Path(path).read_text().split()]
    expected = {
        f"s{k},40,{sum(2 * i for i in range(200) if i % 5 == k)}" for k in range(5)
    }
    assert sorted(lines) == sorted(expected)


class _AppendWindowed(beam.DoFn):
    """Appends ``<window start> <key> <value>`` lines to a file (LOOPBACK: same machine)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, kv, win=beam.DoFn.WindowParam):  # type: ignore[no-untyped-def]
        with open(self._path, "a") as out:
            out.write(f"{int(win.start)} {kv[0]} {kv[1]}\n")


@pytest.mark.slow
def test_streaming_periodic_impulse_windows_run_to_completion(
    flink_job_server: str, tmp_path: Path
) -> None:
    out = tmp_path / "windows.txt"
    start = (int(time.time()) // 2 + 2) * 2  # on a window edge, a little in the future
    with beam.Pipeline(options=_options(flink_job_server, streaming=True)) as p:
        (
            p
            | PeriodicImpulse(start_timestamp=start, stop_timestamp=start + 6, fire_interval=0.5)
            | beam.Map(lambda ts: ("ticks", 1))
            | beam.WindowInto(window.FixedWindows(2))
            | beam.GroupByKey()
            | beam.MapTuple(lambda key, ones: (key, sum(ones)))
            | beam.ParDo(_AppendWindowed(str(out)))
        )
    rows = sorted(line.split() for line in out.read_text().splitlines())
    assert rows == [[str(start + 2 * i), "ticks", "4"] for i in range(3)]


def test_cli_status_of_a_stopped_job_server(tmp_path: Path) -> None:
    env = {**os.environ, "MMALIGN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mmalign.infra.flink_jobserver", "status", "--json",
           "--job-port", "18099"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert '"running": false' in proc.stdout
    assert '"job_endpoint": "127.0.0.1:18099"' in proc.stdout
    assert '"expansion_endpoint": "127.0.0.1:18101"' in proc.stdout
