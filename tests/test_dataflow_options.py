"""Dataflow, offline: the backfill built with DataflowRunner options (``--dry_run``: translated,
the project's sdist built for the workers, not submitted), the job request's environment as the
Dataflow client would send it, the GPU hint on the encoder stage only, the flex template and
the custom SDK container's versions."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tarfile
import tomllib
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2 as pb

from mmalign.pipelines import backfill, core
from mmalign.pipelines.runners import DEFAULT_GPU, RunnerConfigError, dataflow_args, runner_session
from mmalign.pipelines.sample_recording import generate_recording

ROOT = Path(__file__).resolve().parents[1]
ACCEL_URN = "beam:resources:accelerator:v1"


def _flex_main():
    spec = importlib.util.spec_from_file_location("flex_main", ROOT / "deploy" / "flex_main.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    assert gpu and all(n.startswith("Encode") for n in gpu), gpu
    assert [n for n in leaves if n.startswith("Align")] and not any(
        hinted(n) for n in leaves if not n.startswith("Encode"))
    env = next(comps.environments[t.environment_id] for t in comps.transforms.values()
               if t.unique_name in gpu)
    assert env.resource_hints[ACCEL_URN].decode() == DEFAULT_GPU


def test_dataflow_args_and_errors() -> None:
    args = dataflow_args(project="p", region="us-central1", temp_location="gs://b/tmp",
                         sdk_container_image="us-docker.pkg.dev/p/r/mmalign:0.1.0",
                         worker_accelerator="type:nvidia-l4;count:1;install-nvidia-driver")
    assert "--sdk_container_image=us-docker.pkg.dev/p/r/mmalign:0.1.0" in args
    assert not any(a.startswith("--setup_file") for a in args)
    assert ("--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;"
            "install-nvidia-driver") in args
    assert "--staging_location=gs://b/tmp/staging" in args
    with pytest.raises(RunnerConfigError, match="gs://"):
        dataflow_args(project="p", region="r", temp_location="/tmp/x")
    with pytest.raises(RunnerConfigError, match="encoder_accelerator"):
        dataflow_args(project="p", region="r", temp_location="gs://b/t",
                      encoder_accelerator="nvidia-tesla-t4")
    with pytest.raises(RunnerConfigError, match="--project, --temp_location"):
        with runner_session("dataflow", ["--region=r"]):
            pass
    with runner_session("dataflow", ["--project=p", "--region=r", "--temp_location=gs://b/t"]
                        ) as (runner, resolved):
        assert runner == "DataflowRunner"
        assert f"--setup_file={ROOT / 'pyproject.toml'}" in resolved


def test_flex_template_parameters_match_the_entry_point() -> None:
    meta = json.loads((ROOT / "deploy" / "flex_template" / "metadata.json").read_text())
    params = {p["name"]: p for p in meta["parameters"]}
    assert {"manifest", "out"} <= {n for n, p in params.items() if not p["isOptional"]}
    examples = {"manifest": "/data/a/manifest.yaml,/data/b/manifest.yaml", "out": "/data/out",
                "run_id": "nightly-2024.05", "encoder_accelerator": DEFAULT_GPU}
    assert set(params) == set(examples)
    for name, p in params.items():
        assert all(re.fullmatch(rx, examples[name]) for rx in p.get("regexes", [])), name
    manifests, out, run_id, rest = _flex_main().parse(
        [f"--{k}={v}" for k, v in examples.items()] + ["--project=p", "--region=r"])
    assert manifests == ["/data/a/manifest.yaml", "/data/b/manifest.yaml"]
    assert (out, run_id) == ("/data/out", "nightly-2024.05")
    assert rest == [f"--encoder_accelerator={DEFAULT_GPU}", "--project=p", "--region=r"]
    opts = PipelineOptions(rest)
    from mmalign.pipelines.runners import MmalignRunnerOptions
    assert opts.view_as(MmalignRunnerOptions).encoder_accelerator == DEFAULT_GPU


def test_sdk_container_matches_the_installed_beam_and_python() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert args["BEAM_VERSION"] == beam.__version__
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in text
    entry = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/mmalign/(\S+)", text).group(1)
    assert (ROOT / entry).is_file()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    top = {p.split(".")[1] for p in packages if p.count(".") >= 1}
    assert top and top <= copied, top - copied
    assert "COPY __init__.py ./" in text          # the root is the package mmalign
