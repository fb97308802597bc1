"""The Kafka reader's watermark once every session of the job has ended: each declared stream
sent its end-of-stream message, so no record can come for them and their last buckets close
now instead of at the job's stop (transforms/io/kafka.py, ``ReadKafkaFn``)."""

from __future__ import annotations

from mmalign.schemas.kafka import KafkaSettings
from mmalign.schemas.ledger import LedgerLine
from mmalign.transforms.io.kafka import EventClock, ReadKafkaFn

S = 10**9


def _reader(**kw) -> ReadKafkaFn:
    return ReadKafkaFn(KafkaSettings(), max_out_of_orderness_ns=2 * S, allowed_lateness_ns=S,
                       state_dir="/nonexistent", run_id="r", stop_after_idle_s=None, **kw)


def _eos(session: str, stream: str, extents: dict) -> tuple[LedgerLine, dict]:
    """An end-of-stream message as the reader sees it: its ledger line and its header."""
    header = {"session": session, "stream": stream, "eos": True, "t_ns": 0, "extents": extents}
    return LedgerLine.of_header(0, "r", header), header


def test_the_watermark_passes_the_end_only_when_every_session_has_ended():
    ext_a = {"cam": [0, 30 * S], "mic": [S, 29 * S]}
    ext_b = {"imu": [0, 12 * S]}
    r = _reader(sessions=frozenset({"a", "b"}), close_after_ns=5 * S,
                event_clock=EventClock(shifts={"b": 100 * S}))
    assert r._all_ended_ns() is None
    r._ended(*_eos("a", "cam", ext_a))
    assert r._all_ended_ns() is None                 # a's mic has not ended
    r._ended(*_eos("a", "mic", ext_a))
    assert r._all_ended_ns() is None                 # b has not ended
    r._ended(*_eos("b", "imu", ext_b))
    # b ends last on the job's shared clock: 100 s shift + 12 s
    assert r._all_ended_ns() == 112 * S + 5 * S + 1


def test_sessions_completed_by_an_earlier_run_count_as_ended():
    r = _reader(sessions=frozenset({"a", "old"}), close_after_ns=S,
                closed_sessions=frozenset({"old"}))
    r._ended(*_eos("a", "cam", {"cam": [0, 7 * S]}))
    assert r._all_ended_ns() == 8 * S + 1
    # without the job's session list (or a close distance) the reader never jumps
    bare = _reader()
    bare._ended(*_eos("a", "cam", {"cam": [0, 7 * S]}))
    assert bare._all_ended_ns() is None
