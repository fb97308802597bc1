"""Dataflow, offline: the backfill built with DataflowRunner options (``--dry_run``: translated,
the project's sdist built for the workers, not submitted), the job request's environment as the
Dataflow client would send it, the GPU hint on the encoder stage only. The options, the flex
template and the custom SDK container's versions: tests/unit/pipelines/test_dataflow_options.py."""

from __future__ import annotations

import sys
import tarfile

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2 as pb

from mmalign.pipelines import backfill, core
from mmalign.pipelines.runners import DEFAULT_GPU, dataflow_args
from mmalign.pipelines.sample_recording import generate_recording

ACCEL_URN = "beam:resources:accelerator:v1"


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
    p = beam.Pipeline(runner="DataflowRunner", options=PipelineOptions([*args, "--dry_run=True"]))
    backfill.build(p, job, job.out / ".staging" / job.run_id)
    result = p.run()
    proto = p.runner.proto_pipeline
    env = apiclient.Environment(
        packages=[], options=result.job.options, environment_version="8",
        proto_pipeline_staged_url="gs://mmalign-ci/tmp/staging/pipeline.pb",
        proto_pipeline=proto).proto
    return {"proto": proto, "env": Environment.to_dict(env), "job": result.job}


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
def test_workers_get_the_project_as_an_sdist(dry_run) -> None:
    proto = dry_run["proto"]
    staged = {}
    for e in proto.components.environments.values():
        for dep in e.dependencies:
            if dep.type_urn == "beam:artifact:type:file:v1":
                path = pb.ArtifactFilePayload.FromString(dep.type_payload).path
                name = pb.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
                staged[name] = path
    sdist = staged["workflow.tar.gz"]
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    for module in ("pipelines/backfill.py", "pipelines/runners.py", "transforms/align/join.py",
                   "schemas/manifest.py", "deadletter/record.py", "encoders/stage.py"):
        assert any(n.endswith(module) for n in names), module
    assert any(n.endswith("/pyproject.toml") for n in names)


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
