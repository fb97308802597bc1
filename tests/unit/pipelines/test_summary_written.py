"""The run summary's ``written`` check: what the stages emitted (counters) against what the
output folders hold (counted from the files). A write lost after the stages -- seen with the
local runner's multi_threading mode, which once wrote 5648 of 5712 rows and 6 of 7 letters --
turns the run into exit 1 with one sentence, never a silent success."""

from __future__ import annotations

from mmalign.pipelines.cli import _report
from mmalign.pipelines.summary import render, written

CNT = {"align.ticks": 5712, "deadletter.decode.sensor": 3, "deadletter.validate.video": 4,
       "align.video.samples": 10, "decode.video.records": 10}


def _summary(rows: int, letters: int, tmp_path) -> dict:
    return {"run_id": "r", "elapsed_s": 1.0, "sessions": ["s"], "streams": ["cam0"],
            "aligned_dir": str(tmp_path / "aligned"), "deadletter_dir": str(tmp_path / "dl"),
            "aligned_rows": rows, "dead_letters": letters, "dead_letters_by_reason": {},
            "status_by_stream": {}, "sync": {},
            "accounting": {"video": {"records_in": 10, "aligned": 10, "dead": 0,
                                     "balanced": True}},
            "written": written(CNT, rows, letters)}


def test_written_compares_counters_with_the_files():
    assert written(CNT, 5712, 7) == {
        "aligned_rows": {"emitted": 5712, "on_disk": 5712, "balanced": True},
        "dead_letters": {"emitted": 7, "on_disk": 7, "balanced": True}}
    lost = written(CNT, 5648, 6)
    assert not lost["aligned_rows"]["balanced"] and not lost["dead_letters"]["balanced"]
    assert written({}, 10, 0) == {}            # a runner without counters: nothing to compare


def test_a_lost_write_is_exit_1_with_a_sentence(tmp_path, capsys, monkeypatch):
    import mmalign.pipelines.cli as cli
    monkeypatch.setattr(cli, "_sessions_without_rows", lambda s: [])
    assert _report(_summary(5712, 7, tmp_path), as_json=False) == 0
    capsys.readouterr()
    summary = _summary(5648, 6, tmp_path)
    assert _report(summary, as_json=False) == 1
    out, err = capsys.readouterr()
    assert "aligned rows: 5712 emitted, 5648 written  [MISMATCH]" in render(summary)
    assert "[MISMATCH]" in out
    assert "do not hold what the stages emitted (aligned_rows, dead_letters)" in err
