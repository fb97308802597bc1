"""Recordings and outputs on S3, as a user runs them: ``mmalign backfill`` and ``align-check`` as
subprocesses against a real S3 API server (moto's server mode, tests/conftest_s3.py), with the
credentials and the endpoint only in the AWS environment variables.

The same recording is also run from local disk into a local folder: the S3 output must hold the
same rows (source references are URIs instead of paths) and read back with pyarrow and with
``pd.read_parquet("s3://...", storage_options=...)``. A rerun replaces the output whole (no
stale parts), and a run killed before its commit journal leaves the previous output, while one
killed in the middle of the roll-forward is finished by the next reader (align-check).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import ROOT

pytestmark = pytest.mark.slow

# The CLI, made to SIGKILL itself at one point of the commit (the commit takes a moment).
KILLED_CLI = """
import os, signal, sys
import mmalign.transforms.io.commit as c
at = os.environ["MMALIGN_TEST_KILL_AT"]
write_journal, copy_file, copies = c._write_journal, c.copy_file, [0]
def journal(stage, body):
    if at == "before-journal":
        os.kill(os.getpid(), signal.SIGKILL)
    write_journal(stage, body)
def copy(src, dest):
    copies[0] += 1
    if at == "mid-commit" and copies[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    copy_file(src, dest)
c._write_journal, c.copy_file = journal, copy
from mmalign.pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""

# tick_time (UTC) comes from the reference camera's creation_time, which
# transforms/decode/wallclock.py reads from local files only so far: compared apart.
WALL_CLOCK = ("tick_time",)


def run(cmd: list, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def mmalign(env: dict, *args, kill_at: str | None = None) -> subprocess.CompletedProcess:
    if kill_at:
        return run([sys.executable, "-c", KILLED_CLI, *args],
                   {**env, "MMALIGN_TEST_KILL_AT": kill_at})
    return run([sys.executable, "-m", "mmalign.pipelines.cli", *args], env)


def align_check(env: dict, *args) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "mmalign.pipelines.align_check", *args], env)


def comparable(t: pa.Table, recording: str) -> list[dict]:
    """Rows with the recording's location in source references replaced by REC (a path in a
    local run, a URI in an S3 run) and the wall-clock column left out."""
    rows = t.drop_columns([c for c in WALL_CLOCK if c in t.column_names]).to_pylist()
    for r in rows:
        for k, v in r.items():
            if k.endswith("__src") and isinstance(v, str):
                r[k] = v.replace(recording, "REC")
    return rows


def letters(t: pa.Table, recording: str) -> list[tuple]:
    return sorted((d["stage"], d["reason"], d["stream_id"], d["position"],
                   (d["source_uri"] or "").replace(recording, "REC"))
                  for d in t.to_pylist())


