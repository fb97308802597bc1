"""Process helpers for tests that kill commands: a process's children and whether one lives."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def still_alive_after(pids: list[int], grace_s: float) -> list[int]:
    """The processes of ``pids`` still running once ``grace_s`` has passed (none: sooner)."""
    deadline = time.monotonic() + grace_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def kill_and_check_workers(cmd: list[str], cwd, workers: int = 2,
                           start_timeout_s: float = 120, grace_s: float = 10) -> None:
    """Start ``cmd``, wait until it has ``workers`` child processes, SIGKILL it and assert
    that every one of those children is gone within ``grace_s``."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_timeout_s
        while len(kids := children(proc.pid)) < workers:
            assert proc.poll() is None and time.monotonic() < deadline, "no workers started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        survivors = still_alive_after(kids, grace_s)
        assert not survivors, f"workers {survivors} outlived the killed command"
    finally:
        if proc.poll() is None:
            proc.kill()
