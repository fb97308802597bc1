"""The forked task pool: workers forked again between steps share what the parent loaded
meanwhile, and a thread holding the pool's fork lock (the progress line) holds the fork off."""

import io
import os
import subprocess
import sys
import threading
import time

from mmalign.pipelines.progress import Progress
from mmalign.pipelines.task_pool import TaskContext, TaskPool
from tests.cli import ROOT
from tests.processes import alive, still_alive_after

LOADED: list[str] = []        # what "the parent loaded" (a module's state the workers inherit)


def _seen() -> tuple[int, tuple[str, ...]]:
    return os.getpid(), tuple(LOADED)


def _pool(workers: int = 2) -> TaskPool:
    return TaskPool(workers, TaskContext(None, None, None, "DirectRunner", []))


def test_reforked_workers_share_what_the_parent_loaded_after_the_first_fork():
    LOADED.clear()
    with _pool() as tasks:
        LOADED.append("kernels")                 # loaded while the first workers ran
        before = tasks.map(_seen, [()] * 4)
        tasks.refork()
        after = tasks.map(_seen, [()] * 4)
    assert {loaded for _, loaded in before} == {()}
    assert {loaded for _, loaded in after} == {("kernels",)}
    assert not {pid for pid, _ in before} & {pid for pid, _ in after}   # new processes
    LOADED.clear()


def test_refork_waits_for_the_thread_holding_the_fork_lock():
    # refork on this thread: a worker dies with the thread that forked it (PDEATHSIG)
    with _pool(1) as tasks:
        held, order = threading.Event(), []

        def hold():
            with tasks.fork_lock:
                held.set()
                time.sleep(0.5)
                order.append("released")
        t = threading.Thread(target=hold)
        t.start()
        assert held.wait(10)
        tasks.refork()
        order.append("reforked")
        t.join()
        assert order == ["released", "reforked"]
        assert tasks.map(_seen, [()])[0][0] != os.getpid()


def test_progress_reports_only_while_holding_its_lock():
    out, lock = io.StringIO(), threading.Lock()
    with Progress(lambda c, e: "line", 0.02, stream=out, counts=dict, lock=lock):
        with lock:
            time.sleep(0.3)
            held = out.getvalue()
        deadline = time.monotonic() + 10
        while "line" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert held == ""
    assert "line" in out.getvalue()


def test_reforked_workers_die_with_a_killed_parent():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the "command": a pool, reforked, then killed
        try:
            os.close(r)
            with _pool() as tasks:
                tasks.refork()
                pids = {p for p, _ in tasks.map(_seen, [()] * 4)} | \
                    {p.pid for p in tasks._procs}
                os.write(w, (" ".join(map(str, sorted(pids))) + "\n").encode())
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        workers = [int(p) for p in f.readline().split()]
    assert workers and all(alive(p) for p in workers)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    survivors = still_alive_after(workers, 10)
    for p in survivors:                          # (they would hold pytest's output open)
        os.kill(p, 9)
    assert not survivors


def _die(part: str) -> None:
    os._exit(3)                                  # a worker killed mid-task (OOM killer, kill)


def test_a_failed_pool_stops_without_sending_the_items_left():
    # 400 items of 4 kB: more than a pipe holds, left unread when the workers die; the pool
    # must raise and stop, not wait to send them (run in a child: a hang is a timeout here)
    code = (
        "import pytest\n"
        "from mmalign.pipelines.session_workers import WorkerFailed\n"
        "from tests.unit.pipelines.test_task_pool import _pool, _die\n"
        "with pytest.raises(WorkerFailed):\n"
        "    with _pool() as tasks:\n"
        "        tasks.pull(_die, ['x' * 4096] * 400)\n"
        "print('stopped')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr[-2000:]
