"""``mmalign backfill --workers N``: several sessions in forked worker processes give the same
outputs as one process, a failing or killed worker fails the run and keeps the previous
output, and the option refuses what it cannot do."""

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill, session_workers
from mmalign.pipelines.core import prepare
from mmalign.pipelines.runners import RunnerConfigError
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.encoders import EncodersConfig
from mmalign.schemas.layout import ALIGNED, DEADLETTER
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import ROOT, run_mmalign
from tests.opencv_doc_data import street_session
from tests.processes import kill_and_check_workers

pytestmark = pytest.mark.slow

SESSIONS = {"walk-a": (11, 12.0), "walk-b": (12, 8.0), "walk-c": (13, 6.0)}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    return [generate_recording(tmp / s, seed=seed, duration_s=d, session=s)
            for s, (seed, d) in SESSIONS.items()]


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """A session of real material: opencv-doc's street camera (vtest.avi, XVID, 795 frames)
    and espeak-ng speech as its microphone."""
    return street_session(tmp_path_factory.mktemp("street"),
                          "People walk along the street past the shop windows "
                          "while the camera records them from above.")


@pytest.fixture(scope="module")
def every(recordings, street):
    return [*recordings, street]


@pytest.fixture(scope="module")
def serial(every, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    return out, backfill.run(every, out, run_id="same", progress=False)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _letters(root: Path):
    t = read_dead_letters(root / DEADLETTER).to_pandas()
    return t.drop(columns=[c for c in ("created_at_ns",) if c in t.columns]) \
        .sort_values(["session_id", "stream_id", "stage", "position", "reason", "message",
                     "event_time_ns"]).reset_index(drop=True)


def test_cli_workers_match_one_process(every, serial, tmp_path):
    out1, s1 = serial
    out2 = tmp_path / "out"
    args = ["backfill", "--workers", "2", "--out", out2, "--run-id", "same", "--json",
            "--no-progress"]
    for m in every:
        args += ["--manifest", m]
    res = run_mmalign(*args)
    assert res.returncode == 0, res.stderr
    s2 = json.loads(res.stdout)
    # four sessions over two processes, by bytes: the street video (8 MB) against the rest
    assert s2["workers"] == [["street"], ["walk-a", "walk-b", "walk-c"]]
    assert "workers" not in s1
    street = read_aligned(out1 / ALIGNED, "street")
    assert street.num_rows == 795                            # every frame of vtest.avi a tick
    assert set(street.column("mic__status").to_pylist()) >= {"ok"}
    for key in ("aligned_rows", "dead_letters", "dead_letters_by_reason", "accounting",
                "written", "counters", "status_by_stream", "sessions", "streams"):
        assert s2[key] == s1[key], key
    assert all(w["balanced"] for w in s2["written"].values())
    assert s2["aligned_rows"] > 700 and s2["dead_letters"] > 0
    assert _files(out2 / ALIGNED) == _files(out1 / ALIGNED)
    for f in _files(out1 / ALIGNED):              # file for file, metadata included
        a, b = pq.read_table(out1 / ALIGNED / f), pq.read_table(out2 / ALIGNED / f)
        assert a.equals(b) and a.schema.metadata == b.schema.metadata, f
    assert read_aligned(out2 / ALIGNED).num_rows == s1["aligned_rows"]
    assert _letters(out2).equals(_letters(out1))
    assert not (out2 / ".staging").exists() or not any((out2 / ".staging").iterdir())


def test_killed_worker_fails_the_run_and_keeps_the_previous_output(recordings, serial,
                                                                  tmp_path, monkeypatch):
    out = tmp_path / "out"
    backfill.run(recordings[:2], out, run_id="first", progress=False)
    before = {f: (out / f).read_bytes() for f in _files(out) if f.startswith(ALIGNED)}
    real = session_workers._worker

    def dies_on_b(index, job, *a):
        if "walk-b" in job.plans:
            os._exit(9)           # as an out-of-memory kill would: no report, no clean-up
        real(index, job, *a)

    monkeypatch.setattr(session_workers, "_worker", dies_on_b)
    with pytest.raises(session_workers.WorkerFailed, match=r"walk-b.*exited with code 9"):
        backfill.run(recordings[:2], out, run_id="second", progress=False, workers=2)
    after = {f: (out / f).read_bytes() for f in _files(out) if f.startswith(ALIGNED)}
    assert after == before
    assert not (out / ".staging" / "second").exists()


def test_worker_error_is_raised_in_the_parent(recordings, tmp_path, monkeypatch):
    def build_fails(p, job, staging, observe=None):
        raise ValueError(f"no disk for {sorted(job.plans)}")

    monkeypatch.setattr(backfill, "build", build_fails)
    with pytest.raises(ValueError, match=r"no disk for \['walk-(a|b)'\]"):
        backfill.run(recordings[:2], tmp_path / "out", progress=False, workers=2)
    assert not any((tmp_path / "out" / ".staging").glob("*"))


def test_workers_refuse_what_they_cannot_do(recordings, tmp_path):
    with pytest.raises(RunnerConfigError, match="local runner only"):
        backfill.run(recordings[:2], tmp_path / "o", runner="FlinkRunner", workers=2)
    with pytest.raises(RunnerConfigError, match="1 or more"):
        backfill.run(recordings[:2], tmp_path / "o", workers=0)
    res = run_mmalign("backfill", "--workers", "none", "--manifest", recordings[0], "--out",
                      tmp_path / "o")
    assert res.returncode == 2 and "'none': a number of processes" in res.stderr
    job = prepare(recordings, tmp_path / "o")
    # auto (the command's default): one per core where workers apply, else quietly one
    assert session_workers.resolve_workers(None, "DirectRunner", None, job) \
        == session_workers.cores()
    assert session_workers.resolve_workers(None, "FlinkRunner", None, job) == 1
    job.manifests[0] = job.manifests[0].model_copy(update={"encoders": EncodersConfig(
        feature_store={"enabled": True})})
    assert session_workers.resolve_workers(None, "DirectRunner", None, job) == 1
    with pytest.raises(RunnerConfigError, match="feature store"):
        session_workers.resolve_workers(2, "DirectRunner", None, job)


def test_cli_default_uses_every_core(recordings, tmp_path):
    args = ["backfill", "--out", tmp_path / "out", "--json", "--no-progress"]
    for m in recordings:
        args += ["--manifest", m]
    res = run_mmalign(*args)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    n = min(session_workers.cores(), len(recordings))
    assert len(s.get("workers", [[]])) == n


def test_session_groups_balance_source_bytes(recordings, tmp_path):
    job = prepare(recordings, tmp_path / "o")
    assert session_workers.session_groups(job, 2) == [["walk-a"], ["walk-b", "walk-c"]]
    assert session_workers.session_groups(job, 8) == [["walk-a"], ["walk-b"], ["walk-c"]]
    assert session_workers.spread(job, 1) is None
    assert session_workers.spread(job.subset(["walk-b"]), 2) is None    # one session
    sub = job.subset(["walk-c", "walk-a"])
    assert sorted(sub.plans) == ["walk-a", "walk-c"] and sub.metadata() == job.metadata()
    assert {r.session_id for r in sub.sources} == {"walk-a", "walk-c"}


def test_progress_line_sums_the_workers(recordings, tmp_path, capsys):
    summary = backfill.run(recordings, tmp_path / "out", progress=True, progress_every_s=0.3,
                           workers=2)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("backfill:")]
    decoded = [int(ln.split("decoded ")[1].split(" records")[0].replace(",", ""))
               for ln in lines]
    assert decoded and max(decoded) > 0, lines
    assert decoded == sorted(decoded)                 # counts only grow
    assert max(decoded) <= sum(a["records_in"] for a in summary["accounting"].values())


# The CLI with each worker's pipeline held for a minute before it starts: a worker that
# outlived its killed parent would still be there 10 s later.
SLOW_WORKERS = """
import sys, time
import mmalign.pipelines.backfill as b
real = b.build
def build(p, job, staging, observe=None):
    time.sleep(60)
    return real(p, job, staging, observe)
b.build = build
from mmalign.pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_workers_die_with_a_killed_backfill(recordings, tmp_path):
    """SIGKILL the command while its workers run: no worker lives on to write into the
    staging folder that the next command recovers."""
    cmd = [sys.executable, "-c", SLOW_WORKERS, "backfill", "--workers", "2",
           "--out", str(tmp_path / "out"), "--no-progress"]
    for m in recordings:
        cmd += ["--manifest", str(m)]
    kill_and_check_workers(cmd, ROOT)

