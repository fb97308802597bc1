"""How a batch run replaces its sessions' outputs: staged, then committed all at once.

A run writes everything (aligned Parquet, dead letters, sync results, its summary) under
``OUT/.staging/<run>/``, laid out like OUT itself. When the pipeline has finished, ``commit``

1. writes the journal ``OUT/.staging/<run>/_COMMIT`` (atomically: a temporary file renamed),
   naming the run's sessions -- the point of no return;
2. for every dataset (aligned, deadletter, sync) and session: moves the old
   ``OUT/<dataset>/<s>`` aside (``.<s>.old-<run>``) and the staged one in
   its place (a session the run produced nothing for is left with nothing, so a rerun leaves no
   stale parts), then the summary;
3. removes the old folders, the journal and the staging folder, in that order.

A kill before step 1 leaves the previous output untouched (the staging folder is garbage); a
kill after it leaves a journal, and ``recover`` (run at the start of every backfill and by every
reader of an output) completes the commit from where it stopped: every step is idempotent. So
any mmalign reader sees either the previous complete output or the new one, never a mix, and
leftovers (``.staging/``, ``.old-`` folders) are removed by the next run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mmalign.schemas.layout import (
    DATASETS,
    SUMMARY,
    atomic_write_text,
    session_dir,
    session_dirs,
    session_of,
)

STAGING = ".staging"
JOURNAL = "_COMMIT"


def staging_dir(out: str | Path, run_id: str) -> Path:
    return Path(out) / STAGING / run_id


def _aside(root: Path, session_id: str, run_id: str) -> Path:
    return root / f".{session_id}.old-{run_id}"


def commit(out: str | Path, run_id: str, sessions: list[str]) -> None:
    """Commit the run's staged outputs into ``out`` (see the module docstring)."""
    stage = staging_dir(out, run_id)
    stage.mkdir(parents=True, exist_ok=True)
    _mark_staged(stage)
    atomic_write_text(stage / JOURNAL, json.dumps({"run_id": run_id, "sessions": sorted(sessions)}))
    _roll_forward(Path(out), stage)


def _move(src: Path, dest: Path) -> None:
    """rename, tolerating a concurrent recovery that did it first."""
    try:
        os.replace(src, dest)
    except FileNotFoundError:
        if src.exists():
            raise


def _roll_forward(out: Path, stage: Path) -> None:
    journal = json.loads((stage / JOURNAL).read_text())
    run_id, sessions = journal["run_id"], journal["sessions"]
    for dataset in DATASETS:
        final = out / dataset
        for s in sessions:
            src, dest, old = (session_dir(stage / dataset, s), session_dir(final, s),
                              _aside(final, s, run_id))
            if src.exists():                  # not moved yet: the old partition goes aside
                final.mkdir(parents=True, exist_ok=True)
                if dest.exists() and not old.exists():
                    _move(dest, old)
                elif dest.exists():           # cannot happen; never merge two outputs
                    shutil.rmtree(dest)
                _move(src, dest)
            elif not old.exists() and dest.exists() and not _moved_in(stage, dataset, s):
                _move(dest, old)              # nothing staged: the session ends up empty
    if (stage / SUMMARY).exists():
        _move(stage / SUMMARY, out / SUMMARY)
    for dataset in DATASETS:
        for s in sessions:
            shutil.rmtree(_aside(out / dataset, s, run_id), ignore_errors=True)
    (stage / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    _remove_if_empty(out / STAGING)


def _moved_in(stage: Path, dataset: str, session_id: str) -> bool:
    """Whether this run staged (and so has already moved in) the partition: recorded by a
    ``<dataset>/.staged-<session>`` mark written before the move."""
    return (stage / dataset / f".staged-{session_id}").exists()


def _mark_staged(stage: Path) -> None:
    """Before the journal: remember which partitions the run staged, so a resumed commit can
    tell a partition it moved in from a stale one to remove."""
    for dataset in DATASETS:
        d = stage / dataset
        if d.is_dir():
            for part in session_dirs(d):
                (d / f".staged-{session_of(part)}").touch()


def _remove_if_empty(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass


def recover(out: str | Path) -> list[str]:
    """Finish every interrupted commit under ``out`` and remove what interrupted runs left
    (staging folders without a journal, folders moved aside). Returns the finished runs."""
    out = Path(out)
    root = out / STAGING
    finished = []
    if root.is_dir():
        for stage in sorted(p for p in root.iterdir() if p.is_dir()):
            if (stage / JOURNAL).exists():
                _roll_forward(out, stage)
                finished.append(stage.name)
            else:
                shutil.rmtree(stage, ignore_errors=True)
        _remove_if_empty(root)
    for dataset in DATASETS:
        d = out / dataset
        if d.is_dir():
            for old in d.glob(".*.old-*"):
                shutil.rmtree(old, ignore_errors=True)
    return finished
