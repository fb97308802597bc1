"""Kafka in Beam with kafka-python: one unbounded splittable DoFn element reads every partition.

``ReadKafkaFn`` takes a ``ReadPlan`` (the partitions and where each starts) and its
restriction, ``Positions``, holds the next offset and the max event time seen of every
partition; it checkpoints itself after every poll (``defer_remainder``), so the runner keeps
streaming, and a resumed residual knows exactly where each partition was.

Why one element and not one restriction per partition: Beam Prism (2.77) takes a stage's
output watermark from the *last* finished bundle's watermark estimate, so with several
partitions in flight the fastest one's watermark wins and the others' records are silently
dropped as late downstream (measured: 3 topics x 400 messages, 120/120/330 arrived). One
reader with one watermark is correct on any runner; a poll reads all partitions at once.

Event time and watermark: a record's event time is its first sample's time on the job's
shared clock (``EventClock``: the stream's declared clock model, then its session's
wall-clock shift), exactly the earliest reference time the clock stage gives its samples.
The watermark is the minimum over partitions of ``max event time seen - (out-of-orderness +
lateness)``; a
partition with no backlog (caught up with its end offset) does not hold it back unless every
partition is caught up, so a quiet topic does not stall the job. A record whose event time is
below ``max seen on its partition - out-of-orderness - allowed lateness``, or that would be
stamped behind the watermark already set, is too late: it becomes a DeadLetter (stage
"ingest", reason ``too_late``), never a silent drop. Unreadable values are passed on (ingest
dead-letters them with the reason). With ``stop_after_idle_s`` the reader finishes once every
partition is caught up and no record has come for that long (``IdleStop``); the pipeline then
drains its windows and ends.

Restarts: every claimed record is logged to ``<state_dir>/read-<topic>-<p>.jsonl`` as a
``schemas.ledger.LedgerLine`` (offset, session, stream, device times, late/eos flags, the
watermark after the poll); on a stop the reader writes ``final-<run>.json`` (its last real
watermark and the sessions whose declared streams all sent their end-of-stream message)
before it ends. pipelines/stream_ledger.py turns
these into the next run's ``PartitionSpec``: records below ``replay_below`` were read by an
earlier run and are *replayed*: never judged late again (those in ``late`` are dead-lettered
again as too late, with the same letter id); a new record is also too late when it is behind
the highest watermark of an earlier run that read its session, or when its session was
completed by an earlier stop.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from mmalign.deadletter.kafka_topic import kafka_attrs
from mmalign.deadletter.record import DeadLetter
from mmalign.schemas import metrics
from mmalign.schemas.clock import MAX_ABS_TIME_NS
from mmalign.schemas.envelope import MessageError, split
from mmalign.schemas.ledger import LedgerLine
from mmalign.schemas.metrics import INGEST, set_gauge
from mmalign.transforms.tags import DEAD, MAIN

FINISH = "finish"          # claim this to end the restriction (every partition stops)


class IdleStop:
    """``stop_after_idle_s``: the reader stops once no record has come for ``after_s`` seconds
    and every partition is caught up. Idle time counts from the last poll that returned
    records or found a backlog (the reader's start when none has), not from the first empty
    poll, and the poll that ends it waits only what is left: the stop comes ``after_s`` after
    the last record plus that poll's end-offsets request (~5 ms: asked on a connection of its
    own, ``_caught_up``; on the reader's own it waited behind the pending fetch, up
    to 0.5 s), not 0.4-1.1 s late as when idle time began at the first empty poll."""

    def __init__(self, after_s: float | None, poll_s: float, clock=time.monotonic):
        self.after_s, self.poll_s, self.clock = after_s, poll_s, clock
        self.active = clock()

    def wait_s(self) -> float:
        """How long the next poll may wait for records."""
        if self.after_s is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, self.after_s - (self.clock() - self.active)))

    def due(self) -> bool:
        """Whether the stop is due (no record for ``after_s``), if every partition is caught
        up."""
        return self.after_s is not None and self.clock() - self.active >= self.after_s

    def after_poll(self, polled: bool, caught_up: bool) -> float | None:
        """After a poll: None to stop now, else the seconds to defer the next poll."""
        now = self.clock()
        if polled or not caught_up:
            self.active = now
            return 0.0 if polled else 0.1
        if self.after_s is None:
            return 0.1
        left = self.after_s - (now - self.active)
        return None if left <= 0 else min(0.1, left)


@dataclass(frozen=True)
class PartitionSpec:
    topic: str
    partition: int
    start: int                          # first offset to read
    replay_below: int = 0               # offsets below this were read by an earlier run
    late: tuple[int, ...] = ()          # offsets an earlier run judged too late
    max_event_ns: int | None = None     # max on-time event time earlier runs saw (late checks)


@dataclass(frozen=True)
class ReadPlan:
    """The SDF element: every partition the job reads."""
    specs: tuple[PartitionSpec, ...]


@dataclass(frozen=True)
class Positions:
    """The restriction: per partition the next offset and the max event time seen so far.
    ``done`` marks a restriction that was checkpointed or finished (nothing left to claim)."""
    next: tuple[int, ...]
    max_event: tuple[int | None, ...]
    done: bool = False


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    replayed: bool = False
    headers: tuple = field(default=())
    too_late: str = ""                  # why the reader found it too late ("" = on time)
    event_ns: int | None = None

    def attrs(self) -> dict[str, str]:
        return kafka_attrs(self.topic, self.partition, self.offset, self.timestamp_ms, self.key)

    def dead(self, stage: str, reason: str, error_class: str, message: str,
             header: dict | None = None, event_time_ns: int | None = None) -> DeadLetter:
        h = header or {}
        return DeadLetter(stage=stage, error_class=error_class, reason=reason,
                          message=message, session_id=h.get("session") or (
                              self.key.decode("utf-8", "replace") if self.key else None),
                          stream_id=h.get("stream"), modality=h.get("modality"),
                          source_uri=f"kafka://{self.topic}/{self.partition}",
                          position=f"offset={self.offset}", event_time_ns=event_time_ns,
                          payload=self.value, payload_format="kafka-value", attrs=self.attrs())


class PositionsTracker(RestrictionTracker):
    """Claims ``(partition index, offset, max event time)`` in order per partition.
    Only checkpoints split it (``try_split(0)``): the partitions are read by one reader."""

    def __init__(self, restriction: Positions):
        self._start = restriction
        self._next = list(restriction.next)
        self._max = list(restriction.max_event)
        self._done = restriction.done

    def current_restriction(self) -> Positions:
        return Positions(tuple(self._next), tuple(self._max), self._done)

    def try_claim(self, position) -> bool:
        if self._done:
            return False
        if position == FINISH:
            self._done = True
            return True
        i, offset, max_event = position
        if offset < self._next[i]:
            raise ValueError(f"partition {i}: offset {offset} claimed after {self._next[i] - 1}")
        self._next[i] = offset + 1
        self._max[i] = max_event
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._done:
            return None
        self._done = True
        return (Positions(tuple(self._next), tuple(self._max), True),
                Positions(tuple(self._next), tuple(self._max), False))

    def check_done(self):
        if not self._done:
            raise ValueError("Kafka read stopped without a checkpoint or FINISH claim")

    def current_progress(self) -> RestrictionProgress:
        read = sum(n - s for n, s in zip(self._next, self._start.next, strict=True))
        # unbounded: like an offset range up to 2**63, so runner splits see ~0 % done
        return RestrictionProgress(completed=float(read), remaining=float(2**63 - read))

    def is_bounded(self) -> bool:
        return False


class _Plan(RestrictionProvider):
    def initial_restriction(self, plan: ReadPlan) -> Positions:
        # max event times restart empty: the watermark is rebuilt from the records read again
        return Positions(tuple(s.start for s in plan.specs), (None,) * len(plan.specs))

    def create_tracker(self, restriction: Positions) -> PositionsTracker:
        return PositionsTracker(restriction)

    def restriction_size(self, plan, restriction) -> int:
        return 1

    def split(self, plan, restriction):
        yield restriction

    def truncate(self, plan, restriction):
        return None   # drain: stop reading


def read_log(state: str | Path, topic: str, partition: int) -> Path:
    return Path(state) / f"read-{topic}-{partition}.jsonl"


def final_path(state: str | Path, run_id: str) -> Path:
    return Path(state) / f"final-{run_id}.json"


def jsonl(rows: list[dict]) -> str:
    """Rows as JSON lines, compact, each ended by a newline (the ledger's file format)."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)


def append_lines(path: str | Path, rows: list[dict]) -> None:
    """Append JSON lines in one write (O_APPEND: lines of concurrent writers never interleave).
    A line torn by a killed writer is ended first, so it cannot swallow the next line."""
    data = jsonl(rows).encode()
    if not data:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)


