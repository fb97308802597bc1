"""The corpus of broken recordings through the time-sliced backfill (pipelines/time_slices.py):
every data case of ``cases.DATA_CASES`` in one run cut into one-bucket slices over two workers
writes the same aligned files, dead letters and counts as the whole-session run in one process,
and ends with the same exit code. Corrupt and truncated media, NaN, out-of-order, duplicate and
far-off times, oversize files, bad index lines and cues: each is a letter once, never twice at a
slice edge, never lost."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cases import DATA_CASES
from corpus import instantiate, make_base

from mmalign.deadletter.file_sink import read_dead_letters
from tests.cli import run_mmalign

SAME = ("aligned_rows", "dead_letters", "dead_letters_by_reason", "dead_letters_by_stream",
        "accounting", "written", "counters", "status_by_stream", "sessions")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_broken_recordings_sliced_match_whole_sessions(tmp_path):
    base = make_base(tmp_path / "base" / "rec")
    manifests = [instantiate(c, base, tmp_path / "cases") for c in DATA_CASES]
    runs = {}
    for name, args in {"whole": ("--slice-s", "0", "--workers", "1"),
                       "sliced": ("--slice-s", "1", "--workers", "2")}.items():
        out = tmp_path / name
        cmd = ["backfill", "--json", "--no-progress", "--run-id", "same", "--out", out, *args]
        for m in manifests:
            cmd += ["--manifest", m]
        p = run_mmalign(*cmd, timeout=800)
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        runs[name] = (p.returncode, json.loads(p.stdout), out)
    (code1, s1, out1), (code2, s2, out2) = runs["whole"], runs["sliced"]
    assert code2 == code1 == max(c.exit for c in DATA_CASES)
    assert "slices" in s2 and len(s2["slices"]["slices"]) > len(DATA_CASES)
    for key in SAME:
        assert s2[key] == s1[key], key
    assert s1["dead_letters"] > len(DATA_CASES) / 2         # the corpus is broken
    assert all(a["balanced"] for a in s2["accounting"].values()), s2["accounting"]
    assert _files(out2 / "aligned") == _files(out1 / "aligned")
    for f in _files(out1 / "aligned"):
        a, b = pq.read_table(out1 / "aligned" / f), pq.read_table(out2 / "aligned" / f)
        assert a.equals(b) and a.schema.metadata == b.schema.metadata, f
    letters1 = read_dead_letters(out1 / "deadletter").drop(["created_at_ns"])
    letters2 = read_dead_letters(out2 / "deadletter").drop(["created_at_ns"])
    assert letters2.equals(letters1)
