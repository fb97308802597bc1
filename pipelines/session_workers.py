"""A local backfill's sessions spread over worker processes: every core of one machine.

Sessions are independent all the way through the pipeline (plausibility, clock fits, buckets
and output files are per session), so a run of several recordings splits into groups of
sessions, balanced by the bytes of their source files, and each group runs the whole backfill
pipeline (DirectRunner, in memory) in a process forked from this one after the imports and the
job's preparation: the workers share that start-up instead of paying it again, which the
DirectRunner's own multi-processing mode does (a fresh interpreter per worker, every element
pickled across gRPC). All workers write into the run's one staging folder (their files are
per session, so they never meet), send their stage counters back, and the run commits once.

One session runs in one process: a single long recording does not get faster here.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mmalign.pipelines.runners import RunnerConfigError, pipeline
from mmalign.schemas.metrics import local_counts, reset_local

LOCAL_RUNNERS = ("DirectRunner",)
PR_SET_PDEATHSIG = 1                 # prctl(2)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def resolve_workers(workers: int | None, runner: str, observe, job) -> int:
    """The processes for this run: ``None`` (auto) is one per core where workers apply (the
    local runner, no metrics options, no feature store) and 1 elsewhere; a number is checked
    (``check_workers``)."""
    if workers is None:
        try:
            check_workers(2, runner, observe, job)
        except RunnerConfigError:
            return 1
        return cores()
    check_workers(workers, runner, observe, job)
    return workers


def check_workers(workers: int, runner: str, observe, job, option: str | None = None,
                  fix: str = "--workers 1") -> None:
    """Raise RunnerConfigError (exit 2) when ``workers`` cannot apply to this run (``option``:
    the option the message names, ``fix``: what to use instead)."""
    if workers < 1:
        raise RunnerConfigError(f"--workers must be 1 or more (got {workers})")
    if workers == 1 and option is None:
        return
    option = option or f"--workers {workers}"
    if runner not in LOCAL_RUNNERS:
        raise RunnerConfigError(
            f"{option} runs forked processes of the local runner only; {runner} runs its own "
            f"workers (its parallelism options set them)")
    if observe is not None and observe.enabled:
        raise RunnerConfigError(
            f"{option} does not combine with the metrics/tracing options (they are served by "
            f"one process); use {fix} with them")
    if job.feature_store:
        raise RunnerConfigError(
            f"{option} does not combine with the feature store (its registry and online store "
            f"take writes from one process); use {fix}")


def source_bytes(path: str) -> int:
    if "://" in path:
        return 1
    try:
        return max(os.path.getsize(path), 1)
    except OSError:
        return 1


def session_groups(job, workers: int) -> list[list[str]]:
    """The job's sessions in at most ``workers`` groups of about equal source bytes (largest
    session first, each to the lightest group); one group per session when there are fewer."""
    size: dict[str, int] = {s: 0 for s in job.plans}
    for r in job.sources:
        size[r.session_id] = size.get(r.session_id, 0) + source_bytes(r.path)
    groups: list[list[str]] = [[] for _ in range(min(workers, len(size)))]
    load = [0] * len(groups)
    for s in sorted(size, key=lambda s: (-size[s], s)):
        i = load.index(min(load))
        groups[i].append(s)
        load[i] += size[s]
    return [sorted(g) for g in groups if g]


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent dies (a killed backfill leaves no
    worker writing into a staging folder the next run recovers)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):           # not Linux: the parent's stop() is all
        pass
    if os.getppid() != parent:                  # it died before the line above
        os._exit(1)


def send_counts(every: float | None, put: Callable[[dict], None],
                stop: threading.Event | None = None) -> None:
    """In a worker: ``put`` this process's counts every ``every`` seconds, on a daemon thread,
    until ``stop`` is set (the parent's progress line sums them); nothing when ``every`` is
    falsy."""
    if not every:
        return
    stop = stop or threading.Event()

    def send():
        while not stop.wait(every):
            put(local_counts())
    threading.Thread(target=send, name="mmalign-progress-send", daemon=True).start()


def _worker(index: int, job, staging, runner: str, pipeline_args: list[str], results,
            progress_every_s: float | None, build: Callable, parent: int) -> None:
    """One worker process: ``build(pipeline, job, staging)`` (the backfill's) run over its
    sessions; puts ("done", index, counters) or ("error", index, exception or text,
    traceback) on ``results``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from mmalign.pipelines.summary import counters

    die_with_parent(parent)
    reset_local()        # the counts this process inherited are the parent's earlier runs'
    stop = threading.Event()
    send_counts(progress_every_s, lambda c: results.put(("progress", index, c)), stop)
    try:
        opts = PipelineOptions([f"--runner={runner}", *pipeline_args])
        with pipeline(runner, opts) as p:
            build(p, job, staging)
        results.put(("done", index, counters(p.result)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        tb = traceback.format_exc()
        try:       # the queue pickles on its own thread, where a failure would be lost
            pickle.dumps(e)
            err = e
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            err = f"{type(e).__name__}: {e}"
        results.put(("error", index, err, tb))
    finally:
        stop.set()


class WorkerFailed(RuntimeError):
    """A worker process died without reporting (killed, out of memory)."""


class SessionWorkers:
    """Run ``job``'s session groups in forked processes: ``start()``, then ``wait()`` returns
    their summed stage counters or raises the first worker's error (the other workers are
    stopped); ``counts()`` sums their latest progress counts meanwhile (the progress line)."""

    def __init__(self, job, groups: list[list[str]], staging: Path, runner: str,
                 pipeline_args: list[str] | None, build: Callable,
                 progress_every_s: float | None = None):
        self.job, self.groups, self.staging, self.build = job, groups, staging, build
        self.runner, self.args = runner, list(pipeline_args or [])
        self.every = progress_every_s
        self._latest: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return summed(self._latest.values())

    def start(self) -> SessionWorkers:
        """Fork the workers: before any thread of this process starts (the progress line's
        among them), so no child inherits a lock a thread held at the fork."""
        ctx = multiprocessing.get_context("fork")   # share the parent's imports and job
        self._results = ctx.Queue()
        self._procs = []
        for i, sessions in enumerate(self.groups):
            pr = ctx.Process(target=_worker, name=f"mmalign-backfill-{i}",
                             args=(i, self.job.subset(sessions), self.staging, self.runner,
                                   self.args, self._results, self.every, self.build,
                                   os.getpid()))
            pr.start()
            self._procs.append(pr)
        return self

    def wait(self) -> dict[str, int]:
        """The workers' summed stage counters once all have finished; the first error."""
        results, procs = self._results, self._procs
        done: dict[int, dict[str, int]] = {}
        try:
            while len(done) < len(procs):
                try:
                    msg = results.get(timeout=0.5)
                except queue.Empty:
                    msg = self._last_word(done)
                    if msg is None:
                        continue
                kind, i = msg[0], msg[1]
                if kind == "progress":
                    with self._lock:
                        self._latest[i] = msg[2]
                elif kind == "done":
                    done[i] = msg[2]
                    with self._lock:
                        self._latest[i] = msg[2]
                else:
                    err, tb = msg[2], msg[3]
                    if isinstance(err, BaseException):
                        raise err from WorkerFailed(
                            f"backfill worker for session(s) {', '.join(self.groups[i])}:\n{tb}")
                    raise WorkerFailed(f"backfill worker for session(s) "
                                       f"{', '.join(self.groups[i])} failed: {err}\n{tb}")
        finally:
            self.stop()
        return summed(done.values())

    def stop(self) -> None:
        """Stop the workers still running (after an error) and reap them all."""
        for pr in self._procs:
            if pr.is_alive():
                pr.terminate()
        for pr in self._procs:
            pr.join(timeout=30)

    def _last_word(self, done) -> tuple | None:
        """None while every unfinished worker runs; once one has exited, the next message (its
        last may still be in the pipe), or WorkerFailed when none comes."""
        for i, pr in enumerate(self._procs):
            if i in done or pr.exitcode is None:
                continue
            try:
                return self._results.get(timeout=2)
            except queue.Empty:
                raise WorkerFailed(
                    f"backfill worker for session(s) {', '.join(self.groups[i])} exited with "
                    f"code {pr.exitcode} without a result (killed, or out of memory?)") from None
        return None


def summed(counts) -> dict[str, int]:
    """Counter dicts added key by key."""
    total: Counter = Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def spread(job, workers: int) -> list[list[str]] | None:
    """The session groups for ``workers`` processes, or None when one process runs it all."""
    if workers <= 1 or len(job.plans) <= 1:
        return None
    groups = session_groups(job, workers)
    return groups if len(groups) > 1 else None

