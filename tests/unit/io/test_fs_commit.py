"""The commit on an object store (transforms/io/commit.py), on fsspec's in-memory store: staged
files copied over their final names from the journal's list, what the new output lacks
deleted, and a commit interrupted at any copy finished by ``recover``; interrupted before the
journal, the previous output stays as it was."""

from __future__ import annotations

import json
import uuid

import pytest

import mmalign.transforms.io.commit as commit_mod
from mmalign.schemas.fs import UriPath, files_under
from mmalign.transforms.io.commit import JOURNAL, STAGING, commit, recover, staging_dir


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def stage_run(out: UriPath, run_id: str, parts: dict[str, list[int]]) -> None:
    """A run's staged outputs: per session its aligned parts (by bucket), letters, sync."""
    stage = staging_dir(out, run_id)
    for s, buckets in parts.items():
        for b in buckets:
            (stage / "aligned" / s / f"part-b{b}.parquet").write_text(f"{run_id} {s} {b}")
        (stage / "deadletter" / s / "deadletters.parquet").write_text(f"{run_id} {s}")
        (stage / "sync" / s / "sync.json").write_text(json.dumps({"run": run_id}))
    (stage / "summary.json").write_text(json.dumps({"run_id": run_id}))


def view(out: UriPath) -> dict[str, str]:
    """Every file of the output a reader sees (relative path -> content)."""
    return {f.relative_to(out): f.read_text() for f in files_under(out)
            if not f.relative_to(out).startswith(STAGING)}


@pytest.fixture
def out() -> UriPath:
    return UriPath(f"memory://commit-{uuid.uuid4().hex[:10]}/out")


def test_commit_replaces_sessions_whole(out):
    stage_run(out, "r1", {"a": [0, 1, 2], "b": [0]})
    commit(out, "r1", ["a", "b"])
    first = view(out)
    assert sorted(first) == sorted(
        ["aligned/a/part-b0.parquet", "aligned/a/part-b1.parquet", "aligned/a/part-b2.parquet",
         "aligned/b/part-b0.parquet", "deadletter/a/deadletters.parquet",
         "deadletter/b/deadletters.parquet", "sync/a/sync.json", "sync/b/sync.json",
         "summary.json"])
    assert not files_under(out / STAGING)
    # a rerun of session a with other buckets, and of b producing nothing at all
    stage_run(out, "r2", {"a": [5]})
    commit(out, "r2", ["a", "b"])
    assert view(out) == {"aligned/a/part-b5.parquet": "r2 a 5",
                         "deadletter/a/deadletters.parquet": "r2 a",
                         "sync/a/sync.json": json.dumps({"run": "r2"}),
                         "summary.json": json.dumps({"run_id": "r2"})}
    # a session this run does not name is left alone
    stage_run(out, "r3", {"c": [0]})
    commit(out, "r3", ["c"])
    assert view(out)["aligned/a/part-b5.parquet"] == "r2 a 5"
    assert view(out)["aligned/c/part-b0.parquet"] == "r3 c 0"


def test_killed_before_the_journal_leaves_the_previous_output(out, monkeypatch):
    stage_run(out, "r1", {"a": [0, 1]})
    commit(out, "r1", ["a"])
    before = view(out)
    stage_run(out, "r2", {"a": [7]})

    def killed(stage, body):
        raise Killed

    monkeypatch.setattr(commit_mod, "_write_journal", killed)
    with pytest.raises(Killed):
        commit(out, "r2", ["a"])
    assert view(out) == before
    monkeypatch.undo()
    assert recover(out) == []                 # no journal: the leftover upload is removed
    assert view(out) == before and not files_under(out / STAGING)


def _copies(out: UriPath) -> int:
    """How many copies a commit of r2 over r1 makes (staged files + the summary)."""
    return len(files_under(staging_dir(out, "r2")))


@pytest.mark.parametrize("kill_at", ["copy0", "copy1", "copy2", "copy3", "delete", "cleanup"])
def test_killed_anywhere_after_the_journal_is_finished_by_recover(out, monkeypatch, kill_at):
    stage_run(out, "r1", {"a": [0, 1, 2], "b": [0]})
    commit(out, "r1", ["a", "b"])
    stage_run(out, "r2", {"a": [3]})
    assert _copies(out) == 4
    done = [0]
    real_copy, real_rmtree = commit_mod.copy_file, commit_mod.rmtree

    def copy(src, dest):
        if kill_at == f"copy{done[0]}":
            raise Killed
        done[0] += 1
        real_copy(src, dest)

    def rmtree(p):                  # the first deletes a session prefix, the last the stage
        if kill_at == "delete" or (kill_at == "cleanup" and p.name == "r2"):
            raise Killed
        real_rmtree(p)

    monkeypatch.setattr(commit_mod, "copy_file", copy)
    monkeypatch.setattr(commit_mod, "rmtree", rmtree)
    with pytest.raises(Killed):
        commit(out, "r2", ["a", "b"])
    monkeypatch.undo()
    if kill_at == "cleanup":        # the journal was gone: what is left is a stale upload
        assert not (staging_dir(out, "r2") / JOURNAL).exists()
        assert recover(out) == []
    else:
        assert (staging_dir(out, "r2") / JOURNAL).exists()
        assert recover(out) == ["r2"]
    assert recover(out) == []                 # idempotent
    assert view(out) == {"aligned/a/part-b3.parquet": "r2 a 3",
                         "deadletter/a/deadletters.parquet": "r2 a",
                         "sync/a/sync.json": json.dumps({"run": "r2"}),
                         "summary.json": json.dumps({"run_id": "r2"})}
    assert not files_under(out / STAGING)


def test_the_journal_lists_the_staged_files(out, monkeypatch):
    stage_run(out, "r1", {"a": [0, 1]})
    seen = {}
    monkeypatch.setattr(commit_mod, "_roll_forward_objects",
                        lambda o, s: seen.update(json.loads((s / JOURNAL).read_text())))
    commit(out, "r1", ["a"])
    assert seen["files"]["aligned"] == {"a": ["part-b0.parquet", "part-b1.parquet"]}
    assert seen["summary"] is True and seen["sessions"] == ["a"]
