"""Approximate-time sets: the online class against a declarative brute-force reference.

The reference is the ROS policy without the age penalty (smallest span, ties: the earliest
state) and with the explicit end-of-input flush, so these tests pass ``age_penalty=0.0`` and
``flush=True``; ROS's own defaults and test vectors are in test_approx_sets_ros.py."""

import itertools

import numpy as np
import pytest

from mmalign.transforms.align.approx_sets import ApproxTimeSync, approx_time_sets


def reference(arrays, max_span):
    """The semantics of transforms/approx_sets.py, enumerated: (sets, drops by reason)."""
    N = len(arrays)
    cur = [0] * N
    sets, drops = [], []
    while all(cur[i] < len(arrays[i]) for i in range(N)):
        heads = [(int(arrays[i][cur[i]]), i) for i in range(N)]
        s, e = min(heads), max(heads)
        if e[0] - s[0] > max_span:
            drops.append((s[1], cur[s[1]], "span"))
            cur[s[1]] += 1
            continue
        pivot = e
        best = None
        ranges = [range(cur[i], len(arrays[i])) for i in range(N)]
        for X in itertools.product(*ranges):
            keys = [(int(arrays[i][X[i]]), i) for i in range(N)]
            start = min(keys)
            if start > pivot:
                continue            # the sweep stops once the pivot is the earliest
            preds = [(int(arrays[i][X[i] - 1]), i) for i in range(N) if X[i] > cur[i]]
            if any(p >= start for p in preds):
                continue            # not a sweep state: a skipped sample is after the start
            span = max(keys)[0] - start[0]
            if best is None or (span, start) < (best[0], best[1]):
                best = (span, start, X)
        X = best[2]
        for i in range(N):
            drops.extend((i, k, "skipped") for k in range(cur[i], X[i]))
        sets.append(tuple(X))
        cur = [x + 1 for x in X]
    for i in range(N):
        drops.extend((i, k, "end_of_input") for k in range(cur[i], len(arrays[i])))
    return sets, drops


def random_streams(rng, N, n_max=7):
    out = []
    for _ in range(N):
        k = int(rng.integers(1, n_max + 1))
        out.append(np.sort(rng.choice(np.arange(0, 60), k, replace=rng.random() < 0.3)))
    return out


@pytest.mark.parametrize("seed", range(150))
def test_batch_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    N = 2 + seed % 3
    arrays = random_streams(rng, N, n_max=7 if N < 4 else 4)
    for max_span in (0, 5, 15, 1000):
        idx, dropped = approx_time_sets(arrays, max_span, queue_size=100, with_dropped=True,
                                        age_penalty=0.0, flush=True)
        sets, drops = reference(arrays, max_span)
        assert [tuple(r) for r in idx.tolist()] == sets, (arrays, max_span)
        assert sorted((s, r, why) for s, r, _, why in dropped) == sorted(drops)
        # every sample is in exactly one set or one drop record
        used = {(i, int(k)) for row in idx for i, k in enumerate(row)}
        gone = {(s, r) for s, r, _, _ in dropped}
        assert not used & gone
        assert len(used) + len(gone) == sum(a.size for a in arrays)
        for row in idx:
            t = [arrays[i][k] for i, k in enumerate(row)]
            assert max(t) - min(t) <= max_span
        assert np.all(np.diff(idx, axis=0) > 0)      # sets do not cross; samples used once


@pytest.mark.parametrize("seed", range(40))
def test_online_output_does_not_depend_on_arrival_interleaving(seed):
    rng = np.random.default_rng(1000 + seed)
    N = 3
    arrays = random_streams(rng, N, n_max=12)
    want = approx_time_sets(arrays, 20, queue_size=100, flush=True)
    # arrivals: per-stream order kept, streams interleaved at random (delayed stream etc.)
    order = np.concatenate([np.full(a.size, i) for i, a in enumerate(arrays)])
    rng.shuffle(order)
    sync = ApproxTimeSync(N, queue_size=100, max_span_ns=20)
    nxt = [0] * N
    got, emitted_at = [], []
    for step, i in enumerate(order):
        k = nxt[i]
        nxt[i] += 1
        new = sync.push(int(i), int(arrays[i][k]), (i, k))
        got += new
        emitted_at += [step] * len(new)
    got += sync.flush()
    assert [tuple(k for _, k in refs) for refs, _ in got] == [tuple(r) for r in want.tolist()]
    for refs, times in got:
        assert times == tuple(int(arrays[i][k]) for i, k in refs)


def test_sets_are_emitted_online_before_the_end():
    sync = ApproxTimeSync(2, queue_size=10, max_span_ns=100)
    out = []
    for t in range(0, 1000, 100):
        out += sync.push(0, t, ("a", t))
        out += sync.push(1, t + 3, ("b", t + 3))
    # all but the last pair are provably final before flush
    assert len(out) >= 9
    assert out[0] == ((("a", 0), ("b", 3)), (0, 3))
    out += sync.flush()
    assert [times for _, times in out] == [(t, t + 3) for t in range(0, 1000, 100)]
    assert sync.dropped == []


