"""The Kafka reader at the end of a backlog (transforms/io/kafka.py, ``ReadKafkaFn.process``):
once every session of the job has ended, a poll that returned records does not ask the broker
for end offsets (the request waits behind the fetch the poll left pending, up to 0.2 s, and
the sessions' last buckets waited with it); its watermark goes to the sessions' end at once.
Polls before that, and empty polls (the idle stop needs them), still ask; the poll that may
stop the reader asks on a connection of its own (no pending fetch to wait behind)."""

from __future__ import annotations

from types import SimpleNamespace

from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from kafka import TopicPartition

from mmalign.schemas.envelope import Envelope, encode
from mmalign.schemas.kafka import KafkaSettings
from mmalign.transforms.io.kafka import (
    PartitionSpec,
    Positions,
    PositionsTracker,
    ReadKafkaFn,
    ReadPlan,
)

S = 10**9
TOPIC = "mmalign.video"


class FakeConsumer:
    """The calls the reader makes on its kafka-python consumer, over one partition."""

    def __init__(self, polls: list[list]):
        self.polls, self.end_requests, self.pos = list(polls), 0, 0

    def position(self, tp):
        return self.pos

    def seek(self, tp, offset):
        self.pos = offset

    def poll(self, timeout_ms):
        batch = self.polls.pop(0) if self.polls else []
        if batch:
            self.pos = batch[-1].offset + 1
            return {TopicPartition(TOPIC, 0): batch}
        return {}

    def end_offsets(self, tps):
        self.end_requests += 1
        return {tp: self.pos for tp in tps}

    def close(self):
        pass


class Tracker(PositionsTracker):
    deferred = None

    def defer_remainder(self, delay):
        self.deferred = delay


def _message(offset: int, t_s: float, eos: bool = False):
    env = Envelope(session="a", stream="cam", modality="video", seq=offset,
                   t_ns=round(t_s * S), t_last_ns=round(t_s * S), source_uri="mem://cam",
                   eos=eos, extents={"cam": [0, 10 * S]} if eos else None)
    return SimpleNamespace(topic=TOPIC, partition=0, offset=offset, key=b"a",
                           value=encode(env, b""), timestamp=0, headers=[])


def _run(tmp_path, polls: list[list]) -> tuple[FakeConsumer, list]:
    """The reader's process() once per poll; (consumer, the watermark after each, µs)."""
    reader = ReadKafkaFn(KafkaSettings(), max_out_of_orderness_ns=2 * S,
                         allowed_lateness_ns=2 * S, state_dir=str(tmp_path), run_id="r",
                         stop_after_idle_s=None, sessions=frozenset({"a"}), close_after_ns=S)
    consumer = FakeConsumer(polls)
    reader._consumer = consumer
    consumer.seek(TopicPartition(TOPIC, 0), 0)
    plan = ReadPlan((PartitionSpec(TOPIC, 0, 0),))
    wm = ManualWatermarkEstimator(None)
    restriction, marks = Positions((0,), (None,)), []
    for _ in polls:
        tracker = Tracker(restriction)
        list(reader.process(plan, tracker, wm))
        assert tracker.deferred is not None          # checkpointed, not finished
        restriction = tracker.current_restriction()
        current = wm.current_watermark()
        marks.append(None if current is None else current.micros)
    return consumer, marks


def test_the_poll_that_completes_every_session_skips_the_end_offsets_request(tmp_path):
    consumer, marks = _run(tmp_path, [[_message(0, 0.0), _message(1, 1.0)],
                                      [_message(2, 9.0), _message(3, 10.0, eos=True)]])
    # the first poll asks (sessions still open); the second, with the eos, does not
    assert consumer.end_requests == 1
    # caught up after the first poll: max event 1 s - 4 s hold; then the session's end + 1 s
    assert marks == [(1 * S - 4 * S) // 1000, (10 * S + S + 1) // 1000]


def test_open_sessions_and_empty_polls_still_ask_for_end_offsets(tmp_path):
    consumer, marks = _run(tmp_path, [[_message(0, 0.0)], [_message(1, 5.0)], [],
                                      [_message(2, 10.0, eos=True)], []])
    # polls 1, 2 (sessions open) and 3, 5 (empty: the idle stop needs to know) ask; 4 not
    assert consumer.end_requests == 4
    assert marks[1] == (5 * S - 4 * S) // 1000
    assert marks[3] == marks[4] == (10 * S + S + 1) // 1000


def _ends(end: int) -> FakeConsumer:
    """The reader's second connection, asked only by the poll that may stop it: the
    partition's end offset is ``end``."""
    ends = FakeConsumer([])
    ends.pos = end
    return ends


def test_the_poll_that_may_stop_the_reader_asks_on_its_own_connection(tmp_path):
    """The stop's end offsets do not wait behind the reader's pending fetch: asked on a
    connection of its own, the stop comes the idle time after the last record."""
    reader = ReadKafkaFn(KafkaSettings(), max_out_of_orderness_ns=2 * S,
                         allowed_lateness_ns=2 * S, state_dir=str(tmp_path), run_id="r",
                         stop_after_idle_s=0.0)
    consumer, ends = FakeConsumer([[]]), _ends(0)
    reader._consumer, reader._ends = consumer, ends
    plan = ReadPlan((PartitionSpec(TOPIC, 0, 0),))
    tracker = Tracker(Positions((0,), (None,)))
    list(reader.process(plan, tracker, ManualWatermarkEstimator(None)))
    assert (ends.end_requests, consumer.end_requests) == (1, 0)
    assert tracker.deferred is None and tracker.current_restriction().done      # stopped
    assert (tmp_path / "final-r.json").exists()


def test_a_backlog_seen_on_the_stop_connection_keeps_the_reader_going(tmp_path):
    reader = ReadKafkaFn(KafkaSettings(), max_out_of_orderness_ns=2 * S,
                         allowed_lateness_ns=2 * S, state_dir=str(tmp_path), run_id="r",
                         stop_after_idle_s=0.0)
    consumer, ends = FakeConsumer([[]]), _ends(5)       # 5 records not read yet
    reader._consumer, reader._ends = consumer, ends
    plan = ReadPlan((PartitionSpec(TOPIC, 0, 0),))
    tracker = Tracker(Positions((0,), (None,)))
    list(reader.process(plan, tracker, ManualWatermarkEstimator(None)))
    assert ends.end_requests == 1 and tracker.deferred is not None    # polls again
