"""align-check never passes a broken recording or output: 0 ticks, a tick source without valid
records, a stream that lost most of its records (dead letters counted by the records they stand
for), and bad input (broken clocks, junk summaries) is exit 2 with one sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from mmalign.pipelines.align_check import load_thresholds, main
from mmalign.pipelines.align_report import (
    FAIL,
    PASS,
    SKIP,
    Thresholds,
    dead_letter_stats,
    lost_checks,
    ticks_check,
)
from mmalign.pipelines.sample_recording import generate_recording

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "schemas" / "align_report.schema.json").read_text())

# 5 cues, 4 of them bad: invalid UTF-8, a broken time line, two that end before they start
FIVE_CUES_FOUR_BAD = (b"1\n00:00:00,500 --> 00:00:01,500\nhello\n\n"
                      b"2\n00:00:01,600 --> 00:00:01,100\nbackwards\n\n"
                      b"3\n00:00:02,000 --> 00:00:02,500\n\xff\xfe bad\n\n"
                      b"4\n00:00:xx,000 --> 00:00:03,000\nbroken time\n\n"
                      b"5\n00:00:03,200 --> 00:00:03,100\nbackwards too\n")


# ---------------------------------------------------------------- the plain parts


def test_dead_letter_rate_counts_the_records_letters_stand_for():
    d = dead_letter_stats(["decode", "validate"], ["truncated", "nan"], ["cam0", "imu"], 100,
                          [40, 1])
    assert d["total"] == 2 and d["records"] == 41 and d["rate"] == pytest.approx(0.41)
    old = dead_letter_stats(["decode"], ["x"], ["a"], 10)           # letters without counts
    assert old["records"] == 1 and old["rate"] == pytest.approx(0.1)


def test_lost_and_ticks_checks():
    th = Thresholds()
    got = {c.name: c for c in lost_checks([
        {"stream": "a", "records_in": 5, "lost": 4}, {"stream": "b", "records_in": 4, "lost": 2},
        {"stream": "c", "records_in": 0, "lost": 0}, {"stream": "d"}], th)}
    assert got["lost:a"].status == FAIL and "lost 4 of its 5 records" in got["lost:a"].message
    assert got["lost:b"].status == PASS                 # exactly half is not "most"
    assert got["lost:c"].status == SKIP and "lost:d" not in got
    assert lost_checks([{"stream": "a", "records_in": 5, "lost": 4}],
                       Thresholds(max_lost_rate=0.9))[0].status == PASS
    assert ticks_check({"s": 10}, {}).status == PASS
    bad = ticks_check({"s": 10, "t": 0}, {"t": "its tick source cam0 has no valid records"})
    assert bad.status == FAIL and "session t" in bad.message and "cam0" in bad.message
    assert ticks_check({}, {}).status == FAIL


def test_max_lost_rate_is_a_threshold_like_the_others(tmp_path):
    assert Thresholds().max_lost_rate == 0.5
    cfg = tmp_path / "gate.yaml"
    cfg.write_text("align_check:\n  max_lost_rate: 0.8\n")
    assert load_thresholds(str(cfg), {}).max_lost_rate == 0.8
    assert load_thresholds(str(cfg), {"max_lost_rate": 0.2}).max_lost_rate == 0.2
    cfg.write_text("max_lost_rate: .nan\n")
    with pytest.raises(ValueError, match="max_lost_rate"):
        load_thresholds(str(cfg), {})


# ---------------------------------------------------------------- recordings


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    """A 4 s recording without planted bad records (so every check holds on it)."""
    return generate_recording(tmp_path_factory.mktemp("ac") / "rec", duration_s=4, seed=8,
                              bad_records=False).parent


def variant(rec: Path, tmp_path: Path, edit) -> Path:
    d = tmp_path / "rec"
    shutil.copytree(rec, d)
    edit(d)
    return d / "manifest.yaml"


def run_json(capsys, *args) -> tuple[int, dict]:
    code = main([*map(str, args), "--json"])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    rep = json.loads(cap.out)
    jsonschema.validate(rep, SCHEMA)
    assert rep["exit_code"] == code
    return code, rep


def checks(rep: dict) -> dict[str, dict]:
    return {c["name"]: c for c in rep["checks"]}


def test_good_recording_holds_the_new_checks(rec, capsys):
    code, rep = run_json(capsys, rec / "manifest.yaml", "--no-estimate")
    assert code == 0, rep["failed"]
    c = checks(rep)
    assert c["ticks"]["status"] == PASS and c["lost:cam0"]["status"] == PASS
    cam0 = next(s for s in rep["streams"] if s["stream"] == "cam0")
    assert cam0["lost"] == 0 and cam0["records_in"] == cam0["samples"] > 0


def test_unreadable_tick_source_fails_with_the_reason(rec, tmp_path, capsys):
    m = variant(rec, tmp_path, lambda d: (d / "cam0.mp4").write_bytes(b"\0" * 4096))
    code, rep = run_json(capsys, m, "--no-estimate")
    assert code == 1
    c = checks(rep)
    assert c["ticks"]["status"] == FAIL
    assert "cam0" in c["ticks"]["message"] and "no valid records" in c["ticks"]["message"]
    assert c["lost:cam0"]["status"] == FAIL
    assert "ticks" in rep["failed"] and rep["alignment"] == []
    # the same on the terminal: the last line names the failing checks
    assert main([str(m), "--no-estimate", "--no-color"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("FAILED") and "ticks" in last


def test_stream_that_lost_most_records_fails(rec, tmp_path, capsys):
    m = variant(rec, tmp_path, lambda d: (d / "transcript.srt").write_bytes(FIVE_CUES_FOUR_BAD))
    code, rep = run_json(capsys, m, "--no-estimate")
    assert code == 1 and "lost:transcript" in rep["failed"]
    c = checks(rep)["lost:transcript"]
    assert c["value"] == pytest.approx(0.8) and "lost 4 of its 5 records" in c["message"]
    code, rep = run_json(capsys, m, "--no-estimate", "--max-lost-rate", "0.9")
    assert checks(rep)["lost:transcript"]["status"] == PASS


def test_broken_camera_geometry_is_a_failed_check_not_bad_input(rec, tmp_path, capsys):
    def edit(d):
        cal = yaml.safe_load((d / "calibration.yaml").read_text())
        cal["cameras"] = {"cam1": {"intrinsics": {"image_size": [320, 240],
                                                  "K": [[1e300, 0, 160], [0, 300, 120],
                                                        [0, 0, 1]]}}}
        (d / "calibration.yaml").write_text(yaml.safe_dump(cal))
    code, rep = run_json(capsys, variant(rec, tmp_path, edit), "--no-estimate")
    assert code == 1 and "calibration" in rep["failed"]
    assert "magnitude" in checks(rep)["calibration"]["message"]


@pytest.mark.parametrize("edit,words", [
    (lambda d: (d / "calibration.yaml").write_text("clocks:\n  mic: {offset_ms: .nan}\n"),
     ["calibration.yaml", "clocks.mic.offset_ms"]),
    (lambda d: (d / "calibration.yaml").write_text("clocks:\n  mic: {anchor_ns: 1e20}\n"),
     ["clocks.mic.anchor_ns", "2**62"]),
    (lambda d: (d / "mic.wav").unlink(), ["streams[mic].files[0]", "does not exist"]),
])
def test_bad_recording_input_exits_2_with_one_sentence(rec, tmp_path, capsys, edit, words):
    m = variant(rec, tmp_path, edit)
    assert main([str(m), "--no-estimate"]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert cap.out == "" and len(err) == 1 and err[0].startswith("align-check: "), cap.err
    assert all(w in err[0] for w in words), err[0]


@pytest.mark.parametrize("text,words", [
    ("[1, 2]", "not a run summary"),
    ('{"sessions": 5, "manifests": "x", "accounting": [1], "sync": 3}', "names a session"),
])
def test_junk_summary_is_bad_input(tmp_path, capsys, text, words):
    (tmp_path / "summary.json").write_text(text)
    assert main([str(tmp_path)]) == 2
    cap = capsys.readouterr()
    assert words in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err


# ---------------------------------------------------------------- backfill outputs


def _backfill(manifest: Path, out: Path) -> None:
    from mmalign.pipelines import backfill
    backfill.run([manifest], out, run_id="ac-inputs")


@pytest.mark.slow
def test_output_with_no_ticks_fails(rec, tmp_path, capsys):
    m = variant(rec, tmp_path, lambda d: (d / "cam0.mp4").write_bytes(b"\0" * 4096))
    out = tmp_path / "out"
    _backfill(m, out)
    code, rep = run_json(capsys, out)
    assert code == 1
    c = checks(rep)["ticks"]
    assert c["status"] == FAIL and "demo-001" in c["message"] and "cam0" in c["message"]
    assert rep["expectations"]["state"] == "not run"
    assert checks(rep)["lost:cam0"]["status"] == FAIL        # measured on the recording


@pytest.mark.slow
def test_output_that_lost_4_of_its_5_text_cues_fails(rec, tmp_path, capsys):
    m = variant(rec, tmp_path, lambda d: (d / "transcript.srt").write_bytes(FIVE_CUES_FOUR_BAD))
    out = tmp_path / "out"
    _backfill(m, out)
    shutil.rmtree(m.parent)               # the output alone: its own accounting decides
    code, rep = run_json(capsys, out, "--no-expectations")
    assert code == 1 and "lost:transcript" in rep["failed"]
    c = checks(rep)["lost:transcript"]
    assert c["value"] == pytest.approx(0.8) and "lost 4 of 5 records" in c["message"]
    assert checks(rep)["ticks"]["status"] == PASS
    assert rep["dead_letters"]["records"] >= 4
