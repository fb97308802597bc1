"""The records of schemas/ round-trip through their plain dicts (``to_dict`` / ``from_dict``),
and keep the on-disk forms files already have: ClockModel (Parquet metadata, the summary),
SyncResult (sync.json) and LedgerLine (the streaming read log's one-letter keys)."""

from __future__ import annotations

import json
import math
import random

import pytest

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.ledger import LedgerLine
from mmalign.schemas.sync import SyncResult, read_sync_results, write_session_sync

NS = 1_000_000_000


def _models(n: int, seed: int = 0) -> list[ClockModel]:
    rng = random.Random(seed)
    out = [ClockModel(), ClockModel.declared(-250_000_000, 80.0, 1_700_000_000 * NS)]
    for _ in range(n):
        ppm = rng.uniform(-1000, 1000)
        if rng.random() < 0.5:
            ppm = round(ppm, rng.randrange(0, 5))
        out.append(ClockModel(rng.randrange(-10**13, 10**13), ppm * 1e-6, rng.randrange(2**61),
                              rng.choice(["declared", "estimated", "fallback"]),
                              rng.choice([None, rng.random()])))
    return out


def test_clock_model_dict_round_trip():
    for m in _models(5000):
        d = m.to_dict()
        assert set(d) == {"offset_ns", "drift_ppm", "anchor_ns", "source", "confidence"}
        back = ClockModel.from_dict(json.loads(json.dumps(d)))
        assert back.to_dict() == d                   # what is on disk reads back the same
        assert (back.offset_ns, back.anchor_ns, back.source, back.confidence) == \
            (m.offset_ns, m.anchor_ns, m.source, m.confidence)
        # drift travels in ppm: at most one unit in the last place, well below 1 ns of skew
        assert math.isclose(back.drift, m.drift, rel_tol=1e-15, abs_tol=1e-300)
    assert ClockModel.from_dict({}) == ClockModel()
    assert ClockModel.from_dict(ClockModel.declared(7, 2.5).to_dict()) == \
        ClockModel.declared(7, 2.5)


def _result(i: int, m: ClockModel, fell_back: bool) -> SyncResult:
    return SyncResult(f"s{i}", "cam0", m, float("nan") if i % 3 == 0 else 0.5, fell_back,
                      "low confidence" if fell_back else "", "banded", "onset~onset",
                      -12_345 * i, float("nan") if i % 2 else 0.25, i, i // 2,
                      float("nan") if i % 4 else 1.5, 3.0,
                      None if fell_back else m, ("chunk 3 unreadable",) if i % 5 == 0 else ())


def test_sync_result_dict_round_trip(tmp_path):
    results = {r.stream_id: r for r in (_result(i, m, i % 2 == 1)
                                        for i, m in enumerate(_models(40, seed=1)))}
    for r in results.values():
        d = r.to_dict()
        assert json.loads(json.dumps(d, allow_nan=False)) == d      # strict JSON: NaN -> null
        assert SyncResult.from_dict(d).to_dict() == d
        back = SyncResult.from_dict(d)
        assert (back.model.offset_ns, back.fell_back, back.warnings) == \
            (r.model.offset_ns, r.fell_back, r.warnings)
        assert math.isnan(back.dtw_cost) == math.isnan(r.dtw_cost)
    # the file layout and format the backfill has always written
    path = write_session_sync(tmp_path / "sync", "demo-001", results)
    assert path == tmp_path / "sync" / "demo-001" / "sync.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == {k: r.to_dict() for k, r in results.items()}
    got = read_sync_results(tmp_path)
    assert sorted(got) == sorted(f"demo-001/{k}" for k in results)
    assert {k: r.to_dict() for k, r in got.items()} == \
        {f"demo-001/{k}": r.to_dict() for k, r in results.items()}


def _old_log_row(offset: int, run_id: str, header: dict | None, late: bool) -> dict:
    """The read-log line as transforms/io/kafka.py wrote it before LedgerLine existed."""
    r: dict = {"o": offset, "run": run_id}
    if header:
        r |= {"s": header.get("session"), "st": header.get("stream"), "t": header.get("t_ns"),
              "tl": header.get("t_last_ns"), "te": header.get("t_end_ns")}
        if header.get("eos"):
            r |= {"eos": 1, "x": sorted(header.get("extents") or ())}
    if late:
        r["late"] = 1
    return r


HEADERS = [None, {},
           {"session": "s1", "stream": "cam", "t_ns": 5},
           {"session": "s1", "stream": "imu", "t_ns": -3, "t_last_ns": 90, "t_end_ns": None},
           {"session": "s2", "stream": "asr", "t_ns": 0, "t_last_ns": 4, "t_end_ns": 9},
           {"session": "s2", "stream": "cam", "t_ns": 7, "eos": True,
            "extents": {"mic": [0, 1], "cam": [0, 2]}},
           {"session": "s2", "stream": "mic", "t_ns": 7, "eos": True}]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("w", [None, -5, 1_700_000_000_000_000])
def test_ledger_line_keeps_the_compact_on_disk_keys(header, late, w):
    old = _old_log_row(17, "r1", header, late)
    if w is not None:
        old["w"] = w
    line = LedgerLine.of_header(17, "r1", header, late)
    if w is not None:
        line = LedgerLine.from_dict({**line.to_dict(), "w": w})
    assert line.to_dict() == old                     # the same line as before
    assert LedgerLine.from_dict(json.loads(json.dumps(old))) == line     # old lines load
    assert LedgerLine.from_dict(line.to_dict()).to_dict() == old


def test_ledger_line_fields():
    line = LedgerLine.from_dict({"o": 3, "run": "r2", "s": "s1", "st": "cam", "t": 10,
                                 "tl": 20, "te": None, "eos": 1, "x": ["cam", "mic"],
                                 "late": 1, "w": 99})
    assert line == LedgerLine(3, "r2", "s1", "cam", 10, 20, None, True, ("cam", "mic"), True,
                              99)
    assert LedgerLine.from_dict({"o": 4, "run": "r2"}) == LedgerLine(4, "r2")
    assert LedgerLine(4, "r2").to_dict() == {"o": 4, "run": "r2"}
