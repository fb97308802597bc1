"""The backfill and the streaming job on Apache Flink (Beam's portable Flink runner, LOOPBACK)
equal the local backfill, run as Beam's docs run a pipeline on Flink.

Two generated recordings in one run: one with declared clocks, one whose clocks are estimated
by DTW-sync (an AsDict side input into the clock stage), several buckets each (GroupByKey of
buckets with margins). `mmalign backfill --runner FlinkRunner --flink_master=[local]
--parallelism=2` (an embedded Flink job server and mini-cluster for the run) is compared file by
file and row for row with the DirectRunner's output; `mmalign stream --runner FlinkRunner
--flink_master=[local]` against the real broker row for row with the backfill. How the options
resolve (job endpoint, remote masters, errors): tests/unit/pipelines/test_runners.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.pipelines.runners import runner_session
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.layout import METADATA_KEY
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import run_mmalign
from tests.e2e_checks import assert_rows_equal

RUN_ID = "flink-vs-local"


def _files(out: Path) -> dict[str, bytes | dict]:
    """Relative path -> content: Parquet files by their table + mmalign metadata, JSON as data."""
    found: dict[str, bytes | dict] = {}
    for f in sorted(out.rglob("*")):
        rel = str(f.relative_to(out))
        if f.is_dir() or rel == "summary.json":
            continue
        if f.suffix == ".json":
            found[rel] = json.loads(f.read_text())
        elif f.suffix == ".parquet":
            meta = pq.read_schema(f).metadata or {}
            found[rel] = {"rows": pq.read_table(f).num_rows,
                          "mmalign": json.loads(meta.get(METADATA_KEY, b"null"))}
        else:
            found[rel] = f.read_bytes()
    return found


def _ours(counters: dict[str, int]) -> dict[str, int]:
    """The pipeline's own counters (a portable runner adds Beam's system metrics)."""
    return {k: v for k, v in counters.items() if not k.startswith("beam.")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flink_backfill")
    manifests = [
        generate_recording(tmp / "rec_a", seed=3, duration_s=4.5, session="flink-a"),
        generate_recording(tmp / "rec_b", seed=5, duration_s=6.0, declare_clocks=False,
                           session="flink-b"),
    ]
    local = backfill.run(manifests, tmp / "local", run_id=RUN_ID)
    # as in Beam's docs: Beam's options after the command's, no `--`; [local]: an embedded
    # Flink (job server + mini-cluster) for the run
    args = ["backfill", "--json", "--run-id", RUN_ID, "--out", tmp / "flink",
            "--runner", "FlinkRunner", "--flink_master=[local]", "--parallelism=2"]
    for m in manifests:
        args += ["--manifest", m]
    proc = run_mmalign(*args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "local": local, "flink": json.loads(proc.stdout)}


@pytest.mark.slow
def test_flink_aligned_rows_equal_local_row_for_row(runs) -> None:
    tmp = runs["tmp"]
    local, flink = read_aligned(tmp / "local" / "aligned"), read_aligned(tmp / "flink" / "aligned")
    assert set(local.column("session_id").to_pylist()) == {"flink-a", "flink-b"}
    assert local.num_rows > 250 and len(set(local.column("bucket").to_pylist())) >= 2
    assert flink.schema.equals(local.schema)
    assert flink.num_rows == local.num_rows
    for name in local.column_names:
        assert flink.column(name).equals(local.column(name)), name


@pytest.mark.slow
def test_flink_writes_the_same_files(runs) -> None:
    tmp = runs["tmp"]
    local, flink = _files(tmp / "local"), _files(tmp / "flink")
    assert any(k.startswith("sync/flink-b/") for k in local)  # the side-input path ran
    assert sorted(flink) == sorted(local)
    for rel in local:
        assert flink[rel] == local[rel], rel


@pytest.mark.slow
def test_flink_dead_letters_and_accounting_equal_local(runs) -> None:
    tmp = runs["tmp"]
    drop = ["created_at_ns"]
    local = read_dead_letters(tmp / "local" / "deadletter").drop_columns(drop)
    flink = read_dead_letters(tmp / "flink" / "deadletter").drop_columns(drop)
    assert local.num_rows >= 10
    assert flink.equals(local)
    lo, fl = runs["local"], runs["flink"]
    for key in ("aligned_rows", "dead_letters", "dead_letters_by_reason", "status_by_stream",
                "accounting", "sync"):
        assert fl[key] == lo[key], key
    assert all(a["balanced"] for a in fl["accounting"].values())
    assert _ours(fl["counters"]) == _ours(lo["counters"])


def test_flink_job_endpoint_and_presets_resolve_without_a_server() -> None:
    """A running job server (--job_endpoint) is used as it is: no embedded server starts."""
    with runner_session("FlinkRunner", ["--job_endpoint=h:1"]) as (runner, resolved):
        assert runner == "PortableRunner"
        assert resolved == ["--job_endpoint=h:1", "--environment_type=LOOPBACK"]
    with runner_session("flink", ["--job_endpoint=h:1", "--flink_master=[local]"]
                        ) as (runner, resolved):
        assert "--flink_master=[local]" in resolved
    with runner_session("local", []) as (runner, resolved):
        assert (runner, resolved) == ("DirectRunner", [])


# Issue 7: the streaming job on Flink (streaming mode, LOOPBACK) against the real broker.
@pytest.mark.slow
def test_stream_on_flink_equals_the_backfill(fresh_topics, tmp_path: Path) -> None:
    """`mmalign stream --runner FlinkRunner --flink_master=[local] --parallelism=2` (an
    embedded Flink in streaming mode, LOOPBACK) against a real broker writes the same aligned
    rows as the local backfill of the recording."""
    from mmalign.pipelines.publish import publish

    manifest = generate_recording(tmp_path / "rec", seed=5, duration_s=6.0, bad_records=False)
    backfill.run([manifest], tmp_path / "batch", run_id="batch")
    settings, tag = fresh_topics(2)
    publish(manifest, settings, run_id="publish")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMALIGN_KAFKA_")}
    env |= {f"MMALIGN_KAFKA_TOPIC_{m.upper()}": t for m, t in settings.topics.items()}
    env["MMALIGN_KAFKA_DEADLETTER_TOPIC"] = settings.deadletter_topic
    proc = run_mmalign("stream", "--manifest", manifest, "--out", tmp_path / "stream",
                       "--bootstrap-servers", settings.bootstrap_servers,
                       "--group-id", f"flink-{tag}", "--stop-after-idle", "3",
                       "--run-id", "flink-stream", "--json",
                       "--runner", "FlinkRunner", "--flink_master=[local]", "--parallelism=2",
                       env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["committed"]
    assert_rows_equal(read_aligned(tmp_path / "stream" / "aligned"),
                      read_aligned(tmp_path / "batch" / "aligned"))
