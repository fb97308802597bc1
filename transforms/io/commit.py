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

**On an object store** (OUT is ``s3://...`` or ``gs://...``: ``schemas/fs.py``) there is no
rename, so the same journal protocol moves files by copy and delete:

1. the run uploads everything under ``OUT/.staging/<run>/`` (readers skip ``.`` prefixes);
2. the journal ``OUT/.staging/<run>/_COMMIT`` is one PUT (atomic) that also lists every staged
   file per dataset and session -- the point of no return;
3. roll forward: every staged file is copied (server-side) over its final name, the summary
   last; then each of the run's session prefixes loses the files the new output does not list
   (a session the run produced nothing for is deleted whole); then the journal, then the
   staging prefix, are deleted.

Every step is idempotent and driven by the journal's list, so ``recover`` finishes a commit
killed anywhere after step 2, and a run killed before it leaves the previous output untouched
(its staging prefix is removed by the next run). What differs from a local OUT is what a
reader that does not run ``recover`` sees *during* step 3 (a few seconds: one server-side copy
per file): each object is whole, old or new, but the session prefixes hold a mix -- files
already replaced, old files not yet replaced or deleted. ``pd.read_parquet("s3://OUT/aligned")``
at that moment may read old and new rows together; mmalign's own readers (a backfill,
align-check) run ``recover`` first and see the new output. A reader that must never see a mix
checks for ``OUT/.staging/*/_COMMIT`` first (none: the output is whole). Deleting through
pyarrow leaves empty folder markers (0-byte ``<prefix>/`` keys, as Hadoop's S3A writes them)
where objects were removed; Arrow, pandas/s3fs, DuckDB and polars globs skip them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mmalign.schemas.fs import UriPath, as_path, copy_file, files_under, rmtree
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


def staging_dir(out: str | Path | UriPath, run_id: str) -> Path | UriPath:
    return as_path(out) / STAGING / run_id


def _aside(root: Path, session_id: str, run_id: str) -> Path:
    return root / f".{session_id}.old-{run_id}"


def commit(out: str | Path, run_id: str, sessions: list[str]) -> None:
    """Commit the run's staged outputs into ``out`` (see the module docstring)."""
    stage = staging_dir(out, run_id)
    if isinstance(stage, UriPath):
        _write_journal(stage, {"run_id": run_id, "sessions": sorted(sessions),
                               "files": _staged_files(stage),
                               "summary": (stage / SUMMARY).is_file()})
        _roll_forward_objects(as_path(out), stage)
        return
    stage.mkdir(parents=True, exist_ok=True)
    _mark_staged(stage)
    _write_journal(stage, {"run_id": run_id, "sessions": sorted(sessions)})
    _roll_forward(Path(out), stage)


def _write_journal(stage: Path | UriPath, body: dict) -> None:
    """The point of no return: one atomic write (a rename; on an object store one PUT)."""
    atomic_write_text(stage / JOURNAL, json.dumps(body))


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
    out = as_path(out)
    if isinstance(out, UriPath):
        return _recover_objects(out)
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


# ---------------------------------------------------------------- object stores


def _staged_files(stage: UriPath) -> dict[str, dict[str, list[str]]]:
    """{dataset: {session: [file names relative to the session prefix]}} of a staging prefix."""
    out: dict[str, dict[str, list[str]]] = {}
    for dataset in DATASETS:
        by_session: dict[str, list[str]] = {}
        for f in files_under(stage / dataset):
            rel = f.relative_to(stage / dataset)
            session, _, name = rel.partition("/")
            if name and not session.startswith((".", "_")):
                by_session.setdefault(session, []).append(name)
        if by_session:
            out[dataset] = {s: sorted(n) for s, n in sorted(by_session.items())}
    return out


def _roll_forward_objects(out: UriPath, stage: UriPath) -> None:
    """Steps 3 of the object-store commit (module docstring), from the journal."""
    try:
        journal = json.loads((stage / JOURNAL).read_text())
    except FileNotFoundError:
        return                                # a concurrent recovery finished it
    files = journal.get("files", {})
    try:
        for dataset in DATASETS:
            for s, names in files.get(dataset, {}).items():
                for n in names:
                    copy_file(session_dir(stage / dataset, s) / n,
                              session_dir(out / dataset, s) / n)
        if journal.get("summary"):
            copy_file(stage / SUMMARY, out / SUMMARY)
    except FileNotFoundError:
        if (stage / JOURNAL).exists():
            raise
        return                                # a concurrent recovery finished it
    for dataset in DATASETS:
        for s in journal["sessions"]:
            keep = set(files.get(dataset, {}).get(s, []))
            d = session_dir(out / dataset, s)
            if not keep:
                rmtree(d)                     # the whole prefix (no folder marker left)
                continue
            for f in files_under(d):
                if f.relative_to(d) not in keep:
                    f.unlink(missing_ok=True)
    (stage / JOURNAL).unlink(missing_ok=True)
    rmtree(stage)
    _remove_empty_prefix(out / STAGING)


def _remove_empty_prefix(p: UriPath) -> None:
    """Delete the folder marker an object store may leave for an emptied prefix."""
    if not any(True for _ in p.iterdir()):
        rmtree(p)


def _recover_objects(out: UriPath) -> list[str]:
    finished = []
    root = out / STAGING
    stages = sorted(p for p in root.iterdir() if p.is_dir())
    for stage in stages:
        if (stage / JOURNAL).is_file():
            _roll_forward_objects(out, stage)
            finished.append(stage.name)
        else:
            rmtree(stage)
    if stages:
        _remove_empty_prefix(root)
    return finished
