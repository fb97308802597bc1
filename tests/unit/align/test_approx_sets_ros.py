"""ROS 2 message_filters ApproximateTime parity: the upstream test vectors
(test/test_approximate_time_policy.cpp of ros2/message_filters), translated to data.

Each case: the arrivals in order as (time in s, topic), the queue size, the inter-message lower
bounds, and the sets ROS publishes (by time, in order). The C++ harness feeds the arrivals one
by one and never flushes, so the online synchronizer must publish exactly these sets and no
more, and the batch function fed the same arrival order must return the same. DroppedMessages
and RateBound are two runs each (queue 1 and 2; bounds 1.5 s and 2 s): 12 cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmalign.transforms.align.approx_sets import ApproxTimeSync, approx_time_sets

S = 1_000_000_000

_DROPPED_IN = [(0, 0), (1, 1), (3, 1), (4, 0), (7, 1), (8, 0), (10, 0), (11, 1), (13, 0),
               (14, 1)]
_RATE_IN = [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)]

# name: (arrivals [(t_s, topic)], n_topics, queue_size, lower bounds {topic: s}, sets)
CASES = {
    "ExactMatch": ([(0, 0), (0, 1), (3, 0), (3, 1), (6, 0), (6, 1)], 2, 10, {},
                   [(0, 0), (3, 3), (6, 6)]),
    "PerfectMatch": ([(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)], 2, 10, {},
                     [(0, 1), (3, 4)]),
    "ImperfectMatch": ([(0, 0), (1, 1), (2, 0), (3, 0), (5, 1), (6, 0), (7, 1)], 2, 10, {},
                       [(0, 1), (6, 5)]),
    "Acceleration": ([(0, 0), (7, 1), (12, 0), (15, 1), (17, 0), (18, 1)], 2, 10, {},
                     [(12, 7), (17, 18)]),
    "DroppedMessages/queue1": (_DROPPED_IN, 2, 1, {}, [(4, 3), (10, 11)]),
    "DroppedMessages/queue2": (_DROPPED_IN, 2, 2, {}, [(0, 1), (4, 3), (8, 7), (10, 11)]),
    "LongQueue": ([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0),
                   (3, 1), (9, 0), (10, 0), (11, 0), (12, 0), (10, 1), (13, 0)], 2, 5, {},
                  [(10, 10)]),
    "DoublePublish": ([(0, 0), (1, 1), (3, 1), (3, 0)], 2, 10, {}, [(0, 1), (3, 3)]),
    "FourTopics": ([(0, 0), (1, 1), (2, 2), (3, 3), (5, 0), (5, 3), (6, 1), (6, 2), (8, 0),
                    (9, 1), (10, 2), (11, 3), (10, 0), (13, 0), (14, 1)], 4, 10, {},
                   [(0, 1, 2, 3), (5, 6, 6, 5), (10, 9, 10, 11)]),
    "EarlyPublish": ([(0, 0), (1, 1), (2, 2), (3, 3), (7, 0)], 4, 10, {}, [(0, 1, 2, 3)]),
    "RateBound/1.5s": (_RATE_IN, 2, 10, {0: 1.5}, [(0, 1), (3, 4)]),
    "RateBound/2s": (_RATE_IN, 2, 10, {0: 2.0}, [(0, 1), (3, 4), (6, 7)]),
}


def _bounds(n: int, lower: dict[int, float]) -> list[int]:
    # rclcpp::Duration(1, 0) * 1.5 (ROS's s*1.5): exact here
    return [round(lower.get(i, 0) * S) for i in range(n)]


def run_online(case):
    arrivals, n, queue, lower, _ = case
    sync = ApproxTimeSync(n, queue, inter_message_lower_bounds_ns=_bounds(n, lower))
    got = []
    for t, topic in arrivals:
        for refs, times in sync.push(topic, t * S, (topic, t)):
            assert refs == tuple((i, times[i] // S) for i in range(n))
            got.append(tuple(x // S for x in times))
    return got


def run_batch(case):
    arrivals, n, queue, lower, _ = case
    per_topic = [np.array([t * S for t, k in arrivals if k == i], np.int64) for i in range(n)]
    idx = approx_time_sets(per_topic, None, queue, arrival=[k for _, k in arrivals],
                           inter_message_lower_bounds_ns=_bounds(n, lower))
    return [tuple(int(per_topic[i][k]) // S for i, k in enumerate(row)) for row in idx]


@pytest.mark.parametrize("name", list(CASES))
def test_online_matches_ros(name):
    assert run_online(CASES[name]) == CASES[name][4]


@pytest.mark.parametrize("name", list(CASES))
def test_batch_matches_ros(name):
    assert run_batch(CASES[name]) == CASES[name][4]


def test_parity_is_12_of_12_both_ways():
    assert len(CASES) == 12
    online = sum(run_online(c) == c[4] for c in CASES.values())
    batch = sum(run_batch(c) == c[4] for c in CASES.values())
    assert (online, batch) == (12, 12)


def test_flush_is_an_explicit_option():
    """EarlyPublish's trailing candidate (e and nothing else) is never published by ROS; a
    flush publishes the pending sets of what is there, and reports the rest."""
    arrivals, n, queue, _, want = CASES["PerfectMatch"]
    per_topic = [np.array([t * S for t, k in arrivals if k == i], np.int64) for i in range(n)]
    order = [k for _, k in arrivals]
    plain, dropped = approx_time_sets(per_topic, None, queue, arrival=order, with_dropped=True)
    assert plain.tolist() == [[0, 0], [1, 1]]
    assert sorted((s, r, why) for s, r, _, why in dropped) == [(0, 2, "end_of_input"),
                                                                (1, 2, "end_of_input")]
    flushed = approx_time_sets(per_topic, None, queue, arrival=order, flush=True)
    assert flushed.tolist() == [[0, 0], [1, 1], [2, 2]]


def test_overflow_processes_first_then_drops_and_blocks_the_pivot():
    """DroppedMessages with queue 1, step by step. B (t=3) makes topic 1 hold two samples: the
    push is processed first, then the limit puts a back, drops A (queue_overflow) and restarts
    the search, in which B may not be the pivot (its topic dropped A): a is deleted
    (pivot_dropped) instead of being paired with B."""
    sync = ApproxTimeSync(2, 1)
    assert sync.push(0, 0, "a") == []
    assert sync.push(1, 1 * S, "A") == []       # candidate (a, A), not provable yet
    assert sync.dropped == []
    assert sync.push(1, 3 * S, "B") == []
    assert [(s, r, why) for s, r, _, why in sync.dropped] == [(1, "A", "queue_overflow"),
                                                                (0, "a", "pivot_dropped")]
    assert sync.push(0, 4 * S, "b") == []       # candidate (b, B): topic 0 is the pivot
    assert sync.push(1, 7 * S, "C") == [(("b", "B"), (4 * S, 3 * S))]


def test_age_penalty_prefers_the_newer_candidate():
    """Without the age penalty two equally tight candidates keep the older one; ROS's 0.1
    penalty makes the newer one win when it is at most 10 % wider... and keeps the older when
    the newer is wider than that."""
    # stream 0: 0, 10; stream 1: 5 (pivot). Candidates: (0, 5) span 5, (10, 5) span 5
    for penalty, want in ((0.0, [[0, 0]]), (0.1, [[0, 0]])):
        got = approx_time_sets([np.array([0, 10]), np.array([5])], None, 10,
                               age_penalty=penalty)
        assert got.tolist() == want
    # stream 1 pivot at 100; stream 0: 0 (span 100) then 205 (span 105): ROS's rule compares
    # (end - cand_end) * 1.1 = 115.5 -> 115 >= start - cand_start = 100: the older stays
    got = approx_time_sets([np.array([0, 205]), np.array([100])], None, 10)
    assert got.tolist() == [[0, 0]]


def test_scale_duration_truncates_like_rclcpp():
    from mmalign.transforms.align.approx_sets import scale_duration
    assert scale_duration(10, 1.1) == 11
    assert scale_duration(105, 1.1) == 115
    assert scale_duration(-105, 1.1) == -115
    assert scale_duration(3 * S, 1.1) == 3_300_000_000
    assert scale_duration(2**62, 1.0) == 2**62
    # the double product of 7 * 1.1 is 7.700000000000001: truncation gives 7
    assert scale_duration(7, 1.1) == 7
