"""The commands on bad input, as a user runs them: exit 2 with one sentence on stderr and no
traceback, before anything touches the disk (run ids and consumer groups that are no names, a
manifest that widens its roots, missing inputs); a run that aligns nothing exits 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mmalign.pipelines import cli
from mmalign.pipelines.sample_recording import generate_recording
from tests.cli import run_mmalign


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("cli") / "rec", duration_s=4,
                              seed=6).parent


@pytest.fixture
def out(tmp_path) -> Path:
    """An existing output folder with a file that must survive every bad command."""
    o = tmp_path / "out"
    (o / "aligned").mkdir(parents=True)
    (o / "keep.txt").write_text("keep")
    (tmp_path / "sibling.txt").write_text("sibling")
    return o


def untouched(out: Path) -> None:
    assert (out / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in out.iterdir()) == ["aligned", "keep.txt"]
    assert (out.parent / "sibling.txt").read_text() == "sibling"


def one_sentence(capsys, *words: str) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1, cap.err
    assert err[0].startswith("mmalign: ") and "Traceback" not in cap.err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("run_id", ["..", ".", "../..", "/tmp", "a/b", "", ".staging", "x y"])
def test_backfill_run_id_that_is_no_name_exits_2_and_touches_nothing(rec, out, capsys, run_id):
    code = cli.main(["backfill", "--manifest", str(rec / "manifest.yaml"), "--out", str(out),
                     "--run-id", run_id])
    assert code == 2
    one_sentence(capsys, "--run-id", "not a valid name")
    untouched(out)


def test_absolute_run_id_naming_an_existing_folder_is_refused(rec, out, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    assert cli.main(["backfill", "--manifest", str(rec / "manifest.yaml"), "--out", str(out),
                     "--run-id", str(victim)]) == 2
    one_sentence(capsys, "--run-id")
    assert (victim / "precious").read_text() == "x"
    untouched(out)


@pytest.mark.parametrize("flag,value", [("--run-id", ".."), ("--group-id", ".."),
                                        ("--group-id", "/etc"), ("--run-id", "a/../b")])
def test_stream_names_are_checked_before_kafka_or_disk(rec, out, capsys, flag, value):
    code = cli.main(["stream", "--manifest", str(rec / "manifest.yaml"), "--out", str(out),
                     "--bootstrap-servers", "127.0.0.1:1", flag, value])
    assert code == 2
    one_sentence(capsys, flag, "not a valid name")
    untouched(out)


def _manifest(rec: Path, tmp_path: Path, mutate) -> Path:
    d = tmp_path / "rec"
    shutil.copytree(rec, d)
    data = yaml.safe_load((d / "manifest.yaml").read_text())
    mutate(data, d)
    (d / "manifest.yaml").write_text(yaml.safe_dump(data))
    return d / "manifest.yaml"


def _stream(data: dict, sid: str) -> dict:
    return next(s for s in data["streams"] if s["id"] == sid)


@pytest.mark.parametrize("mutate,words", [
    (lambda d, _: d.__setitem__("base_dir", "/etc"), ["field 'base_dir'"]),
    (lambda d, _: _stream(d, "cam0").__setitem__("files", ["cam0.mp4", "missing.mp4"]),
     ["field 'streams[cam0].files[1]'", "missing.mp4", "does not exist"]),
    (lambda d, _: _stream(d, "mic").__setitem__("files", ["/etc/passwd"]),
     ["streams[mic].files[0]", "outside the allowed roots"]),
    (lambda d, _: _stream(d, "imu")["options"].__setitem__("strat_ns", 0), ["strat_ns"]),
    (lambda d, _: _stream(d, "transcript").__setitem__("format", "txt"),
     ["streams[transcript].format", "'srt'"]),
])
@pytest.mark.parametrize("command", ["backfill", "publish"])
def test_bad_manifest_exits_2_before_the_pipeline(rec, tmp_path, out, capsys, mutate, words,
                                                   command):
    m = _manifest(rec, tmp_path, mutate)
    args = (["backfill", "--manifest", str(m), "--out", str(out), "--run-id", "r1"]
            if command == "backfill" else
            ["publish", "--manifest", str(m), "--bootstrap-servers", "127.0.0.1:1"])
    assert cli.main(args) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and str(m) in err[0] and "Traceback" not in cap.err, cap.err
    assert all(w in err[0] for w in words), err[0]
    untouched(out)


def test_backfill_missing_file_as_a_user_runs_it(rec, tmp_path):
    """One real process: exit 2, one sentence on stderr, no traceback, no output folder."""
    m = _manifest(rec, tmp_path, lambda d, _: _stream(d, "mic").__setitem__("files",
                                                                            ["gone.wav"]))
    out = tmp_path / "o"
    p = run_mmalign("backfill", "--manifest", m, "--out", out, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "streams[mic].files[0]" in err[0] and "gone.wav" in err[0]
    assert "Traceback" not in p.stderr and not out.exists()


@pytest.mark.slow
def test_backfill_that_aligns_nothing_exits_1(rec, tmp_path, capsys):
    """The tick source's only file is unreadable: the run finishes with 0 rows -> exit 1."""
    m = _manifest(rec, tmp_path, lambda d, folder: (folder / "cam0.mp4").write_bytes(
        b"\0" * 4096))
    out = tmp_path / "o"
    assert cli.main(["backfill", "--manifest", str(m), "--out", str(out), "--run-id", "r1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "demo-001" in err[0] and "no aligned rows" in err[0], err
    assert (out / "summary.json").is_file()