def load_lines(path: str | Path) -> list[dict]:
    """The JSON lines of ``path`` (a torn last line of a killed writer is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def load_ledger(path: str | Path) -> list[LedgerLine]:
    """The read log at ``path`` (``read_log``) as ledger lines, in file order."""
    return [LedgerLine.from_dict(d) for d in load_lines(path)]


def complete_sessions(rows) -> set[str]:
    """Sessions whose declared streams (``extents`` of an eos line) have all sent their eos."""
    declared: dict[str, set[str]] = {}
    ended: dict[str, set[str]] = {}
    for r in rows:
        if r.eos and r.session:
            declared.setdefault(r.session, set()).update(r.extents)
            ended.setdefault(r.session, set()).add(r.stream)
    return {s for s, want in declared.items() if want and want <= ended[s]}


def event_time_ns(value: bytes | None) -> tuple[int | None, dict | None]:
    """(t_ns, header) of an envelope, (None, None) if the value is not readable."""
    try:
        header, _ = split(value)
    except MessageError:
        return None, None
    return int(header["t_ns"]), header


def plan_watermark_ns(max_event: list[int | None], caught_up: list[bool], hold_ns: int
                      ) -> int | None:
    """min over partitions of ``max event - hold``; caught-up partitions only count when all
    are caught up; None while a partition with a backlog has not shown an event time yet."""
    behind = [m for m, c in zip(max_event, caught_up, strict=True) if not c]
    if any(m is None for m in behind):
        return None
    known = [m for m in (behind or max_event) if m is not None]
    return min(known) - hold_ns if known else None


@dataclass(frozen=True)
class EventClock:
    """An envelope's device event time on the streaming job's shared clock: the stream's
    declared clock model onto its session's reference time, then the session's shift (its
    wall-clock start, rounded up to whole buckets), so sessions recorded at different times
    share one watermark. Unknown streams keep their time (ingest dead-letters them)."""
    models: dict = field(default_factory=dict)       # (session, stream) -> ClockModel
    shifts: dict = field(default_factory=dict)       # session -> ns

    def __call__(self, session: str | None, stream: str | None, t_dev_ns: int) -> int:
        model = self.models.get((session, stream))
        t = int(model.to_ref([t_dev_ns])[0]) if model is not None else int(t_dev_ns)
        return t + int(self.shifts.get(session, 0))


@beam.DoFn.unbounded_per_element()
class ReadKafkaFn(beam.DoFn):
    """ReadPlan -> KafkaRecord, event-timestamped (too-late ones marked, at the watermark)."""

    def __init__(self, settings, *, max_out_of_orderness_ns: int, allowed_lateness_ns: int,
                 state_dir: str, run_id: str, stop_after_idle_s: float | None,
                 poll_ms: int = 300, max_poll_records: int = 500,
                 fetch_bytes_per_partition: int = 8 << 20,
                 closed_sessions: frozenset[str] = frozenset(),
                 late_floors_us: dict[str, int] | None = None,
                 event_clock: EventClock | None = None,
                 sessions: frozenset[str] = frozenset(), close_after_ns: int = 0):
        self.settings = settings
        # once every session of the job has ended (each declared stream sent its eos), no
        # record can come for them: the watermark goes past their end + close_after_ns (a
        # bucket and its margin), so their last buckets are written now, not at the stop
        self.sessions = frozenset(sessions)
        self.close_after_ns = close_after_ns
        self._eos: list[LedgerLine] = []           # this run's end-of-stream lines
        self._end_ns: dict[str, int] = {}          # session -> its declared end (shared clock)
        self.event_clock = event_clock or EventClock()
        self.bound_ns = max_out_of_orderness_ns
        self.lateness_ns = allowed_lateness_ns
        self.hold_ns = max_out_of_orderness_ns + allowed_lateness_ns
        self.state_dir = state_dir
        self.run_id = run_id
        self.stop_after_idle_s = stop_after_idle_s
        self.poll_ms = poll_ms
        self.max_poll_records = max_poll_records
        # Kafka's default (1 MB) holds ~5-7 of our messages: a poll, and so a bundle, each
        # 5-7 messages; 8 MB per partition lets a backlog come in polls of hundreds
        self.fetch_bytes_per_partition = fetch_bytes_per_partition
        self.closed_sessions = closed_sessions
        self.late_floors_us = dict(late_floors_us or {})
        self._consumer = None
        self._ends = None               # a consumer of its own for the stop's end offsets
        self._idle: IdleStop | None = None

    def teardown(self):
        for name in ("_consumer", "_ends"):
            if getattr(self, name) is not None:
                getattr(self, name).close()
                setattr(self, name, None)

    def _assigned(self, plan: ReadPlan, positions: Positions):
        # lazy: kafka-python only where a broker is used
        from kafka import KafkaConsumer, TopicPartition
        tps = [TopicPartition(s.topic, s.partition) for s in plan.specs]
        if self._consumer is None:
            self._consumer = self.settings.make(
                KafkaConsumer, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", max_poll_records=self.max_poll_records,
                max_partition_fetch_bytes=self.fetch_bytes_per_partition)
            self._consumer.assign(tps)
        for tp, nxt in zip(tps, positions.next, strict=True):
            if self._consumer.position(tp) != nxt:
                self._consumer.seek(tp, nxt)
        return self._consumer, tps

    def _caught_up(self, tps, nxt: list[int], own_connection: bool = False
                   ) -> list[bool] | None:
        """Per partition: read up to its end, as the broker sees it now. (The high watermark
        a fetch response carried saves the round trip but lags: at 1x real time it held
        the watermark back and raised p95 latency from 5.1 to 5.7 s. Asked on the reader's
        own connection the request waits behind its pending fetch, up to 0.2 s per empty poll;
        asked on a connection of its own (~5 ms), or with fetch.max.wait.ms 100 ms, p95 at
        1x rose from 5.1 to 6.1-6.3 s: measured, and not kept for the watermark.)
        ``own_connection``: asked on a second consumer, for the poll that decides the idle
        stop, which then comes ``stop_after_idle_s`` after the last record, not up to 0.5 s
        later."""
        # lazy: kafka-python only where a broker is used
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError
        try:
            if own_connection and self._ends is None:
                self._ends = self.settings.make(KafkaConsumer, group_id=None,
                                                 enable_auto_commit=False)
            end = (self._ends if own_connection else self._consumer).end_offsets(tps)
        except KafkaError:
            return None            # broker unreachable: unknown, keep waiting
        return [end.get(tp) is not None and n >= end[tp] for tp, n in zip(tps, nxt, strict=True)]

    def _too_late(self, e: int, header: dict, latest: int | None, wm_ns: int | None
                  ) -> str:
        """Why a new (not replayed) record with event time ``e`` is too late, or ""."""
        if header.get("session") in self.closed_sessions:
            return (f"session {header.get('session')} was completed (every stream sent its "
                    f"end of stream) and written by an earlier run")
        if latest is not None and e < latest - self.bound_ns - self.lateness_ns:
            return (f"event time {e} ns is behind the partition's latest event time {latest} "
                    f"ns by more than the out-of-orderness {self.bound_ns / 1e9:g} s + allowed "
                    f"lateness {self.lateness_ns / 1e9:g} s")
        earlier = self.late_floors_us.get(header.get("session"))
        floor = max(v for v in (wm_ns, None if earlier is None else earlier * 1000, -(2**63))
                    if v is not None)
        if e < floor:
            return f"event time {e} ns is behind the watermark {floor} ns"
        return ""

    def process(self, plan: ReadPlan, tracker=beam.DoFn.RestrictionParam(_Plan()),
                wm=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        positions = tracker.current_restriction()
        consumer, tps = self._assigned(plan, positions)
        index = {(tp.topic, tp.partition): i for i, tp in enumerate(tps)}
        nxt, max_e = list(positions.next), list(positions.max_event)
        current = wm.current_watermark()
        wm_ns = None if current is None or current.micros <= -(2**62) else current.micros * 1000
        if self._idle is None:
            self._idle = IdleStop(self.stop_after_idle_s, self.poll_ms / 1000)
        polled = consumer.poll(timeout_ms=round(self._idle.wait_s() * 1000))
        rows: dict[int, list[LedgerLine]] = {}
        for tp, batch in polled.items():
            i = index[(tp.topic, tp.partition)]
            spec = plan.specs[i]
            for m in batch:
                if m.offset < nxt[i]:
                    continue
                replayed = m.offset < spec.replay_below
                rec = KafkaRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp,
                                  replayed, tuple(m.headers or ()))
                e, header = event_time_ns(m.value)
                if e is not None and abs(e) > MAX_ABS_TIME_NS:
                    e = None   # never a watermark: validate dead-letters its rows as implausible
                if e is not None:
                    e = self.event_clock(header.get("session"), header.get("stream"), e)
                why = ""
                if e is not None:
                    latest = max((v for v in (max_e[i], spec.max_event_ns) if v is not None),
                                 default=None)
                    if replayed:
                        why = ("judged too late when an earlier run read it"
                               if m.offset in spec.late else "")
                    else:
                        why = self._too_late(e, header, latest, wm_ns)
                new_max = max_e[i] if e is None or why else max(e, max_e[i] or e)
                if not tracker.try_claim((i, m.offset, new_max)):
                    break
                nxt[i], max_e[i] = m.offset + 1, new_max
                line = LedgerLine.of_header(m.offset, self.run_id, header, bool(why))
                rows.setdefault(i, []).append(line)
                if line.eos:
                    self._ended(line, header)
                if e is None:                  # poison: ingest dead-letters it with the reason
                    yield beam.window.TimestampedValue(
                        rec, Timestamp(micros=(wm_ns or 0) // 1000))
                elif why:                      # dead-lettered by SplitLateFn
                    yield beam.window.TimestampedValue(replace(
                        rec, event_ns=e, too_late=f"{m.topic}/{m.partition}: {why}"),
                        Timestamp(micros=(wm_ns or 0) // 1000))
                else:
                    INGEST.count(metrics.RECORDS)
                    yield beam.window.TimestampedValue(
                        rec, Timestamp(micros=e // 1000))
        end = self._all_ended_ns()
        # once every session has ended, a poll that returned records needs no end offsets:
        # the watermark goes to the sessions' end whatever the partitions hold, and the next
        # poll comes at once. Asking would wait behind the fetch the poll left pending (up to
        # 0.2 s) before the last buckets could close. The poll that may stop the reader asks
        # on a connection of its own, for the same reason.
        if polled:
            caught_up = None if end is not None else self._caught_up(tps, nxt)
        elif self._idle.due():
            caught_up = self._caught_up(tps, nxt, own_connection=True)
        else:
            caught_up = self._caught_up(tps, nxt)
        target = plan_watermark_ns(max_e, caught_up or [False] * len(tps), self.hold_ns)
        if end is not None:
            target = max(end, target if target is not None else end)
        if target is not None and (wm_ns is None or target > wm_ns):
            wm.set_watermark(Timestamp(micros=target // 1000))
            wm_ns = target
        newest = max((m for m in max_e if m is not None), default=None)
        if wm_ns is not None and newest is not None:     # for the progress lines
            set_gauge("ingest.watermark_lag_s", (newest - wm_ns) / 1e9)
        for i, r in rows.items():
            if wm_ns is not None:
                r[-1] = replace(r[-1], watermark_us=wm_ns // 1000)
            append_lines(read_log(self.state_dir, plan.specs[i].topic, plan.specs[i].partition),
                         [line.to_dict() for line in r])
        defer_s = self._idle.after_poll(bool(polled), bool(caught_up) and all(caught_up))
        if defer_s is None:
            self._finish(plan, wm_ns)
            tracker.try_claim(FINISH)
            return
        tracker.defer_remainder(Duration(micros=round(defer_s * 1e6)))

    def _ended(self, line: LedgerLine, header: dict) -> None:
        """Note an end-of-stream message and its session's declared end."""
        self._eos.append(line)
        his = [int(v[1]) for v in (header.get("extents") or {}).values()
               if v is not None and len(v) == 2]
        if his:
            session = line.session
            hi = max(his) + int(self.event_clock.shifts.get(session, 0))
            self._end_ns[session] = max(hi, self._end_ns.get(session, hi))

    def _all_ended_ns(self) -> int | None:
        """Where the watermark may go once every session of the job has ended (this run's
        eos lines, or completed by an earlier run), else None."""
        if not self.sessions or not self.close_after_ns:
            return None
        if not self.sessions <= complete_sessions(self._eos) | self.closed_sessions:
            return None
        ends = [self._end_ns[s] for s in self.sessions if s in self._end_ns]
        return max(ends) + self.close_after_ns + 1 if ends else None

    def _finish(self, plan: ReadPlan, wm_ns: int | None) -> None:
        """Record the last real watermark and the complete sessions, before the drain."""
        rows = [r for s in plan.specs
                for r in load_ledger(read_log(self.state_dir, s.topic, s.partition))]
        final = {"watermark_us": None if wm_ns is None else wm_ns // 1000,
                 "complete": sorted(complete_sessions(rows))}
        path = final_path(self.state_dir, self.run_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(final))
        os.replace(tmp, path)
        self._idle = None
        self.teardown()


class SplitLateFn(beam.DoFn):
    """Too-late records (marked by the reader, stamped at its watermark) -> DeadLetter
    (stage ingest, reason too_late) on "dead"; the rest pass on."""

    def process(self, rec: KafkaRecord):
        if not rec.too_late:
            yield rec
            return
        INGEST.count("too_late")
        _, header = event_time_ns(rec.value)
        yield beam.pvalue.TaggedOutput(DEAD, rec.dead(
            "ingest", "too_late", "LateRecord", rec.too_late, header, rec.event_ns))


class ReadKafka(beam.PTransform):
    """PBegin -> {MAIN: KafkaRecord, DEAD: DeadLetter} for the given partitions."""

    def __init__(self, specs: list[PartitionSpec], fn: ReadKafkaFn):
        super().__init__()
        self.specs = tuple(specs)
        self.fn = fn

    def expand(self, pbegin):
        return (pbegin
                | "Plan" >> beam.Create([ReadPlan(self.specs)])
                | "ReadPartitions" >> beam.ParDo(self.fn)
                | "SplitLate" >> beam.ParDo(SplitLateFn()).with_outputs(DEAD, main=MAIN))
