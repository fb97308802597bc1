"""Approximate-time sets across N streams: ROS 2 message_filters' ``ApproximateTime`` policy,
ported rule for rule (include/message_filters/sync_policies/approximate_time.hpp).

A *set* holds one sample per stream. Per stream the synchronizer keeps a deque of samples not
yet used and a ``past`` list (samples the candidate search has moved over). The policy:

1. While every deque has a sample, the *start* is the earliest head (ties: the lowest stream)
   and the *end* the latest head (ties: the highest stream). Every stream other than the end's
   forgets that it dropped samples.
2. Without a candidate: if end - start > ``max_span_ns`` the start is deleted (reason
   ``span``); if the end's stream has dropped samples (a queue overflow) it may not be the
   pivot and the start is deleted (reason ``pivot_dropped``); otherwise the heads become the
   candidate, the end's stream the *pivot* and its time the pivot time. With a candidate: the
   heads replace it when ``(end - cand_end) * (1 + age_penalty) < start - cand_start``
   (``skipped``: the samples moved over before it are deleted). Either way the start moves to
   ``past``.
3. The candidate is published when the start was the pivot, when ``(end - cand_end) *
   (1 + age_penalty) >= pivot - cand_start`` (no later candidate can be better), or, while a
   deque is empty, when a *virtual* search proves it: an empty deque's next sample is assumed
   at ``max(last + inter_message_lower_bound, pivot)``. Publishing deletes the members and puts
   every ``past`` sample back in front of its deque.
4. A push that leaves a stream holding more than ``queue_size`` samples (deque + past, *after*
   processing the push) cancels the search, puts ``past`` back, deletes that stream's oldest
   sample (``queue_overflow``) and marks the stream as having dropped; a cancelled candidate
   restarts the search.

Durations scaled by ``1 + age_penalty`` are truncated toward zero after an x87 long-double
product, as rclcpp's ``Duration::operator*(double)`` does. Differences from ROS, both on
input ROS accepts with only a warning: a sample earlier than its stream's previous one is an
error here (``ValueError``), and inter-message bound violations go to ``warnings``.

ROS never emits a set for the samples still waiting when input ends. ``flush()`` (an explicit
option) ends the input instead: a pending candidate is published as it stands, the search
continues over the remaining samples, and what cannot form a set is reported ``end_of_input``
(as is everything left by ``end(flush=False)``). With queues large enough that nothing
overflows, the sets do not depend on how streams interleave; with overflows they do, exactly
as in ROS: ``approx_time_sets`` therefore takes the arrival order.

``ApproxTimeSync.bound(t)`` is a streaming extension: it tells the synchronizer that no later
sample of any stream is earlier than ``t`` (a watermark) and runs the virtual search with that
floor, so a candidate is published once provably final without waiting for a sample (the same
set ROS publishes when the sample comes, unless a queue overflows in between).
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any

import numpy as np

DROP_REASONS = ("span", "pivot_dropped", "skipped", "queue_overflow", "end_of_input")
ROS_MAX_SPAN_NS = (2**31 - 1) * 1_000_000_000 + 999_999_999   # Duration(INT32_MAX, 999999999)
ROS_AGE_PENALTY = 0.1

Set = tuple[tuple[Any, ...], tuple[int, ...]]
Sample = tuple[int, Any]        # (t_ns, ref)


def scale_duration(ns: int, factor: float) -> int:
    """``rclcpp::Duration(ns) * factor``: the product as an x87 long double (64-bit
    significand, rounded to nearest even), truncated toward zero."""
    ns = int(ns)
    if factor == 1.0 or ns == 0:
        return ns
    p = ns * factor
    if abs(p) < 2.0**40:                        # the double product is within 2e-4 of exact
        frac = abs(p) - int(abs(p))
        if 1e-3 < frac < 1 - 1e-3:
            return int(p)                       # far from an integer: same truncation
    exact = Fraction(ns) * Fraction(factor)
    a = abs(exact)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1                                  # now 2**e <= a < 2**(e+1)
    shift = 63 - e                              # a * 2**shift in [2**63, 2**64)
    m = a * Fraction(2) ** shift
    q, r = divmod(m.numerator, m.denominator)
    if 2 * r > m.denominator or (2 * r == m.denominator and q % 2):
        q += 1
    value = Fraction(q) / Fraction(2) ** shift
    out = value.numerator // value.denominator
    return out if exact > 0 else -out


class ApproxTimeSync:
    """Online ApproximateTime synchronizer (module docstring). ``push`` returns the sets it
    completes, each ``(refs, times)`` in stream order; ``dropped`` lists (stream, ref, t_ns,
    reason) for every sample deleted."""

    def __init__(self, n_streams: int, queue_size: int, max_span_ns: int | None = None, *,
                 age_penalty: float = ROS_AGE_PENALTY,
                 inter_message_lower_bounds_ns: list[int] | None = None):
        if n_streams < 1:
            raise ValueError(f"n_streams must be >= 1, got {n_streams}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_span_ns is None:
            max_span_ns = ROS_MAX_SPAN_NS
        if max_span_ns < 0:
            raise ValueError(f"max_span_ns must be >= 0, got {max_span_ns}")
        if not age_penalty >= 0:
            raise ValueError(f"age_penalty must be >= 0, got {age_penalty}")
        self.n = n_streams
        self.queue_size = int(queue_size)
        self.max_span = int(max_span_ns)
        self.factor = 1.0 + float(age_penalty)
        self.lower = [0] * n_streams
        for i, b in enumerate(inter_message_lower_bounds_ns or []):
            self.set_inter_message_lower_bound(i, b)
        self._dq: list[deque[Sample]] = [deque() for _ in range(n_streams)]
        self._past: list[list[Sample]] = [[] for _ in range(n_streams)]
        self._nonempty = 0
        self._pivot: int | None = None
        self._pivot_t = 0
        self._cand: list[Sample] | None = None
        self._cand_start = self._cand_end = 0
        self._has_dropped = [False] * n_streams
        self._warned = [False] * n_streams
        self._last_t: list[int | None] = [None] * n_streams
        self._ended = False
        self.dropped: list[tuple[int, Any, int, str]] = []
        self.warnings: list[str] = []

    def set_inter_message_lower_bound(self, stream_i: int, lower_bound_ns: int) -> None:
        """``setInterMessageLowerBound``: samples of ``stream_i`` are at least this far apart,
        which lets the virtual search prove a candidate before that stream's next sample."""
        if lower_bound_ns < 0:
            raise ValueError(f"inter-message lower bound must be >= 0, got {lower_bound_ns}")
        self.lower[stream_i] = int(lower_bound_ns)

    # -- input --------------------------------------------------------------------------
    def push(self, stream_i: int, t_ns: int, ref: Any) -> list[Set]:
        """``add<i>``: add a sample; return the sets this completes (possibly none)."""
        if self._ended:
            raise RuntimeError("push after flush()/end(): the synchronizer has ended")
        if not 0 <= stream_i < self.n:
            raise ValueError(f"stream_i must be in [0, {self.n}), got {stream_i}")
        t_ns = int(t_ns)
        last = self._last_t[stream_i]
        if last is not None and t_ns < last:
            raise ValueError(f"stream {stream_i}: time {t_ns} is before the previous sample's "
                             f"{last}; samples must arrive in time order per stream")
        self._last_t[stream_i] = t_ns
        out: list[Set] = []
        dq = self._dq[stream_i]
        dq.append((t_ns, ref))
        if len(dq) == 1:
            self._nonempty += 1
            if self._nonempty == self.n:
                self._process(out)
        else:
            self._check_bound(stream_i)
        past = self._past[stream_i]
        if len(dq) + len(past) > self.queue_size:
            self._nonempty = 0
            self._recover_all()
            t_old, r_old = dq.popleft()         # never empties it: it held > queue_size >= 1
            self.dropped.append((stream_i, r_old, t_old, "queue_overflow"))
            self._has_dropped[stream_i] = True
            if self._pivot is not None:
                self._cand = None
                self._pivot = None
                self._process(out)
        return out

    def bound(self, floor_ns: int) -> list[Set]:
        """No sample pushed from now on, of any stream, is earlier than ``floor_ns`` (a
        watermark): publish the pending candidate if the virtual search proves it with every
        empty deque's next sample at ``max(last + bound, pivot, floor_ns)``."""
        out: list[Set] = []
        while self._pivot is not None and self._nonempty < self.n:
            if not self._virtual_search(out, int(floor_ns)):
                break
            self._process(out)
        return out

    def end(self, flush: bool = False) -> list[Set]:
        """End of input. ``flush=False`` (ROS): nothing more is published; ``flush=True``: a
        pending candidate is published as it stands and the search goes on over what is left.
        Every sample not in a set is reported ``end_of_input``."""
        out: list[Set] = []
        if self._ended:
            return out
        self._ended = True
        if flush:
            while self._pivot is not None:
                self._publish(out)
                self._process(out)
        self._nonempty = 0
        self._recover_all()
        self._cand, self._pivot = None, None
        for i, q in enumerate(self._dq):
            while q:
                t_ns, ref = q.popleft()
                self.dropped.append((i, ref, t_ns, "end_of_input"))
        return out

    def flush(self) -> list[Set]:
        """``end(flush=True)``."""
        return self.end(flush=True)

    def deadline_ns(self) -> int | None:
        """When ``bound`` proves the pending candidate at the latest: a floor at
        ``cand_end + (pivot - cand_start) + 1`` makes every empty deque's virtual time late
        enough (None without a candidate)."""
        if self._pivot is None:
            return None
        return self._cand_end + (self._pivot_t - self._cand_start) + 1

    def candidate_end_ns(self) -> int | None:
        """The pending candidate's latest member time (its tick), or None."""
        return None if self._pivot is None else self._cand_end

    def pending(self) -> list[list[Sample]]:
        """Per stream, the samples held (past, then deque), oldest first."""
        return [list(p) + list(q) for p, q in zip(self._past, self._dq)]

    # -- the policy ---------------------------------------------------------------------
    def _check_bound(self, i: int) -> None:
        """``checkInterMessageBound``: the last two samples of stream ``i`` (only warns)."""
        if self._warned[i]:
            return
        dq = self._dq[i]
        t = dq[-1][0]
        prev = dq[-2][0]
        if t < prev:
            self.warnings.append(f"stream {i}: samples arrived out of order")
            self._warned[i] = True
        elif t - prev < self.lower[i]:
            self.warnings.append(f"stream {i}: samples arrived {t - prev} ns apart, closer than "
                                 f"the lower bound {self.lower[i]} ns")
            self._warned[i] = True

    def _delete_front(self, i: int, reason: str) -> None:
        t_old, r_old = self._dq[i].popleft()
        self.dropped.append((i, r_old, t_old, reason))
        if not self._dq[i]:
            self._nonempty -= 1

    def _move_front_to_past(self, i: int) -> None:
        self._past[i].append(self._dq[i].popleft())
        if not self._dq[i]:
            self._nonempty -= 1

    def _make_candidate(self) -> None:
        self._cand = [q[0] for q in self._dq]
        for i, past in enumerate(self._past):          # a better candidate: forget the past
            for t_old, r_old in past:
                self.dropped.append((i, r_old, t_old, "skipped"))
            past.clear()

    def _recover(self, i: int, count: int | None = None) -> None:
        past, q = self._past[i], self._dq[i]
        k = len(past) if count is None else count
        for _ in range(k):
            q.appendleft(past.pop())
        if q:
            self._nonempty += 1

    def _recover_all(self, counts: list[int] | None = None) -> None:
        for i in range(self.n):
            self._recover(i, None if counts is None else counts[i])

    def _publish(self, out: list[Set]) -> None:
        cand = self._cand
        out.append((tuple(r for _, r in cand), tuple(t for t, _ in cand)))
        self._cand, self._pivot = None, None
        self._nonempty = 0
        for i in range(self.n):                        # recoverAndDelete
            past, q = self._past[i], self._dq[i]
            while past:
                q.appendleft(past.pop())
            q.popleft()
            if q:
                self._nonempty += 1

    def _heads(self) -> tuple[int, int, int, int]:
        """(start stream, start t, end stream, end t): ``getCandidateStart/End``."""
        s_i = e_i = 0
        s_t = e_t = self._dq[0][0][0]
        for i in range(1, self.n):
            t = self._dq[i][0][0]
            if t < s_t:
                s_i, s_t = i, t
            if t >= e_t:
                e_i, e_t = i, t
        return s_i, s_t, e_i, e_t

    def _virtual_time(self, i: int, floor_ns: int | None) -> int:
        q = self._dq[i]
        if q:
            return q[0][0]
        t = max(self._past[i][-1][0] + self.lower[i], self._pivot_t)
        return t if floor_ns is None else max(t, floor_ns)

    def _virtual_search(self, out: list[Set], floor_ns: int | None = None) -> bool:
        """The virtual moves of ``process``: True if the candidate was proved (published)."""
        moves = [0] * self.n
        while True:
            vt = [self._virtual_time(i, floor_ns) for i in range(self.n)]
            e_t = max(vt)                       # the end's index is not needed
            s_i, s_t = 0, vt[0]
            for i in range(self.n):
                if vt[i] < s_t:
                    s_i, s_t = i, vt[i]
            if scale_duration(e_t - self._cand_end, self.factor) >= \
                    self._pivot_t - self._cand_start:
                self._publish(out)              # also undoes the virtual moves
                return True
            if scale_duration(e_t - self._cand_end, self.factor) < s_t - self._cand_start:
                self._nonempty = 0
                self._recover_all(moves)
                return False
            # s_i != pivot and s_t < pivot time (ROS asserts both): s_i has a real sample
            self._move_front_to_past(s_i)
            moves[s_i] += 1

    def _process(self, out: list[Set]) -> None:
        while self._nonempty == self.n:
            s_i, s_t, e_i, e_t = self._heads()
            for i in range(self.n):
                if i != e_i:
                    self._has_dropped[i] = False
            if self._pivot is None:
                if e_t - s_t > self.max_span:
                    self._delete_front(s_i, "span")
                    continue
                if self._has_dropped[e_i]:
                    self._delete_front(s_i, "pivot_dropped")
                    continue
                self._make_candidate()
                self._cand_start, self._cand_end = s_t, e_t
                self._pivot, self._pivot_t = e_i, e_t
                self._move_front_to_past(s_i)
            else:
                if scale_duration(e_t - self._cand_end, self.factor) >= s_t - self._cand_start:
                    self._move_front_to_past(s_i)
                else:
                    self._make_candidate()
                    self._cand_start, self._cand_end = s_t, e_t
                    self._move_front_to_past(s_i)
            age_check = scale_duration(e_t - self._cand_end, self.factor)
            if s_i == self._pivot:
                self._publish(out)
            elif age_check >= self._pivot_t - self._cand_start:
                self._publish(out)
            elif self._nonempty < self.n:
                self._virtual_search(out)