@pytest.fixture(scope="module")
def world(s3_server, tmp_path_factory):
    """A recording on local disk and under s3://B/recordings/rec1/ (with a second manifest,
    other buckets and a tighter tolerance), and its two local reference outputs."""
    tmp = tmp_path_factory.mktemp("remote")
    rec = generate_recording(tmp / "rec", duration_s=4.0, seed=3, size=(160, 120), fps=20.0)
    doc = yaml.safe_load(rec.read_text())
    doc["alignment"]["bucket_s"] = 2.2                # 3 parts where the first has 2
    doc["alignment"]["policies"]["cam1"]["tolerance_ms"] = 5.0
    rec.with_name("manifest-new.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    bucket = s3_server.create_bucket()
    s3_server.upload(rec.parent, bucket, "recordings/rec1")
    env = {**s3_server.process_env(), "MMALIGN_SOURCE_CACHE": str(tmp / "source-cache")}
    w = {"tmp": tmp, "rec": rec.parent, "bucket": bucket, "env": env, "times": {},
         "server": s3_server, "s3_rec": f"s3://{bucket}/recordings/rec1"}
    for name in ("manifest", "manifest-new"):
        out = tmp / f"local-{name}"
        t0 = time.monotonic()
        p = mmalign(env, "backfill", "--manifest", rec.parent / f"{name}.yaml", "--out", out,
                    "--run-id", f"local-{name}", "--json")
        w["times"][f"local {name}"] = time.monotonic() - t0
        assert p.returncode == 0, p.stderr[-3000:]
        w[f"local {name}"] = out
    return w


def s3_filesystem(server) -> pafs.S3FileSystem:
    e = server.env
    return pafs.S3FileSystem(access_key=e["AWS_ACCESS_KEY_ID"],
                             secret_key=e["AWS_SECRET_ACCESS_KEY"],
                             region=e["AWS_DEFAULT_REGION"], scheme="http",
                             endpoint_override=server.endpoint.removeprefix("http://"))


def read_back(w: dict, out_key: str) -> tuple[pa.Table, pd.DataFrame]:
    """OUT/aligned read as a user reads it: pyarrow over its S3 file system, and pandas."""
    server, b = w["server"], w["bucket"]
    table = pq.read_table(f"{b}/{out_key}/aligned", filesystem=s3_filesystem(server))
    # a new s3fs client each time: s3fs caches listings and etags per process, and a file
    # a commit replaced since is then "expired" (FileExpired) to a cached client
    frame = pd.read_parquet(f"s3://{b}/{out_key}/aligned",
                            storage_options={**server.storage_options,
                                             "skip_instance_cache": True})
    return table, frame


def same_rows(table: pa.Table, local: Path, w: dict) -> None:
    ref = read_aligned(local / "aligned")
    t = table.sort_by([("session_id", "ascending"), ("tick_ns", "ascending")])
    assert t.num_rows == ref.num_rows > 0
    assert comparable(t, w["s3_rec"]) == comparable(ref, str(w["rec"]))


def test_backfill_and_align_check_on_s3(world, s3_env, capsys):
    w, env, b = world, world["env"], world["bucket"]
    t0 = time.monotonic()
    p = mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest.yaml",
                "--out", f"s3://{b}/out", "--run-id", "run-1", "--json")
    w["times"]["s3 manifest (cold cache)"] = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    assert summary["aligned_dir"] == f"s3://{b}/out/aligned"
    assert all(a["balanced"] for a in summary["accounting"].values())

    # the objects a user finds: one dataset file per bucket, letters, the summary, no staging
    keys = w["server"].keys(b, "out/")
    assert keys == sorted(["out/summary.json", "out/deadletter/demo-001/deadletters.parquet"]
                          + [k for k in keys if k.startswith("out/aligned/demo-001/part-b")])
    local = w["local manifest"]
    assert [k.rsplit("/", 1)[1] for k in keys if "/aligned/" in k] == \
        sorted(f.name for f in (local / "aligned" / "demo-001").glob("part-*.parquet"))

    # pyarrow and pandas read the S3 dataset whole: the local run's rows, URIs as sources
    table, frame = read_back(w, "out")
    same_rows(table, local, w)
    assert len(frame) == table.num_rows
    assert set(frame["session_id"]) == {"demo-001"}
    assert frame["cam0__src"].str.startswith(f"{w['s3_rec']}/cam0.mp4").all()

    # dead letters: the same, pointing at the objects (never at the worker's cache)
    dead = read_dead_letters(f"s3://{b}/out/deadletter")
    assert letters(dead, w["s3_rec"]) == letters(read_dead_letters(local / "deadletter"),
                                                 str(w["rec"]))
    assert all(u.startswith(w["s3_rec"]) for u in dead.column("source_uri").to_pylist())
    assert not any("source-cache" in m for m in dead.column("message").to_pylist())

    # align-check on the S3 output: the same verdict as on the local one
    s3_check = align_check(env, f"s3://{b}/out", "--json")
    local_check = align_check(env, local, "--json")
    rep, ref = json.loads(s3_check.stdout), json.loads(local_check.stdout)
    assert s3_check.returncode == local_check.returncode == rep["exit_code"], s3_check.stderr
    assert rep["kind"] == "output" and rep["failed"] == ref["failed"]
    assert [c["name"] for c in rep["checks"]] == [c["name"] for c in ref["checks"]]

    # the same run again with the source cache warm (no download: objects unchanged)
    cache = Path(env["MMALIGN_SOURCE_CACHE"])
    stamps = {f: f.stat().st_mtime_ns for f in (cache / "stamps").iterdir()}
    t0 = time.monotonic()
    p = mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest.yaml",
                "--out", f"s3://{b}/out-warm", "--run-id", "run-warm")
    w["times"]["s3 manifest (warm cache)"] = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    assert {f: f.stat().st_mtime_ns for f in (cache / "stamps").iterdir()} == stamps
    with capsys.disabled():
        print("\nwall times (CLI, s):", {k: round(v, 1) for k, v in w["times"].items()})