def test_a_blocked_search_waits_for_the_blocking_stream_as_in_ros():
    # pivot s1@10, best {5, 10, 6, 4} (span 6), stream 0 blocked after 5. ROS searches only
    # when an empty deque gets a sample: stream 2's 20 lands behind its 6 and proves nothing
    # (the virtual search, stream 0's next at the pivot time, cannot prove it either)
    sync = ApproxTimeSync(4, queue_size=10, max_span_ns=100, age_penalty=0.0)
    for i, t in [(3, 4), (0, 5), (2, 6), (1, 10), (3, 14)]:
        assert sync.push(i, t, (i, t)) == []
    assert sync.push(2, 20, (2, 20)) == []
    # stream 0's next sample (here 30) runs the search, which proves it
    out = sync.push(0, 30, (0, 30))
    assert out == [(((0, 5), (1, 10), (2, 6), (3, 4)), (5, 10, 6, 4))]
    # a tighter candidate found after the first one replaces it
    sync = ApproxTimeSync(4, queue_size=10, max_span_ns=100, age_penalty=0.0)
    for i, t in [(3, 4), (0, 5), (2, 6), (1, 10), (3, 14), (0, 9)]:
        assert sync.push(i, t, (i, t)) == []
    assert sync.push(2, 9, (2, 9)) == []
    assert sync.flush() == [(((0, 9), (1, 10), (2, 9), (3, 14)), (9, 10, 9, 14))]
    assert sorted((s, r) for s, r, _, why in sync.dropped if why == "skipped") == [
        (0, (0, 5)), (2, (2, 6)), (3, (3, 4))]


def test_bound_publishes_a_proven_candidate_without_waiting():
    # the streaming extension: a watermark at 20 says stream 0's next sample is >= 20, so
    # every later candidate holds [10, 20]: the pending one is final
    sync = ApproxTimeSync(4, queue_size=10, max_span_ns=100, age_penalty=0.0)
    for i, t in [(3, 4), (0, 5), (2, 6), (1, 10), (3, 14)]:
        assert sync.push(i, t, (i, t)) == []
    assert sync.bound(15) == []                  # [10, 15] is no wider than the best (6)
    assert sync.bound(20) == [(((0, 5), (1, 10), (2, 6), (3, 4)), (5, 10, 6, 4))]


def test_queue_overflow_drops_the_oldest_and_reports_it():
    sync = ApproxTimeSync(2, queue_size=3, max_span_ns=1000)
    for t in range(10):                      # stream 1 silent: stream 0 overflows
        assert sync.push(0, t * 10, t) == []
    assert [(s, r, why) for s, r, _, why in sync.dropped] == [(0, r, "queue_overflow")
                                                                for r in range(7)]
    out = sync.push(1, 95, "x")
    out += sync.flush()
    assert out == [((9, "x"), (90, 95))]
    assert sorted(r for s, r, _, why in sync.dropped if s == 0) == list(range(9))
    assert {why for *_, why in sync.dropped} == {"queue_overflow", "skipped"}


def test_max_span_drops_samples_that_can_never_fit():
    arrays = [np.array([0, 100, 200]), np.array([150, 201])]
    # ROS: (200, 201) is a candidate still waiting when the input ends: never published
    assert approx_time_sets(arrays, 10, queue_size=10).tolist() == []
    idx, dropped = approx_time_sets(arrays, 10, queue_size=10, with_dropped=True, flush=True)
    assert idx.tolist() == [[2, 1]]
    assert [(s, r, why) for s, r, _, why in dropped] == [(0, 0, "span"), (0, 1, "span"),
                                                         (1, 0, "span")]


def test_bad_input_is_a_clear_error():
    sync = ApproxTimeSync(2, queue_size=3, max_span_ns=10)
    sync.push(0, 5, "a")
    with pytest.raises(ValueError, match="stream 0: time 4 is before the previous sample's 5"):
        sync.push(0, 4, "b")
    with pytest.raises(ValueError, match=r"stream_i must be in \[0, 2\)"):
        sync.push(2, 4, "b")
    sync.flush()
    with pytest.raises(RuntimeError, match="push after flush"):
        sync.push(1, 9, "c")
    with pytest.raises(ValueError, match="queue_size must be >= 1"):
        ApproxTimeSync(2, queue_size=0, max_span_ns=10)
    with pytest.raises(ValueError, match="stream 1: times must be sorted"):
        approx_time_sets([np.array([1]), np.array([3, 2])], 10, 10)


def test_empty_and_single_stream():
    assert approx_time_sets([np.array([], np.int64), np.array([1, 2])], 10, 5).shape == (0, 2)
    assert approx_time_sets([np.array([4, 9])], 0, 5).tolist() == [[0], [1]]
