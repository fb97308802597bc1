"""``mmalign backfill --slice-s S``: sessions run in time slices over forked workers
(pipelines/time_slices.py) and give the same outputs as whole sessions in one process, on
generated material (with DTW-sync, with approximate-time sets) and on real material; a failing
or killed worker fails the run and keeps the previous output; the option refuses what it cannot
do, and auto slices only long recordings."""

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill, session_workers, time_slices
from mmalign.pipelines.core import prepare
from mmalign.pipelines.runners import RunnerConfigError
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.layout import ALIGNED, DEADLETTER
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import ROOT, run_mmalign
from tests.opencv_doc_data import street_session
from tests.processes import kill_and_check_workers

pytestmark = pytest.mark.slow

SAME = ("aligned_rows", "dead_letters", "dead_letters_by_reason", "accounting", "written",
        "counters", "status_by_stream", "sessions", "streams")


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """A 30 s generated recording: a camera and its audio track, an image-sequence camera, a
    microphone, an IMU and subtitles, with the generator's bad records (letters)."""
    return generate_recording(tmp_path_factory.mktemp("walk") / "rec", seed=21,
                              duration_s=30.0, session="walk")


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """Real material: opencv-doc's street camera (vtest.avi, XVID, 795 frames at 10 fps, so
    79.5 s) and espeak-ng speech as its microphone."""
    return street_session(tmp_path_factory.mktemp("street"),
                          "People walk along the street past the shop windows "
                          "while the camera records them from above, and a bus passes by.",
                          {"policies": {"mic": {"policy": "audio_window", "window_ms": 250}}})


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    """A 40 s generated recording whose clocks are not declared: DTW-sync fits them (cam1,
    mic, imu and the transcript against cam0's audio track, offsets of seconds, drifts of
    hundreds of ppm)."""
    return generate_recording(
        tmp_path_factory.mktemp("drifting") / "rec", seed=23, duration_s=40.0,
        session="drifting", declare_clocks=False, size=(160, 120), fps=15.0, imu_hz=100.0,
        mic_rate=8000, clocks={"cam1": {"offset_ns": -1_700_000_000, "drift_ppm": 180.0},
                               "mic": {"offset_ns": 2_350_000_000, "drift_ppm": -250.0},
                               "imu": {"offset_ns": -1_200_000_000, "drift_ppm": 290.0}},
        sync={"cam1": {"reference": "cam0_audio"}})


@pytest.fixture(scope="module")
def pairs(walk):
    """The walk recording with approximate-time sets of cam1 and imu as its ticks."""
    doc = yaml.safe_load(walk.read_text())
    doc["session"] = "pairs"
    doc["alignment"]["ticks"] = {"sets": {"streams": ["cam1", "imu"], "max_span_ms": 3.0,
                                          "queue_size": 32}}
    path = walk.parent / "pairs.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def every(walk, street, drifting, pairs):
    return [walk, street, drifting, pairs]