def test_sliced_backfill_on_s3(world, s3_env):
    """Time slices over two workers, recording and output on S3: the local run's rows and
    letters; the spill files stay on local disk and go with the run, and a killed run's
    left-over spill folder is removed by the next."""
    w, env, b = world, world["env"], world["bucket"]
    tmp = Path(tempfile.gettempdir())
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = tmp / f"mmalign-slices-{gone.pid}-killedrun"    # what a SIGKILL'd run leaves
    (orphan / "raw").mkdir(parents=True)
    (orphan / "raw" / "chunk.pkl").write_bytes(b"spilled")
    spills = set(tmp.glob("mmalign-slices-*")) - {orphan}
    p = mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest.yaml",
                "--out", f"s3://{b}/out-sliced", "--run-id", "run-sliced", "--slice-s", "1",
                "--workers", "2", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    assert summary["slices"]["workers"] == 2 and len(summary["slices"]["slices"]) >= 2
    assert all(a["balanced"] for a in summary["accounting"].values())
    keys = w["server"].keys(b, "out-sliced/")
    assert not any(".staging" in k or ".slices" in k for k in keys), keys
    assert set(tmp.glob("mmalign-slices-*")) == spills      # its own gone, the orphan too
    local = w["local manifest"]
    table, _ = read_back(w, "out-sliced")
    same_rows(table, local, w)
    dead = read_dead_letters(f"s3://{b}/out-sliced/deadletter")
    assert letters(dead, w["s3_rec"]) == letters(read_dead_letters(local / "deadletter"),
                                                 str(w["rec"]))


def test_rerun_replaces_the_output_on_s3(world):
    w, env, b = world, world["env"], world["bucket"]
    if not w["server"].keys(b, "out/summary.json"):
        assert mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest.yaml",
                       "--out", f"s3://{b}/out", "--run-id", "run-1").returncode == 0
    before = set(w["server"].keys(b, "out/aligned/"))
    p = mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest-new.yaml",
                "--out", f"s3://{b}/out", "--run-id", "run-2")
    assert p.returncode == 0, p.stderr[-3000:]
    local = w["local manifest-new"]
    after = w["server"].keys(b, "out/aligned/")
    # exactly the new run's parts: other bucket names, none of the first run's left over
    assert [k.rsplit("/", 1)[1] for k in after] == \
        sorted(f.name for f in (local / "aligned" / "demo-001").glob("part-*.parquet"))
    assert set(after) != before
    assert w["server"].keys(b, "out/.staging") == []
    table, frame = read_back(w, "out")
    same_rows(table, local, w)
    assert len(frame) == table.num_rows
    summary = json.loads(w["server"].client().get_object(
        Bucket=b, Key="out/summary.json")["Body"].read())
    assert summary["run_id"] == "run-2"


def test_killed_runs_on_s3_leave_old_or_new(world):
    w, env, b = world, world["env"], world["bucket"]
    out = f"s3://{b}/out-kill"
    assert mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest-new.yaml",
                   "--out", out, "--run-id", "kill-0").returncode == 0

    # killed before the journal: the previous output, untouched, even to a raw reader
    p = mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest.yaml", "--out", out,
                "--run-id", "kill-1", kill_at="before-journal")
    assert p.returncode == -9, p.stderr[-3000:]
    assert w["server"].keys(b, "out-kill/.staging/kill-1/")          # its upload is left
    assert not w["server"].keys(b, "out-kill/.staging/kill-1/_COMMIT")
    table, _ = read_back(w, "out-kill")
    same_rows(table, w["local manifest-new"], w)
    # the next reader (align-check runs recover first) clears the leftover, output unchanged
    align_check(env, out, "--json", "--no-expectations")
    assert w["server"].keys(b, "out-kill/.staging") == []
    same_rows(read_back(w, "out-kill")[0], w["local manifest-new"], w)

    # killed in the roll-forward (after the journal, 2 files copied): a raw reader may see a
    # mix now; align-check finishes the commit and then the output is the new run's, whole
    p = mmalign(env, "backfill", "--manifest", f"{w['s3_rec']}/manifest.yaml", "--out", out,
                "--run-id", "kill-2", kill_at="mid-commit")
    assert p.returncode == -9, p.stderr[-3000:]
    assert w["server"].keys(b, "out-kill/.staging/kill-2/_COMMIT")
    check = align_check(env, out, "--json", "--no-expectations")
    assert json.loads(check.stdout)["kind"] == "output", check.stderr
    assert w["server"].keys(b, "out-kill/.staging") == []
    same_rows(read_back(w, "out-kill")[0], w["local manifest"], w)
    # the previous run's third part, which the new one does not have, is gone
    names = [k.rsplit("/", 1)[1] for k in w["server"].keys(b, "out-kill/aligned/")]
    assert names == sorted(f.name for f in
                           (w["local manifest"] / "aligned" / "demo-001").glob("part-*"))
