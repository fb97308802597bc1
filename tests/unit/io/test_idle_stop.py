"""``stop_after_idle_s`` in the Kafka reader (transforms/io/kafka.py, ``IdleStop``): the stop
comes the idle time after the last record, not after the first empty poll plus a poll."""

from mmalign.transforms.io.kafka import IdleStop


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_idle_counts_from_the_last_records_and_the_last_poll_waits_what_is_left():
    c = Clock()
    idle = IdleStop(3.0, 0.3, clock=c)
    c.t += 0.5
    assert idle.after_poll(polled=True, caught_up=True) == 0.0      # records: poll again now
    last = c.t
    polls = 0
    while True:                      # empty polls: each waits, then defers, as the reader does
        wait = idle.wait_s()
        assert 0 <= wait <= 0.3
        c.t += wait + 0.02           # the poll's wait and the end-offsets round trip
        polls += 1
        defer = idle.after_poll(polled=False, caught_up=True)
        if defer is None:
            break
        assert 0 < defer <= 0.1
        c.t += defer
    assert 3.0 <= c.t - last <= 3.0 + 0.02                # stopped on time, not a poll later
    assert polls >= 2


def test_a_backlog_or_records_restart_the_idle_time():
    c = Clock()
    idle = IdleStop(1.0, 0.3, clock=c)
    c.t += 0.9
    assert idle.after_poll(polled=False, caught_up=True) is not None
    c.t += 0.2                              # 1.1 s since the start, but a backlog was found
    assert idle.after_poll(polled=False, caught_up=False) == 0.1
    c.t += 0.9
    assert idle.after_poll(polled=False, caught_up=True) is not None
    c.t += 0.2
    assert idle.after_poll(polled=False, caught_up=True) is None     # 1.1 s idle: stop


def test_an_empty_job_stops_the_idle_time_after_its_start():
    c = Clock()
    idle = IdleStop(2.0, 0.3, clock=c)
    c.t += 2.0
    assert idle.wait_s() == 0.0
    assert idle.after_poll(polled=False, caught_up=True) is None


def test_without_a_stop_the_reader_polls_on():
    c = Clock()
    idle = IdleStop(None, 0.3, clock=c)
    c.t += 1e6
    assert idle.wait_s() == 0.3
    assert idle.after_poll(polled=False, caught_up=True) == 0.1


def test_the_stop_is_due_once_the_idle_time_has_passed():
    c = Clock()
    idle = IdleStop(2.0, 0.3, clock=c)
    c.t += 1.9
    assert not idle.due()
    c.t += 0.1
    assert idle.due()
    idle.after_poll(polled=True, caught_up=True)            # a record: idle time restarts
    assert not idle.due()
    assert not IdleStop(None, 0.3, clock=c).due()            # no idle stop: never due
