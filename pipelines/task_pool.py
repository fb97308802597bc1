"""Backfill tasks in worker processes forked after start-up (the time-sliced backfill's pool).

A task is a function that builds one Beam pipeline for the local runner and runs it in a
worker; it returns the pipeline's stage counters. The workers are forked when the pool is
entered (before the caller starts any thread: a progress line, Beam's own), so they share the
parent's imports and the prepared job instead of paying ~5 s of start-up each, and they get
SIGKILL when the parent dies. ``refork`` replaces them between two steps by workers forked
from the parent as it is then (it loaded the align kernels while the first step ran); the
parent's one other thread, the progress line, holds ``fork_lock`` while it reports. A worker
that dies without a result (killed, out of memory) fails the run with ``WorkerFailed``; a
task's exception is raised in the parent with the worker's traceback as its cause.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam

from mmalign.pipelines.runners import pipeline
from mmalign.pipelines.session_workers import (
    WorkerFailed,
    die_with_parent,
    send_counts,
    summed,
)
from mmalign.schemas.metrics import reset_local

_CONTEXT: TaskContext | None = None      # in a worker: what its pool was made with
_WORK = None                              # in a worker: the pool's shared queue of items


@dataclass
class TaskContext:
    """What every task of a pool shares: the job, its staging and spill folders, the runner."""
    job: object
    staging: Path
    spill_root: Path
    runner: str
    pipeline_args: list[str]

    def run(self, build: Callable, *args) -> dict[str, int]:
        """``build(pipeline, *args)`` run to completion on the local runner; its counters."""
        from apache_beam.options.pipeline_options import PipelineOptions

        from mmalign.pipelines.summary import counters

        opts = PipelineOptions([f"--runner={self.runner}", *self.pipeline_args])
        with pipeline(self.runner, opts) as p:
            build(p, *args)
        return counters(p.result)


def _start(context: TaskContext, work, progress, every: float | None, parent: int) -> None:
    """A worker's first step: die with the parent, forget the parent's counts, send this
    process's counts every ``every`` seconds (the progress line)."""
    global _CONTEXT, _WORK
    die_with_parent(parent)
    reset_local()          # the counts this process inherited are the parent's earlier runs'
    _CONTEXT, _WORK = context, work
    pid = os.getpid()
    send_counts(every, lambda counts: progress.put((pid, counts)))


def _ready() -> int:
    return os.getpid()


class PullWork(beam.DoFn):
    """The pool's shared items, pulled one at a time until the queue says there are no more:
    a worker that finishes an item early takes the next (the phases' load balance). Items are
    processed downstream as they are pulled (the local runner pushes each element through
    its fused stages), so a worker holds one item's data at a time."""

    def process(self, _):
        while True:
            item = _WORK.get()
            if item is None:
                return
            yield item


def pulled(p: beam.Pipeline) -> beam.PCollection:
    """The pool's items for this worker's pipeline (``TaskPool.pull``)."""
    return p | "Start" >> beam.Create([None], reshuffle=False) | "Pull" >> beam.ParDo(PullWork())


class TaskPool:
    """``with TaskPool(n, context) as pool: pool.map(task, [args, ...])`` -> the tasks'
    counters, in order; ``counts()`` sums the workers' latest counts meanwhile."""

    def __init__(self, workers: int, context: TaskContext, progress_every_s: float | None = None):
        self.workers, self.ctx, self.every = max(1, workers), context, progress_every_s
        self._latest: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()
        self.fork_lock = threading.Lock()

    @staticmethod
    def context() -> TaskContext:
        """The pool's context, inside a worker."""
        if _CONTEXT is None:
            raise RuntimeError("not in a TaskPool worker")
        return _CONTEXT

    def __enter__(self) -> TaskPool:
        self._fork()
        return self

    def _fork(self) -> None:
        mp = multiprocessing.get_context("fork")     # share the parent's imports and job
        self._progress, self._work = mp.Queue(), mp.Queue()
        self._ex = ProcessPoolExecutor(self.workers, mp_context=mp, initializer=_start,
                                       initargs=(self.ctx, self._work, self._progress,
                                                 self.every, os.getpid()))
        self._ex.submit(_ready)      # with fork, every worker is forked on the first submit
        self._procs = list(self._ex._processes.values())   # (exit codes after a failure)

    def refork(self) -> None:
        """Replace the workers by new ones forked from this process as it is now, between
        two steps: they share what it loaded meanwhile (the align kernels, while the first
        step's workers decoded). A thread that takes ``fork_lock`` around its work (the
        progress line) is held off while they fork."""
        with self.fork_lock:
            self.counts()                # the old workers' last counts stay in the sum
            self._stop(failed=False)
            self._fork()

    def map(self, task: Callable, args: list[tuple]) -> list[dict[str, int]]:
        futures = [self._ex.submit(task, *a) for a in args]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as e:
            for p in self._procs:        # reaped, so each exit code is known (the pool stops
                p.join(timeout=5)        # the others: SIGTERM, -15)
            codes = sorted({p.exitcode for p in self._procs if p.exitcode is not None})
            codes = [c for c in codes if c != -15] or codes
            raise WorkerFailed(f"a backfill worker exited without a result (exit code "
                               f"{', '.join(map(str, codes)) or 'unknown'}: killed, or out of "
                               f"memory?)") from e
        finally:
            for f in futures:
                f.cancel()

    def pull(self, task: Callable, items: list, *args) -> list[dict[str, int]]:
        """``task(part, *args)`` once per worker, its pipeline reading ``items`` from the
        shared queue in this order (``pulled``); their counters."""
        for item in items:
            self._work.put(item)
        for _ in range(self.workers):
            self._work.put(None)              # one "no more" per worker
        return self.map(task, [(f"{task.__name__.strip('_')}-{i}", *args)
                               for i in range(self.workers)])

    def counts(self) -> dict[str, int]:
        """The workers' latest counts, summed (for the progress line)."""
        with self._lock:
            while True:
                try:
                    pid, c = self._progress.get_nowait()
                except (queue.Empty, OSError, ValueError):
                    break
                self._latest[pid] = c
            return summed(self._latest.values())

    def __exit__(self, *exc) -> None:
        self._stop(failed=exc[0] is not None)

    def _stop(self, failed: bool) -> None:
        # a failed run stops its workers now rather than after their current task
        procs = self._procs
        if failed:
            for p in procs:
                if p.is_alive():
                    p.terminate()
        self._ex.shutdown(wait=True, cancel_futures=True)
        for p in procs:
            p.join(timeout=30)
        self._progress.close()
        self._work.close()
        if failed:                       # items no worker will read: do not wait to send them
            self._work.cancel_join_thread()
        else:                            # all read: no feeder thread left at a later fork
            self._work.join_thread()
