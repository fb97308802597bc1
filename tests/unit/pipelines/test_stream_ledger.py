"""The streaming job's ledger compaction (pipelines/stream_ledger.py ``compact``): on random
ledgers written by several runs (restarts with replays, late records, end-of-stream lines,
unreadable values, torn last lines), the restart plan and the complete sessions are the same
before and after compaction, run after run, and the logs shrink to what is still needed.
The same code runs at every start and stop of the real job
(tests/integration/test_stream_restart.py)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from mmalign.pipelines.stream_ledger import WRITTEN, Geometry, compact, compact_rows, resume
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.ledger import LedgerLine
from mmalign.transforms.io.kafka import (
    PartitionSpec,
    append_lines,
    complete_sessions,
    load_ledger,
    load_lines,
    read_log,
)

B = 1_000_000_000
SESSIONS = ("s1", "s2", "s3")
STREAMS = ("cam", "imu")
GEO = Geometry({(s, st): ClockModel.declared(offset_ns=1000 * i, drift_ppm=5.0 * i)
                for i, (s, st) in enumerate((s, st) for s in SESSIONS for st in STREAMS)},
               bucket_ns=B, margin_ns=200_000_000)
TOPICS = (("video", 0), ("video", 1), ("sensor", 0))


def fresh() -> list[PartitionSpec]:
    return [PartitionSpec(t, p, 0) for t, p in TOPICS]


def simulate_run(state, rng: random.Random, run: str, plan, offsets: dict) -> None:
    """What one run of the reader and the bucket writer log: the planned partitions from
    their start (replaying what earlier runs read), then new records; some buckets written."""
    wm = rng.randrange(0, 20) * B // 2
    for spec in plan.specs:
        key = (spec.topic, spec.partition)
        end = offsets[key] + rng.randrange(0, 40)
        rows = []
        for o in range(spec.start, end):
            # the message at an offset is the same whenever it is (re)read
            msg = random.Random(f"{key}/{o}")
            t = msg.randrange(0, 30 * B)
            if msg.random() < 0.05:                     # an unreadable value: no header
                r = {"o": o, "run": run}
            else:
                r = {"o": o, "run": run, "s": msg.choice(SESSIONS), "st": msg.choice(STREAMS),
                     "t": t, "tl": t + msg.randrange(0, B), "te": None}
                if msg.random() < 0.05:
                    r |= {"eos": 1, "x": sorted(msg.sample(STREAMS, msg.randrange(1, 3)))}
            if rng.random() < 0.1:
                r["late"] = 1
            if rng.random() < 0.7:
                wm += rng.randrange(0, B // 4)
                r["w"] = wm // 1000
            rows.append(r)
        append_lines(read_log(state, *key), rows)
        offsets[key] = max(offsets[key], end)
    written = [{"s": rng.choice(SESSIONS), "b": rng.randrange(-1, 32), "run": run}
               for _ in range(rng.randrange(0, 25))]
    append_lines(state / WRITTEN, written)
    if rng.random() < 0.3:                              # a kill tore the last line
        with open(read_log(state, *TOPICS[0]), "a") as fh:
            fh.write('{"o": 99')


def all_rows(state):
    return [r for t, p in TOPICS for r in load_ledger(read_log(state, t, p))]


@pytest.mark.parametrize("seed", range(40))
def test_compaction_keeps_every_restart_decision(tmp_path, seed):
    rng = random.Random(seed)
    raw, packed = tmp_path / "raw", tmp_path / "packed"
    offsets_raw = {k: 0 for k in TOPICS}
    offsets_packed = dict(offsets_raw)
    for run in range(6):
        plan_raw, plan_packed = resume(raw, fresh(), GEO), resume(packed, fresh(), GEO)
        assert plan_packed == plan_raw, f"run {run}"
        assert complete_sessions(all_rows(packed)) == complete_sessions(all_rows(raw))
        compact(packed, plan_packed)                  # at the start of the run
        assert resume(packed, fresh(), GEO) == plan_raw
        # both ledgers see the same run (same random stream for each)
        state_rng = rng.getstate()
        simulate_run(raw, rng, f"r{run}", plan_raw, offsets_raw)
        rng.setstate(state_rng)
        simulate_run(packed, rng, f"r{run}", plan_packed, offsets_packed)
        compact(packed, resume(packed, fresh(), GEO))  # and at its stop
    assert resume(packed, fresh(), GEO) == resume(raw, fresh(), GEO)
    assert len(all_rows(packed)) < len(all_rows(raw))


def test_compaction_drops_what_no_restart_reads(tmp_path):
    """A session read long ago and fully written: only the last offset, the newest on-time
    event, its end-of-stream line and the run's watermark line stay."""
    rows = [LedgerLine(o, "r1", "s1", "cam", o * B, watermark_us=o * 1000) for o in range(100)]
    rows[40] = replace(rows[40], eos=True, extents=("cam",))
    kept = compact_rows(rows, start=100)
    assert [r.offset for r in kept] == [0, 40, 99]     # 0: run r1's first line for s1
    assert compact_rows(rows, start=90)[-10:] == rows[90:]
    # a replayed offset keeps its last logged line, as resume() reads it
    again = rows + [replace(rows[99], run="r2", watermark_us=5)]
    assert compact_rows(again, start=100)[-1].run == "r2"


def test_compact_rewrites_atomically_and_reports_sizes(tmp_path):
    state = tmp_path / "state"
    append_lines(read_log(state, "video", 0),
                 [{"o": o, "run": "r1", "s": "s1", "st": "cam", "t": o, "w": 1}
                  for o in range(50)])
    append_lines(state / WRITTEN, [{"s": "s1", "b": b, "run": "r1"} for b in (-1, 0)])
    plan = resume(state, [PartitionSpec("video", 0, 0)], GEO)
    before, after = compact(state, plan)
    assert before == 50 and after < 5
    assert not list(state.glob(".*compact"))
    lines = read_log(state, "video", 0).read_text().splitlines()
    assert len(lines) == after and all(json.loads(line)["o"] >= 0 for line in lines)
    assert resume(state, [PartitionSpec("video", 0, 0)], GEO) == plan


def test_a_torn_line_never_swallows_the_next_append(tmp_path):
    log = tmp_path / "read-video-0.jsonl"
    append_lines(log, [{"o": 0, "run": "r1"}])
    with open(log, "a") as fh:                  # a kill in the middle of a write
        fh.write('{"o": 1, "ru')
    append_lines(log, [{"o": 1, "run": "r2"}, {"o": 2, "run": "r2"}])
    assert [(r["o"], r["run"]) for r in load_lines(log)] == [(0, "r1"), (1, "r2"), (2, "r2")]