def arrival_by_time(t_arrays: list[np.ndarray]) -> np.ndarray:
    """The arrival order of samples known only by their times: merged by time, ties by stream
    (each stream in its own order). Stream indices, one per sample."""
    if not t_arrays:
        return np.zeros(0, np.int64)
    times = np.concatenate(t_arrays)
    stream = np.concatenate([np.full(a.size, i, np.int64) for i, a in enumerate(t_arrays)])
    index = np.concatenate([np.arange(a.size, dtype=np.int64) for a in t_arrays])
    return stream[np.lexsort((index, stream, times))]


def approx_time_sets(t_arrays: list, max_span_ns: int | None = None, queue_size: int = 64, *,
                     arrival=None, age_penalty: float = ROS_AGE_PENALTY,
                     inter_message_lower_bounds_ns: list[int] | None = None,
                     flush: bool = False, with_dropped: bool = False):
    """Batch: the sets ``ApproxTimeSync`` publishes -> int64[k, N] sample indices.

    ``t_arrays``: per stream, its sample times in its own order (ascending). ``arrival``: the
    order the samples arrive in, as one stream index per sample (the k-th occurrence of stream
    i is its k-th sample), as ROS sees them; default ``arrival_by_time`` (the order of files,
    which carry no arrival order). ``flush``: end the input with ``flush()`` (a trailing set
    ROS never emits); default: ROS. With ``with_dropped`` also returns the drop records
    (stream, index, t_ns, reason), every sample not in a set included (``end_of_input``)."""
    arrays = [np.asarray(a, np.int64) for a in t_arrays]
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"stream {i}: times must be 1-D, got shape {a.shape}")
        if a.size > 1 and (a[1:] < a[:-1]).any():
            raise ValueError(f"stream {i}: times must be sorted ascending")
    if arrival is None:
        order = arrival_by_time(arrays)
    else:
        order = np.asarray(arrival, np.int64).reshape(-1)
        counts = np.bincount(order, minlength=len(arrays)) if order.size else \
            np.zeros(len(arrays), np.int64)
        if order.size and (order.min() < 0 or order.max() >= len(arrays)) or \
                counts.tolist() != [a.size for a in arrays]:
            raise ValueError(f"arrival must name every sample once: stream counts "
                             f"{[a.size for a in arrays]}, arrival has {counts.tolist()}")
    sync = ApproxTimeSync(len(arrays), queue_size, max_span_ns, age_penalty=age_penalty,
                          inter_message_lower_bounds_ns=inter_message_lower_bounds_ns)
    nxt = [0] * len(arrays)
    sets: list[Set] = []
    for s in order.tolist():
        k = nxt[s]
        nxt[s] += 1
        sets.extend(sync.push(s, int(arrays[s][k]), k))
    sets.extend(sync.end(flush=flush))
    idx = np.array([refs for refs, _ in sets], np.int64).reshape(len(sets), len(arrays))
    return (idx, sync.dropped) if with_dropped else idx
