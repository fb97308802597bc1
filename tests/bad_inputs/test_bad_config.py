"""Broken manifests, calibrations, paths and ids: refused with exit 2 and one sentence, before
anything runs; no traceback; nothing written anywhere (not even the output folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cases import CONFIG_CASES, DATA_CASES
from corpus import instantiate, make_base

from mmalign.pipelines import align_check, cli


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "rec")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` with its size and mtime (symlinks not followed)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_the_corpus_is_large_and_covers_every_category():
    cases = CONFIG_CASES + DATA_CASES
    assert len(cases) >= 80
    assert len({c.name for c in cases}) == len(cases)
    categories = {c.category for c in cases}
    for needed in ("unknown field", "path traversal", "symlink", "absolute path", "hostile id",
                   "alias bomb", "broken calibration", "NaN/inf", "absurd time",
                   "overflowing time", "out-of-order time", "duplicate time", "oversize",
                   "oversize payload", "truncated media", "corrupt media", "garbage media",
                   "wrong schema", "missing input"):
        assert needed in categories, needed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda c: c.name)
def test_refused_with_one_sentence(case, base, tmp_path, capsys):
    work = tmp_path / "cases"
    manifest = instantiate(case, base, work)
    out = tmp_path / "out"
    before = tree(tmp_path)
    if case.command == "align-check":
        code = align_check.main([str(manifest), "--no-color"])
    else:
        code = cli.main(["backfill", "--manifest", str(manifest), "--out", str(out),
                         *case.args])
    err = capsys.readouterr().err
    assert code == 2, (case.name, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert case.message.lower() in lines[0].lower(), (case.message, lines[0])
    assert not out.exists()
    assert tree(tmp_path) == before                  # nothing created, changed or deleted
