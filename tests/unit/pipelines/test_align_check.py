"""align-check's plain measurements and checks (pipelines/align_report.py), its thresholds from
defaults, a config file and options, and bad paths or options as exit 2, in-process. The command
as a user runs it, on generated recordings: tests/integration/test_align_check_e2e.py."""

import numpy as np
import pyarrow as pa
import pytest

from mmalign.pipelines.align_check import BadInput, load_thresholds, main
from mmalign.pipelines.align_report import (
    FAIL,
    PASS,
    SKIP,
    Thresholds,
    check,
    missing_spans,
    registration_stats,
    stream_stats,
)


def test_stream_stats_counts_gaps_and_drops():
    t = np.arange(100, dtype=np.int64) * 10_000_000          # 100 Hz
    t = np.delete(t, [10, 11, 12, 50])                       # a 3-sample hole and a 1-sample one
    s = stream_stats(t, "video")
    assert s["samples"] == 96 and s["gaps"] == 2 and s["dropped"] == 4
    assert s["rate_hz"] == pytest.approx(100.0)
    assert s["drop_rate"] == pytest.approx(4 / 100)
    assert s["gap_spans"][0] == (90_000_000, 130_000_000)


def test_stream_stats_audio_holes_in_samples():
    sr, n = 16000, 1024
    starts = np.arange(10, dtype=np.int64) * round(n / sr * 1e9)
    starts[5:] += 32_000_000                                 # 32 ms = 512 samples missing
    s = stream_stats(starts, "audio", n_samples=np.full(10, n), sample_rate=sr)
    assert s["samples"] == 10 * n and s["gaps"] == 1
    assert s["dropped"] == 512 and s["rate_hz"] == sr


def test_registration_stats_and_missing_spans():
    # the statuses transforms/register_stage.py writes
    t = pa.table({"cam1__reg_status": ["ok", "ok", "stale_transform", None,
                                       "failed:no_features", "no_frame"],
                  "cam1__reg_inlier_ratio": [0.8, 0.6, 0.2, None, None, None],
                  "cam1__reg_rmse_px": [0.5, 1.5, 4.0, None, None, None]})
    (c,) = registration_stats(t, "s")
    assert (c["ok"], c["flagged"], c["failed"], c["no_frame"], c["pairs"]) == (2, 1, 1, 1, 4)
    assert c["inlier_ratio"]["median"] == pytest.approx(0.6)
    assert c["rmse_px"]["max"] == pytest.approx(4.0)
    ticks = np.arange(8, dtype=np.int64) * 10
    ok = np.array([1, 0, 0, 1, 1, 0, 1, 0], bool)
    assert missing_spans(ticks, ok) == [(0, 30), (40, 60)]   # the trailing miss has no end


def test_check_directions_and_skip():
    assert check("a", 5.0, 5.0, what="x").status == PASS
    assert check("a", 5.1, 5.0, what="x").status == FAIL
    assert check("a", 0.2, 0.3, upper=False, what="x").status == FAIL
    assert check("a", None, 0.3, what="x").status == SKIP


def test_thresholds_defaults_config_then_options(tmp_path):
    cfg = tmp_path / "gate.yaml"
    cfg.write_text("align_check:\n  max_offset_ms: 10\n  max_missing: 0.2\n")
    th = load_thresholds(str(cfg), {"max_missing": 0.05, "max_drop_rate": None})
    assert (th.max_offset_ms, th.max_missing) == (10, 0.05)
    assert th.max_drop_rate == Thresholds().max_drop_rate
    cfg.write_text("max_ofset_ms: 10\n")
    with pytest.raises(BadInput, match="max_ofset_ms"):
        load_thresholds(str(cfg), {})


def test_bad_paths_and_options_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2                       # a folder that is no output
    assert "without aligned/" in capsys.readouterr().err
    (tmp_path / "m.yaml").write_text("session: s\nstreams: []\n")
    assert main([str(tmp_path / "m.yaml")]) == 2
    assert "field" in capsys.readouterr().err
    assert main([str(tmp_path / "m.yaml"), "--max-missing", "2"]) == 2
    assert "max_missing" in capsys.readouterr().err
