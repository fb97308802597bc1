"""Approximate-time sets across N streams: the ROS message_filters ApproximateTime policy.

A *set* holds one sample per stream; its *span* is latest minus earliest time. Samples arrive
in time order per stream (not across streams). Exact semantics implemented (and verified
against a brute-force reference in tests/unit/align/test_approx_sets.py), with queues large enough:

1. Order samples by the key (t, stream). Let the *heads* be each stream's first sample not yet
   used or dropped. If the heads span more than ``max_span_ns``, the earliest head can never be
   in a valid set (any set holding it also holds a sample of the latest head's stream at or
   after that head): it is dropped (reason ``span``) and we start again.
2. Else the latest head is the *pivot* P. The candidates are the sweep states: for every
   position of a sweep line moving through the samples in key order, starting before the heads,
   the set of each stream's first sample after the line - from the heads up to and including
   the state in which P is the earliest sample. A state needing a sample a stream has not got
   (at end of input) is not a candidate.
3. The candidate of smallest span is emitted (ties: the earliest state). The samples each stream
   skipped before its member are dropped (reason ``skipped``); the rest stay for the next set.
4. At end of input (``flush``) the pending search ends with what exists and sets continue while
   every stream has samples; whatever remains is dropped (reason ``end_of_input``).

Properties that follow (those of ROS): each sample is used at most once; sets do not cross
(per stream, members of later sets are later); each set is the smallest among the sets
contiguous to the previous one; no emitted set spans more than ``max_span_ns``; every sample
ends up in exactly one set or one drop record.

Online: a set is emitted as soon as no later sample can give a tighter candidate: when the
sweep reaches the pivot; when the latest front minus P is already >= the best span (every
later candidate holds P and fronts at least as late); or, while streams wait for samples, when
continuing the sweep over the known fronts proves the same (``_proved_by_known_fronts``, the
counterpart of ROS's virtual moves; otherwise a sample landing inside the known fronts could
still be tighter, so waiting is necessary). The emitted sets do not depend on how arrivals
interleave across streams. Bounded
queues: a stream holding more than ``queue_size`` samples (used in the pending search or not)
drops its oldest (reason ``queue_overflow``) and the pending search restarts; only then can
the result depend on the arrival order (as in ROS). Cost: O(N) per sweep step, Python, since
the policy is sequential by definition.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

DROP_REASONS = ("span", "skipped", "queue_overflow", "end_of_input")

Set = tuple[tuple[Any, ...], tuple[int, ...]]


class ApproxTimeSync:
    """Online approximate-time synchronizer. ``push`` returns the sets it completes."""

    def __init__(self, n_streams: int, queue_size: int, max_span_ns: int):
        if n_streams < 1:
            raise ValueError(f"n_streams must be >= 1, got {n_streams}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_span_ns < 0:
            raise ValueError(f"max_span_ns must be >= 0, got {max_span_ns}")
        self.n = n_streams
        self.queue_size = queue_size
        self.max_span = int(max_span_ns)
        self._q: list[deque[tuple[int, Any]]] = [deque() for _ in range(n_streams)]
        self._front = [0] * n_streams           # sweep position in each queue
        self._last_t: list[int | None] = [None] * n_streams
        self._pivot: int | None = None
        self._pivot_t = 0
        self._best: list[int] = []
        self._best_span = 0
        self._ended = False
        self.dropped: list[tuple[int, Any, int, str]] = []   # (stream, ref, t_ns, reason)

    # -- input --------------------------------------------------------------------------
    def push(self, stream_i: int, t_ns: int, ref: Any) -> list[Set]:
        """Add a sample; return the sets this completes (possibly none)."""
        if self._ended:
            raise RuntimeError("push after flush(): the synchronizer has ended")
        if not 0 <= stream_i < self.n:
            raise ValueError(f"stream_i must be in [0, {self.n}), got {stream_i}")
        t_ns = int(t_ns)
        last = self._last_t[stream_i]
        if last is not None and t_ns < last:
            raise ValueError(f"stream {stream_i}: time {t_ns} is before the previous sample's "
                             f"{last}; samples must arrive in time order per stream")
        self._last_t[stream_i] = t_ns
        q = self._q[stream_i]
        q.append((t_ns, ref))
        out: list[Set] = []
        if len(q) > self.queue_size:
            self._restart()
            t_old, r_old = q.popleft()
            self.dropped.append((stream_i, r_old, t_old, "queue_overflow"))
        self._process(out)
        return out

    def flush(self) -> list[Set]:
        """End of input: finish pending sets; drop (and report) what cannot form a set."""
        out: list[Set] = []
        self._ended = True
        self._process(out)
        for i, q in enumerate(self._q):
            while q:
                t_ns, ref = q.popleft()
                self.dropped.append((i, ref, t_ns, "end_of_input"))
        self._restart()
        return out

    # -- the policy ---------------------------------------------------------------------
    def _restart(self) -> None:
        self._pivot = None
        self._front[:] = [0] * self.n          # in place: _process holds a reference

    def _fronts(self):
        """(start stream, start t, end stream, end t) over the current fronts: start = min by
        (t, stream), end = max by (t, stream)."""
        s_i = e_i = -1
        s_t = e_t = 0
        for i in range(self.n):
            t = self._q[i][self._front[i]][0]
            if s_i < 0 or t < s_t:
                s_i, s_t = i, t
            if e_i < 0 or t >= e_t:
                e_i, e_t = i, t
        return s_i, s_t, e_i, e_t

    def _process(self, out: list[Set]) -> None:
        q, f = self._q, self._front
        while True:
            if any(f[i] >= len(q[i]) for i in range(self.n)):
                if self._pivot is None:
                    return
                if self._ended or self._proved_by_known_fronts():
                    self._emit(out)
                    continue
                return
            s_i, s_t, e_i, e_t = self._fronts()
            if self._pivot is None:
                if e_t - s_t > self.max_span:
                    t_old, r_old = q[s_i].popleft()
                    self.dropped.append((s_i, r_old, t_old, "span"))
                    continue
                self._pivot, self._pivot_t = e_i, e_t
                self._best, self._best_span = list(f), e_t - s_t
            elif e_t - s_t < self._best_span:
                self._best, self._best_span = list(f), e_t - s_t
            f[s_i] += 1
            if s_i == self._pivot or e_t - self._pivot_t >= self._best_span:
                self._emit(out)

    def _proved_by_known_fronts(self) -> bool:
        """The sweep is blocked on streams with no sample yet: can the pending best still be
        beaten? Continue the sweep over the known fronts F only (a blocked stream's next
        sample x is free): a state holds F plus x, so its span is >= max(F) - min(F); the sweep
        only moves F forward; every later state holds the pivot, so its span is >= max(F) - P.
        Proved when max(F) - P >= best; not provable when max(F) - min(F) < best (an x inside F
        would be tighter)."""
        q, f = self._q, list(self._front)
        p_t, best = self._pivot_t, self._best_span
        while True:
            live = [(q[i][f[i]][0], i) for i in range(self.n) if f[i] < len(q[i])]
            hi = max(live)[0]
            lo_t, lo_i = min(live)
            if hi - p_t >= best:
                return True
            if hi - lo_t < best:
                return False
            f[lo_i] += 1          # lo_i is not the pivot: hi - p_t < best <= hi - lo_t

    def _emit(self, out: list[Set]) -> None:
        refs, times = [], []
        for i, k in enumerate(self._best):
            q = self._q[i]
            for _ in range(k):
                t_old, r_old = q.popleft()
                self.dropped.append((i, r_old, t_old, "skipped"))
            t_ns, ref = q.popleft()
            refs.append(ref)
            times.append(t_ns)
        out.append((tuple(refs), tuple(times)))
        self._restart()


def approx_time_sets(t_arrays: list, max_span_ns: int, queue_size: int, *,
                     with_dropped: bool = False):
    """Batch helper: sets over N sorted int64 time arrays -> int64[k, N] sample indices.

    Feeds the merged streams in time order (ties: stream order) through ``ApproxTimeSync`` and
    flushes. With ``with_dropped`` also returns the drop records (stream, index, t_ns, reason).
    """
    arrays = [np.asarray(a, np.int64) for a in t_arrays]
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"stream {i}: times must be 1-D, got shape {a.shape}")
        if a.size > 1 and (a[1:] < a[:-1]).any():
            raise ValueError(f"stream {i}: times must be sorted ascending")
    sync = ApproxTimeSync(len(arrays), queue_size, max_span_ns)
    times = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    stream = np.concatenate([np.full(a.size, i, np.int64) for i, a in enumerate(arrays)]) \
        if arrays else np.zeros(0, np.int64)
    index = np.concatenate([np.arange(a.size, dtype=np.int64) for a in arrays]) \
        if arrays else np.zeros(0, np.int64)
    order = np.lexsort((index, stream, times))
    sets: list[Set] = []
    for s, t, r in zip(stream[order].tolist(), times[order].tolist(), index[order].tolist()):
        sets.extend(sync.push(s, t, r))
    sets.extend(sync.flush())
    idx = np.array([refs for refs, _ in sets], np.int64).reshape(len(sets), len(arrays))
    return (idx, sync.dropped) if with_dropped else idx
