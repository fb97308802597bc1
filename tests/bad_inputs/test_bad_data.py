"""Broken media and records: every case is a session of one backfill (a process start costs
~10 s, so a group of cases shares a run). For each: the run finishes, every broken record is a
dead letter with its reason, ``records in = aligned + dead`` per modality with "in" counted by
this test without the project's decoders, no traceback, and nothing outside OUT touched."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from cases import DATA_CASES
from corpus import independent_count, instantiate, make_base
from test_bad_config import tree

from mmalign.deadletter.file_sink import read_dead_letters
from tests.cli import run_mmalign

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {
    "video": [c for c in DATA_CASES if set(c.streams) <= {"cam0", "cam1"} or "cam0_audio"
              in c.streams or c.name.startswith("mp4-")],
    "audio-text": [c for c in DATA_CASES if {"mic", "transcript"} & set(c.streams)],
    "sensor": [c for c in DATA_CASES if "imu" in c.streams and not c.name.startswith("mp4-")],
}


def test_groups_cover_every_data_case():
    names = [c.name for g in GROUPS.values() for c in g]
    assert sorted(names) == sorted(c.name for c in DATA_CASES)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "rec")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_of_broken_recordings(group, base, tmp_path):
    cases = GROUPS[group]
    work = tmp_path / "cases"
    manifests = [instantiate(c, base, work) for c in cases]
    expected_in: dict[str, int] = defaultdict(int)
    for m in manifests:
        doc = yaml.safe_load(m.read_text())
        for s in doc["streams"]:
            expected_in[s["modality"]] += independent_count(s, m.parent)
    before = tree(work)
    out = tmp_path / "out"
    args = ["backfill", "--json", "--out", out]
    for m in manifests:
        args += ["--manifest", m]
    p = run_mmalign(*args, timeout=560)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == max(c.exit for c in cases), p.stderr[-3000:]
    if p.returncode == 1:           # sessions without ticks: named on stderr
        for c in cases:
            assert (c.name in p.stderr) == (c.exit == 1), (c.name, p.stderr[-2000:])
    summary = json.loads(p.stdout)
    assert tree(work) == before                      # inputs untouched, nothing added there
    assert sorted(x.name for x in out.iterdir()) == ["aligned", "deadletter", "summary.json",
                                                    "sync"] or not (out / "sync").exists()

    # records in (counted here) = aligned + dead, per modality
    for modality, n in expected_in.items():
        acc = summary["accounting"][modality]
        assert acc["records_in"] == n, (modality, acc, n)
        assert acc["balanced"], (modality, acc)

    # every case's broken records are dead letters with the expected reasons
    dead = read_dead_letters(out / "deadletter")
    by_session = defaultdict(set)
    for s, st, r in zip(dead.column("session_id").to_pylist(), dead.column("stage").to_pylist(),
                        dead.column("reason").to_pylist()):
        by_session[s].add(f"{st}/{r}")
    for c in cases:
        missing = c.reasons - by_session[c.name]
        assert not missing, (c.name, missing, sorted(by_session[c.name]))

    # and every reason that occurred is documented in the README's failure table
    documented = readme_reasons()
    for stage_reason in set().union(*by_session.values()):
        stage, reason = stage_reason.split("/")
        assert reason in documented.get(stage, set()), f"{stage_reason} not in README.md"


def readme_reasons() -> dict[str, set[str]]:
    """stage -> reasons, from the README's dead-letter table."""
    import re
    out: dict[str, set[str]] = defaultdict(set)
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| (\w+)[^|]*\| (.*) \|$", line)
        if m and m.group(1) in ("decode", "validate", "ingest", "register", "encode", "sink"):
            out[m.group(1)] |= set(re.findall(r"`([a-z0-9_]+)`", m.group(2)))
    return out
