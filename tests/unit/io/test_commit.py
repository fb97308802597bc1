"""The batch commit protocol (transforms/io/commit.py): a kill at any filesystem step leaves,
after recovery, either the previous complete output or the new one; never a mix."""

import os
import shutil
from pathlib import Path

import pytest

from mmalign.transforms.io import commit as cm


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def snapshot(out: Path) -> dict[str, str]:
    """What a reader sees: every file of OUT outside staging and moved-aside folders."""
    seen = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            seen[str(rel)] = p.read_text()
    return seen


OLD = {"aligned/a/part-b0.parquet": "old a0",
       "aligned/a/part-b1.parquet": "old a1",
       "aligned/b/part-b0.parquet": "old b0",
       "aligned/keep/part-b0.parquet": "other run's session",
       "deadletter/a/deadletters.parquet": "old dead a",
       "deadletter/b/deadletters.parquet": "old dead b",
       "sync/a/sync.json": "old sync a",
       "summary.json": "old summary"}
# the new run: session a re-bucketed (no part-b1), session b lost all its aligned rows
NEW_STAGED = {"aligned/a/part-b0.parquet": "new a0",
              "deadletter/a/deadletters.parquet": "new dead a",
              "deadletter/b/deadletters.parquet": "new dead b",
              "summary.json": "new summary"}
NEW = {"aligned/a/part-b0.parquet": "new a0",
       "aligned/keep/part-b0.parquet": "other run's session",
       "deadletter/a/deadletters.parquet": "new dead a",
       "deadletter/b/deadletters.parquet": "new dead b",
       "summary.json": "new summary"}


class Killed(BaseException):
    pass


def _setup(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    _write(out, OLD)
    _write(cm.staging_dir(out, "run2"), NEW_STAGED)
    return out


def _count_steps(tmp_path: Path) -> int:
    out = _setup(tmp_path / "count")
    calls = []
    real_replace, real_rmtree, real_unlink = os.replace, shutil.rmtree, Path.unlink

    def counting(fn):
        def wrapped(*a, **k):
            calls.append(fn)
            return fn(*a, **k)
        return wrapped

    mp = pytest.MonkeyPatch()
    mp.setattr(cm.os, "replace", counting(real_replace))
    mp.setattr(cm.shutil, "rmtree", counting(real_rmtree))
    mp.setattr(Path, "unlink", counting(real_unlink))
    try:
        cm.commit(out, "run2", ["a", "b"])
    finally:
        mp.undo()
    assert snapshot(out) == NEW
    return len(calls)


def test_commit_replaces_sessions_whole(tmp_path):
    out = _setup(tmp_path)
    cm.commit(out, "run2", ["a", "b"])
    assert snapshot(out) == NEW
    assert sorted(p.name for p in out.iterdir()) == ["aligned", "deadletter", "summary.json",
                                                     "sync"]
    assert not list(out.rglob(".*.old-*"))


def test_a_kill_at_any_step_leaves_old_or_new_after_recovery(tmp_path):
    steps = _count_steps(tmp_path)
    assert steps > 10
    outcomes = set()
    for k in range(steps + 1):
        out = _setup(tmp_path / f"k{k}")
        n = 0
        real_replace, real_rmtree, real_unlink = os.replace, shutil.rmtree, Path.unlink

        def dying(fn, k=k):
            def wrapped(*a, **kw):
                nonlocal n
                n += 1
                if n > k:
                    raise Killed(k)
                return fn(*a, **kw)
            return wrapped

        mp = pytest.MonkeyPatch()
        mp.setattr(cm.os, "replace", dying(real_replace))
        mp.setattr(cm.shutil, "rmtree", dying(real_rmtree))
        mp.setattr(Path, "unlink", dying(real_unlink))
        try:
            cm.commit(out, "run2", ["a", "b"])
        except Killed:
            pass
        finally:
            mp.undo()
        stage = cm.staging_dir(out, "run2")
        if not (stage / cm.JOURNAL).exists() and (stage / "aligned" / "a").exists():
            # killed before the point of no return: nothing visible has changed
            assert snapshot(out) == OLD, k
        cm.recover(out)
        after = snapshot(out)
        assert after in (OLD, NEW), (k, after)
        outcomes.add("new" if after == NEW else "old")
        assert not (out / cm.STAGING).exists()
        assert not list(out.rglob(".*.old-*"))
        cm.recover(out)                               # idempotent
        assert snapshot(out) == after
    assert outcomes == {"old", "new"}


def test_recover_removes_a_run_that_never_committed(tmp_path):
    out = _setup(tmp_path)
    (out / "aligned" / ".a.old-run0").mkdir()
    assert cm.recover(out) == []
    assert snapshot(out) == OLD
    assert not (out / cm.STAGING).exists() and not (out / "aligned" / ".a.old-run0"
                                                    ).exists()


def test_an_empty_run_commits_and_clears_its_sessions(tmp_path):
    out = tmp_path / "out"
    _write(out, OLD)
    cm.commit(out, "run3", ["b"])           # nothing staged at all for session b
    seen = snapshot(out)
    assert not any(k.split("/")[1:2] == ["b"] for k in seen)
    assert seen["aligned/a/part-b0.parquet"] == "old a0"
