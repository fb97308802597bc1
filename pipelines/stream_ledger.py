"""The streaming job's ledger: what earlier runs of a consumer group read and wrote, so a
restart -- after a graceful stop or a hard kill -- loses nothing and duplicates nothing.

    OUT/_stream/<group>/read-<topic>-<partition>.jsonl   one line per record the reader
        claimed (schemas/ledger.py ``LedgerLine``): offset ``o``, run, session ``s``, stream
        ``st``, device times ``t`` / ``tl`` / ``te`` (first, last sample, latest interval
        end), ``late``, ``eos`` (+ ``x``: the session's declared streams), ``w`` (the
        reader's watermark after that poll, in us)
    OUT/_stream/<group>/written.jsonl   one line per bucket file written: session, bucket, run
        (``empty``: a complete bucket with no ticks, done without a file)
    OUT/_stream/<group>/final-<run>.json   on a stop: the last real watermark and the sessions
        complete (every declared stream's end-of-stream message read)

Rules (``resume``): a bucket is written once, only when complete: closed by the real
watermark, or at a stop when its session is complete (``HoldBackFn``); buckets of earlier runs
are not rewritten. A partition restarts at the smallest offset still needed by an unwritten
bucket (a record's buckets: its reference-time span widened by the window margin), or after the
last offset read; records read before are *replayed*: never judged late again (the ones judged
late are dead-lettered again with the same letter id), and the dead-letter writer skips letter
ids already on the topic (deadletter/kafka_topic.py ``letter_id``).

Compaction (``compact``, at every start and stop of the job): each read log is rewritten to
the lines a later restart can still use, so a restart reads the unwritten part of the stream,
not the job's whole history. It is exact: ``resume`` and the stop's complete sessions give the
same answers before and after (tests/unit/pipelines/test_stream_ledger.py checks that on
random ledgers).
``written.jsonl`` (one line per bucket file) is kept whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam

from mmalign.schemas.clock import MAX_ABS_TIME_NS, ClockModel
from mmalign.schemas.ledger import LedgerLine
from mmalign.schemas.metrics import STREAM
from mmalign.schemas.names import check_name
from mmalign.transforms.align.buckets import bucket_range, touched_buckets
from mmalign.transforms.io.kafka import (
    EventClock,
    PartitionSpec,
    append_lines,
    final_path,
    jsonl,
    load_ledger,
    load_lines,
    read_log,
)

WRITTEN = "written.jsonl"
MAX_LEDGER_BUCKETS = 10_000   # buckets one message may reach before its span is absurd


def state_dir(out: str | Path, group_id: str) -> Path:
    """OUT/_stream/<group>: the consumer group id must be a plain name (schemas/names.py)."""
    return Path(out) / "_stream" / check_name(group_id, "group_id")


def load_written(state: str | Path) -> frozenset[tuple[str, int]]:
    return frozenset((r["s"], int(r["b"])) for r in load_lines(Path(state) / WRITTEN))


@dataclass(frozen=True)
class Geometry:
    """How a record maps to buckets: the declared clocks, the bucket width and window margin."""
    clocks: dict[tuple[str, str], ClockModel]
    bucket_ns: int
    margin_ns: int
    shifts: dict[str, int] = field(default_factory=dict)   # session -> its shared-clock shift

    def event_clock(self) -> EventClock:
        return EventClock(self.clocks, self.shifts)

    def buckets(self, row: LedgerLine) -> list[tuple[str, int]]:
        """(session, bucket) pairs a logged record can put samples (or ticks) into."""
        model = self.clocks.get((row.session, row.stream))
        if model is None or row.t_ns is None:
            return []
        hi_dev = max(v for v in (row.t_ns, row.t_last_ns, row.t_end_ns) if v is not None)
        lo_dev, hi_dev = (min(max(int(v), -MAX_ABS_TIME_NS), MAX_ABS_TIME_NS)
                          for v in (row.t_ns, hi_dev))
        lo, hi = (int(v) for v in model.to_ref([lo_dev, hi_dev]))
        if (hi - lo) // self.bucket_ns > MAX_LEDGER_BUCKETS:
            # a message whose rows span more than any plausible chunk holds absurd times
            # (dead-lettered by validate): its ends' buckets, never a loop over the span
            return sorted({(row.session, int(b)) for b in touched_buckets(
                [lo, hi], self.bucket_ns, self.margin_ns)})
        return [(row.session, b) for b in bucket_range(lo, hi, self.bucket_ns, self.margin_ns)]


@dataclass(frozen=True)
class Resume:
    """Where each partition starts and what earlier runs did (see the module docstring)."""
    specs: tuple[PartitionSpec, ...]
    written: frozenset[tuple[str, int]]
    closed_sessions: frozenset[str]      # completed by an earlier run's stop
    late_floors_us: dict[str, int]       # session -> highest watermark of a run that read it

    @property
    def replaying(self) -> bool:
        return any(s.start < s.replay_below for s in self.specs)

    def offsets(self) -> dict[str, int]:
        return {f"{s.topic}/{s.partition}": s.start for s in self.specs}


def resume(state: str | Path, fresh: list[PartitionSpec], geometry: Geometry) -> Resume:
    """The restart plan: ``fresh`` holds each partition's start without a ledger (the group's
    committed offset, or the earliest)."""
    written = load_written(state)
    specs, all_rows = [], []
    for spec in fresh:
        by_offset = {r.offset: r for r in load_ledger(read_log(state, spec.topic,
                                                               spec.partition))}
        if not by_offset:
            specs.append(spec)
            continue
        rows = [by_offset[o] for o in sorted(by_offset)]
        all_rows.extend(rows)
        after = rows[-1].offset + 1
        needed = [r.offset for r in rows if not r.late
                  and any(k not in written for k in geometry.buckets(r))]
        start = min([*needed, after])
        clock = geometry.event_clock()           # the reader's event times: shared clock
        on_time = [clock(r.session, r.stream, r.t_ns) for r in rows
                   if r.t_ns is not None and not r.late and abs(r.t_ns) <= MAX_ABS_TIME_NS]
        specs.append(PartitionSpec(
            spec.topic, spec.partition, start, replay_below=after,
            late=tuple(r.offset for r in rows if r.late and r.offset >= start),
            max_event_ns=max(on_time) if on_time else None))
    closed: set[str] = set()
    for f in Path(state).glob("final-*.json"):
        try:
            closed.update(json.loads(f.read_text()).get("complete", []))
        except (OSError, json.JSONDecodeError):
            continue
    return Resume(tuple(specs), written, frozenset(closed), late_floors(all_rows))


def compact_rows(rows: list[LedgerLine], start: int) -> list[LedgerLine]:
    """The lines of one read log that ``resume`` and ``complete_sessions`` still use, once
    the partition restarts at ``start`` (offsets below it are never read again): every
    offset from ``start`` on; below it, the last offset read (where reading resumes), the
    on-time line with the highest event time (late checks), every end-of-stream line (which
    sessions are complete), and per run its highest-watermark line plus one line per session
    it read (``late_floors``). One line per offset, the last one logged, as ``resume`` reads."""
    by_offset = {r.offset: r for r in rows}
    if not by_offset:
        return []
    keep = {o for o in by_offset if o >= start}
    keep.add(max(by_offset))
    on_time = [o for o, r in by_offset.items() if r.t_ns is not None and not r.late]
    if on_time:
        keep.add(max(on_time, key=lambda o: by_offset[o].t_ns))
    top_w: dict[str, int] = {}
    per_session: dict[tuple[str, str], int] = {}
    for o, r in by_offset.items():
        if r.eos:
            keep.add(o)
        if r.watermark_us is not None and (
                r.run not in top_w or r.watermark_us > by_offset[top_w[r.run]].watermark_us):
            top_w[r.run] = o
        if r.session:
            per_session.setdefault((r.session, r.run), o)
    keep.update(top_w.values(), per_session.values())
    return [by_offset[o] for o in sorted(keep)]


def compact(state: str | Path, plan: Resume) -> tuple[int, int]:
    """Rewrite each partition's read log to ``compact_rows`` for its planned start (atomic
    per file: a kill leaves the old or the new log). Call it while no reader is running.
    Returns (lines before, lines after)."""
    before = after = 0
    for spec in plan.specs:
        path = read_log(state, spec.topic, spec.partition)
        rows = load_ledger(path)
        kept = compact_rows(rows, spec.start)
        before, after = before + len(rows), after + len(kept)
        if len(kept) == len(rows):
            continue
        tmp = path.with_name(f".{path.name}.compact")
        tmp.write_text(jsonl([r.to_dict() for r in kept]))
        os.replace(tmp, path)
    return before, after


def late_floors(rows: list[LedgerLine]) -> dict[str, int]:
    """Per session, the highest watermark (us) of any earlier run that read it: buckets of the
    session up to there may be written, so a new record behind it is too late. A session no
    earlier run read has no floor (its event times may well be behind other sessions')."""
    run_max: dict[str, int] = {}
    runs: dict[str, set[str]] = {}
    for r in rows:
        if r.watermark_us is not None:
            run_max[r.run] = max(run_max.get(r.run, r.watermark_us), r.watermark_us)
        if r.session:
            runs.setdefault(r.session, set()).add(r.run)
    return {s: max(run_max[r] for r in rs if r in run_max)
            for s, rs in runs.items() if any(r in run_max for r in rs)}


class HoldBackFn(beam.DoFn):
    """((session, bucket), table) -> the same, only for buckets to write now: not written by an
    earlier run, and complete -- closed by the real watermark, or (once the reader has stopped
    and the runner drains the windows) of a session complete at the stop. The others are held
    back (counted): a restart replays their records. A complete bucket without ticks (its
    records only reach it through the window margin, e.g. before a session's first tick) goes
    to the ``empty`` output, for ``MarkDoneFn(empty=True)``."""

    EMPTY = "empty"

    def __init__(self, state: str, run_id: str, written: frozenset[tuple[str, int]],
                 bucket_ns: int, window_margin_ns: int, shifts: dict[str, int] | None = None):
        self.shifts = dict(shifts or {})
        self.state = state
        self.run_id = run_id
        self.written = written
        self.bucket_ns = bucket_ns
        self.window_margin_ns = window_margin_ns
        self._final: dict | None = None

    def _stopped(self) -> dict | None:
        if self._final is None:
            p = final_path(self.state, self.run_id)
            if p.exists():
                self._final = json.loads(p.read_text())
        return self._final

    def process(self, element):
        (session, b), _ = element
        if (session, b) in self.written:
            STREAM.count("already_written", modality="buckets")
            return
        final = self._stopped()
        if final is not None:
            end_ns = (self.shifts.get(session, 0) + (b + 1) * self.bucket_ns
                      + self.window_margin_ns)
            wm = final.get("watermark_us")
            closed = wm is not None and wm * 1000 >= end_ns
            if not closed and session not in final.get("complete", []):
                STREAM.count("held_back", modality="buckets")
                return
        if element[1].num_rows == 0:
            yield beam.pvalue.TaggedOutput(self.EMPTY, (session, b))
            return
        yield element


class MarkDoneFn(beam.DoFn):
    """(session, bucket) of a bucket that is done -> its ledger line in written.jsonl.

    Done means all its sinks are: the Parquet file, then the online store when the manifests
    enable it (written, or failed into a dead letter); a kill before the line leaves the
    bucket to a restart, which replays its records and writes both again (same file name,
    same online rows). ``empty``: a complete bucket with no ticks, done without a file, so
    the records that reached it through the window margin are not needed by a restart."""

    def __init__(self, state: str, run_id: str, empty: bool = False):
        self.ledger = str(Path(state) / WRITTEN)
        self.run_id = run_id
        self.empty = empty

    def process(self, element):
        session, b = element
        line = {"s": session, "b": int(b), "run": self.run_id}
        if self.empty:
            STREAM.count("empty", modality="buckets")
            line["empty"] = 1
        append_lines(self.ledger, [line])