@pytest.fixture(scope="module")
def whole(every, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    return out, backfill.run(every, out, run_id="same", progress=False, slice_s=0)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _letters(root: Path):
    t = read_dead_letters(root / DEADLETTER).to_pandas()
    return t.drop(columns=["created_at_ns"]).reset_index(drop=True)


def assert_same_output(out1: Path, s1: dict, out2: Path, s2: dict) -> None:
    """Two runs wrote the same files (tables and Parquet metadata), letters and counts."""
    for key in SAME:
        assert s2[key] == s1[key], key
    assert all(w["balanced"] for w in s2["written"].values())
    assert all(a["balanced"] for a in s2["accounting"].values())
    assert _files(out2 / ALIGNED) == _files(out1 / ALIGNED)
    for f in _files(out1 / ALIGNED):
        a, b = pq.read_table(out1 / ALIGNED / f), pq.read_table(out2 / ALIGNED / f)
        assert a.equals(b) and a.schema.metadata == b.schema.metadata, f
    # one file per session, sorted as a whole run sorts it: equal row for row
    assert _files(out2 / DEADLETTER) == _files(out1 / DEADLETTER)
    assert _letters(out2).equals(_letters(out1))
    assert not (out2 / ".staging").exists() or not any((out2 / ".staging").iterdir())


def test_cli_slices_on_two_workers_match_whole_sessions(every, whole, tmp_path):
    out1, s1 = whole
    out2 = tmp_path / "out"
    args = ["backfill", "--out", out2, "--run-id", "same", "--slice-s", "10", "--workers", "2",
            "--json", "--no-progress"]
    for m in every:
        args += ["--manifest", m]
    res = run_mmalign(*args)
    assert res.returncode == 0, res.stderr
    s2 = json.loads(res.stdout)
    assert "slices" not in s1
    sl = s2["slices"]
    assert sl["slice_s"] == 10.0 and sl["workers"] == 2
    # 30 s and 79.5 s in slices of 3 buckets (12 s), plus the buckets the margins reach
    by_session = {s: [x["buckets"] for x in sl["slices"] if x["session"] == s]
                  for s in ("walk", "street")}
    assert len(by_session["walk"]) >= 3 and len(by_session["street"]) >= 7
    for spans in by_session.values():          # the slices tile the session's buckets
        spans.sort()
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    street_rows = read_aligned(out2 / ALIGNED, "street")
    assert street_rows.num_rows == 795                       # every frame of vtest.avi a tick
    assert set(street_rows.column("mic__status").to_pylist()) >= {"ok"}
    assert s2["dead_letters"] > 0 and s2["aligned_rows"] > 1500
    # DTW-sync fitted the drifting session's clocks, the same fits as the whole run's
    fits = s2["sync"]
    assert {k for k in fits if k.startswith("drifting/")} >= {"drifting/cam1", "drifting/mic"}
    assert fits == s1["sync"]
    assert not any(r["fell_back"] for k, r in fits.items() if k in ("drifting/cam1",
                                                                    "drifting/mic"))
    assert _files(out2 / "sync") == _files(out1 / "sync")
    # the sets session's ticks are its sets
    sets = read_aligned(out2 / ALIGNED, "pairs").to_pandas()
    assert len(sets) > 200 and sets["cam1__pos"].is_unique and sets["imu__pos"].is_unique
    assert_same_output(out1, s1, out2, s2)


def test_slices_in_one_worker_match_whole_sessions(every, whole, tmp_path):
    out1, s1 = whole
    out2 = tmp_path / "out"
    s2 = backfill.run(every, out2, run_id="same", progress=False, slice_s=7, workers=1)
    assert s2["sync"] == s1["sync"]
    assert s2["slices"]["workers"] == 1
    assert_same_output(out1, s1, out2, s2)


def test_auto_slices_long_recordings_only(street, walk, tmp_path, monkeypatch):
    job = prepare([street], tmp_path / "o")
    assert 79 < time_slices.probed_seconds(job) < 80          # vtest.avi's header
    assert time_slices.resolve_slices(None, job, "DirectRunner", None) is None   # < 120 s
    monkeypatch.setattr(time_slices, "DEFAULT_SLICE_S", 30.0)   # then 79.5 s is "long"
    assert time_slices.resolve_slices(None, job, "DirectRunner", None) == 30.0
    s = backfill.run([street], tmp_path / "out", progress=False, slice_s=None, workers=None)
    assert s["slices"]["slice_s"] == 30.0 and s["slices"]["workers"] == session_workers.cores()
    assert s["aligned_rows"] == 795
    # not where the sessions must run whole or the workers cannot apply
    assert time_slices.resolve_slices(None, job, "FlinkRunner", None) is None
    assert time_slices.resolve_slices(0, job, "DirectRunner", None) is None


def test_slice_option_refuses_what_it_cannot_do(walk, tmp_path):
    with pytest.raises(RunnerConfigError, match="--slice-s 10 runs .* local runner only"):
        time_slices.resolve_slices(10, prepare([walk], tmp_path / "o"), "FlinkRunner", None)
    with pytest.raises(RunnerConfigError, match="--slice-s must be"):
        time_slices.resolve_slices(float("nan"), prepare([walk], tmp_path / "o"),
                                   "DirectRunner", None)
    for bad in ("-1", "nan", "inf", "x"):
        res = run_mmalign("backfill", "--manifest", walk, "--out", tmp_path / "out",
                          "--slice-s", bad)
        assert res.returncode == 2 and "--slice-s" in res.stderr, (bad, res.stderr)
    assert not (tmp_path / "out" / ALIGNED).exists()


def test_killed_worker_fails_the_run_and_keeps_the_previous_output(walk, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "out"
    backfill.run([walk], out, run_id="first", progress=False, slice_s=0)
    before = {f: (out / f).read_bytes() for f in _files(out) if f.startswith(ALIGNED)}

    def dies(p, job, *a):
        os._exit(9)             # as an out-of-memory kill would: no report, no clean-up

    monkeypatch.setattr(time_slices, "build_slices", dies)   # the workers fork with it
    with pytest.raises(session_workers.WorkerFailed, match=r"exit code .*9"):
        backfill.run([walk], out, run_id="second", progress=False, slice_s=10, workers=2)
    after = {f: (out / f).read_bytes() for f in _files(out) if f.startswith(ALIGNED)}
    assert after == before
    assert not (out / ".staging" / "second").exists()


def test_task_error_is_raised_in_the_parent(walk, tmp_path, monkeypatch):
    def fails(p, job, *a):
        raise ValueError(f"no disk for {sorted(job.plans)}")

    monkeypatch.setattr(time_slices, "build_slices", fails)
    with pytest.raises(ValueError, match=r"no disk for \['walk'\]"):
        backfill.run([walk], tmp_path / "out", progress=False, slice_s=10, workers=2)
    assert not any((tmp_path / "out" / ".staging").glob("*"))


def test_progress_line_sums_the_workers(walk, tmp_path, capsys):
    summary = backfill.run([walk], tmp_path / "out", progress=True, progress_every_s=0.3,
                           slice_s=10, workers=2)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("backfill:")]
    decoded = [int(ln.split("decoded ")[1].split(" records")[0].replace(",", ""))
               for ln in lines]
    assert decoded and max(decoded) > 0, lines
    assert decoded == sorted(decoded)                 # counts only grow
    assert max(decoded) <= sum(a["records_in"] for a in summary["accounting"].values())


# The CLI with each slice worker's streams pipeline held for a minute before it starts: a
# worker that outlived its killed parent would still be there 10 s later.
SLOW_SLICES = """
import sys, time
import mmalign.pipelines.time_slices as ts
real = ts.build_streams
def build_streams(*a):
    time.sleep(60)
    return real(*a)
ts.build_streams = build_streams
from mmalign.pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_slice_workers_die_with_a_killed_backfill(walk, tmp_path):
    cmd = [sys.executable, "-c", SLOW_SLICES, "backfill", "--workers", "2", "--slice-s", "10",
           "--out", str(tmp_path / "out"), "--manifest", str(walk), "--no-progress"]
    kill_and_check_workers(cmd, ROOT)
    # the next run recovers the killed run's staging folder (spill files included)
    backfill.run([walk], tmp_path / "out", progress=False, slice_s=0)
    assert not any((tmp_path / "out" / ".staging").glob("*"))

