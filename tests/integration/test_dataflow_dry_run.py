"""Dataflow, offline: the backfill built with DataflowRunner options (``--dry_run``: translated,
mmalign's wheel staged for the workers, not submitted), the job request's environment as the
Dataflow client would send it, the GPU hint on the encoder stage only; and `mmalign backfill
--runner DataflowRunner ... --dry_run=True` run from a wheel installed outside the repository,
whose staged artifacts hold that installation's wheel. The options, the flex template and the
custom SDK container's versions: tests/unit/pipelines/test_dataflow_options.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2 as pb

from mmalign.pipelines import backfill, core
from mmalign.pipelines.runners import (
    DEFAULT_GPU,
    dataflow_args,
    installed_distribution,
    repack_installed,
    runner_session,
)
from mmalign.pipelines.sample_recording import generate_recording

ACCEL_URN = "beam:resources:accelerator:v1"
ROOT = Path(__file__).resolve().parents[2]
WHEEL = "mmalign-0.1.0-py3-none-any.whl"


def _staged(proto) -> dict[str, str]:
    """Staged name -> local path of every file artifact of the job's environments."""
    staged = {}
    for e in proto.components.environments.values():
        for dep in e.dependencies:
            if dep.type_urn == "beam:artifact:type:file:v1":
                path = pb.ArtifactFilePayload.FromString(dep.type_payload).path
                name = pb.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
                staged[name] = path
    return staged


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The backfill of a recording with a sensor encoder, submitted to DataflowRunner dry."""
    from apache_beam.runners.dataflow.internal import apiclient
    from google.cloud.dataflow_v1beta3 import Environment

    tmp = tmp_path_factory.mktemp("dataflow")
    manifest = generate_recording(tmp / "rec", seed=1, duration_s=4.0, bad_records=False)
    doc = yaml.safe_load(manifest.read_text())
    doc["encoders"] = {"sensor": {"window_ms": 200}}
    manifest.write_text(yaml.safe_dump(doc))
    job = core.prepare([manifest], tmp / "out", run_id="dataflow-dry")
    args = dataflow_args(project="mmalign-ci", region="europe-west4",
                         temp_location="gs://mmalign-ci/tmp", machine_type="n1-standard-8",
                         max_num_workers=4, job_name="mmalign-backfill-ci",
                         encoder_accelerator=DEFAULT_GPU)
    # as `mmalign backfill --runner DataflowRunner` does: no image -> the wheel of this mmalign
    # (here a source checkout: built with pip), staged while the session lasts
    with runner_session("DataflowRunner", [*args, "--dry_run=True"]) as (runner, resolved):
        p = beam.Pipeline(runner=runner, options=PipelineOptions(resolved))
        backfill.build(p, job, job.out / ".staging" / job.run_id)
        result = p.run()
        proto = p.runner.proto_pipeline
        staged = _staged(proto)
        wheel_names = zipfile.ZipFile(staged[WHEEL]).namelist()
        extra = Path(staged["extra_packages.txt"]).read_text().split()
    env = apiclient.Environment(
        packages=[], options=result.job.options, environment_version="8",
        proto_pipeline_staged_url="gs://mmalign-ci/tmp/staging/pipeline.pb",
        proto_pipeline=proto).proto
    return {"proto": proto, "env": Environment.to_dict(env), "job": result.job,
            "staged": staged, "wheel_names": wheel_names, "extra_packages": extra}


@pytest.mark.slow
def test_job_request_has_region_locations_machine_type(dry_run) -> None:
    env, job = dry_run["env"], dry_run["job"]
    assert job.proto.name == "mmalign-backfill-ci"
    assert env["temp_storage_prefix"].startswith("storage.googleapis.com/mmalign-ci/tmp/")
    assert "use_runner_v2" in env["experiments"]
    (pool,) = env["worker_pools"]
    assert pool["machine_type"] == "n1-standard-8"
    assert pool["autoscaling_settings"]["max_num_workers"] == 4
    image = pool["sdk_harness_container_images"][0]["container_image"]
    assert image.endswith(f"beam_python3.{sys.version_info.minor}_sdk:{beam.__version__}")
    opts = {d["key"]: d["value"] for d in env["sdk_pipeline_options"]["display_data"]}
    assert opts["project"] == "mmalign-ci" and opts["region"] == "europe-west4"
    assert opts["staging_location"].startswith("gs://mmalign-ci/tmp/staging")
    assert opts["encoder_accelerator"] == DEFAULT_GPU


@pytest.mark.slow
def test_workers_get_the_project_as_a_wheel(dry_run) -> None:
    staged, names = dry_run["staged"], dry_run["wheel_names"]
    assert "workflow.tar.gz" not in staged and dry_run["extra_packages"] == [WHEEL]
    for module in ("pipelines/backfill.py", "pipelines/runners.py", "transforms/align/join.py",
                   "schemas/manifest.py", "deadletter/record.py", "encoders/stage.py"):
        assert f"mmalign/{module}" in names, module
    assert "mmalign-0.1.0.dist-info/METADATA" in names
    assert not any(n.startswith(("mmalign/tests/", "tests/")) for n in names)


@pytest.mark.slow
def test_cli_dry_run_from_an_installed_wheel_stages_that_wheel(tmp_path) -> None:
    """`mmalign backfill --runner DataflowRunner --project ... --dry_run=True` from a wheel
    installed outside the repository (no pyproject.toml, no --setup_file to point at): the job
    is translated, and its staged artifacts hold the installed package rebuilt as a wheel."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(ROOT)], check=True, timeout=600)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(tmp_path / "dist" / WHEEL)], check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import mmalign; print(mmalign.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(site / "mmalign" / "__init__.py")
    manifest = generate_recording(tmp_path / "rec", seed=1, duration_s=4.0, bad_records=False)
    proc = subprocess.run(
        [sys.executable, "-m", "mmalign.pipelines.cli", "backfill", "--manifest", str(manifest),
         "--out", str(tmp_path / "out"), "--runner", "DataflowRunner", "--project", "mmalign-ci",
         "--region", "europe-west4", "--temp_location", "gs://mmalign-ci/tmp",
         "--job_name", "mmalign-wheel-ci", "--dry_run=True"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = json.loads(proc.stdout)
    assert job["dry_run"] is True and job["job_name"] == "mmalign-wheel-ci"
    assert (job["project"], job["region"]) == ("mmalign-ci", "europe-west4")
    assert "workflow.tar.gz" not in job["staged"] and "extra_packages.txt" in job["staged"]
    (tmp_path / "again").mkdir()
    expected = repack_installed(installed_distribution(site / "mmalign"), tmp_path / "again")
    assert expected.name == WHEEL
    assert job["staged"][WHEEL]["sha256"] == hashlib.sha256(expected.read_bytes()).hexdigest()
    with zipfile.ZipFile(expected) as z, zipfile.ZipFile(tmp_path / "dist" / WHEEL) as built:
        assert sorted(z.namelist()) == sorted(built.namelist())   # the wheel pip installed
        for name in built.namelist():
            if not name.endswith("RECORD"):
                assert z.read(name) == built.read(name), name
    assert not (tmp_path / "out").exists()          # a dry run writes no output


@pytest.mark.slow
def test_gpu_hint_only_on_the_encoder_stage(dry_run) -> None:
    comps = dry_run["proto"].components

    def hinted(name: str) -> bool:
        t = next(t for t in comps.transforms.values() if t.unique_name == name)
        env = comps.environments[t.environment_id] if t.environment_id else None
        return bool(env and ACCEL_URN in env.resource_hints)

    leaves = [t.unique_name for t in comps.transforms.values()
              if not t.subtransforms and t.environment_id]
    gpu = [n for n in leaves if hinted(n)]
    def stage(n: str) -> str:          # "Core/Encode/ParDo(...)" -> "Encode"
        parts = n.split("/")
        return parts[1] if parts[0] == "Core" and len(parts) > 1 else parts[0]

    assert gpu and all(stage(n) == "Encode" for n in gpu), gpu
    assert [n for n in leaves if stage(n) == "Align"] and not any(
        hinted(n) for n in leaves if stage(n) != "Encode")
    env = next(comps.environments[t.environment_id] for t in comps.transforms.values()
               if t.unique_name in gpu)
    assert env.resource_hints[ACCEL_URN].decode() == DEFAULT_GPU
