"""Dataflow options checked offline: dataflow_args and its errors, the flex template's
parameters against its entry point, and the custom SDK container's Beam and Python
versions. The backfill translated for DataflowRunner (``--dry_run``) is
tests/integration/test_dataflow_dry_run.py."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
import zipfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from mmalign.pipelines import runners
from mmalign.pipelines.runners import DEFAULT_GPU, RunnerConfigError, dataflow_args, runner_session

ROOT = Path(__file__).resolve().parents[3]


def _flex_main():
    spec = importlib.util.spec_from_file_location("flex_main", ROOT / "deploy" / "flex_main.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dataflow_args_and_errors(monkeypatch, tmp_path) -> None:
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
    # without an image the workers get the running mmalign as a wheel (runners.project_wheel;
    # built for real in tests/integration/test_dataflow_dry_run.py)
    made = []

    def fake_wheel(out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        made.append(out_dir / "mmalign-0.1.0-py3-none-any.whl")
        made[-1].write_bytes(b"PK")
        return made[-1]

    monkeypatch.setattr(runners, "project_wheel", fake_wheel)
    with runner_session("DataflowRunner", ["--project=p", "--region=r",
                                           "--temp_location=gs://b/t"]) as (runner, resolved):
        assert runner == "DataflowRunner"
        assert resolved[-1] == f"--extra_package={made[0]}" and made[0].is_file()
        assert not any(a.startswith("--setup_file") for a in resolved)
    assert not made[0].exists()                     # staged during the run only
    for ships in ("--sdk_container_image=eu.gcr.io/p/mmalign:1", "--setup_file=./setup.py",
                  f"--extra_package={tmp_path / 'mmalign-0.1.0-py3-none-any.whl'}"):
        with runner_session("dataflow", ["--project=p", "--region=r",
                                         "--temp_location=gs://b/t", ships]) as (_, resolved):
            assert not any(a.startswith("--extra_package") for a in resolved if a != ships)
    with runner_session("dataflow", ["--project=p", "--region=r", "--temp_location=gs://b/t",
                                     "--sdk_container_image=i"], streaming=True) as (_, resolved):
        assert resolved[-1] == "--streaming"
        assert not any(a.startswith("--extra_package") for a in resolved)
    # the streaming job's workers also get kafka-python (an extra, not a requirement of the
    # wheel), rebuilt from its installation here
    with runner_session("dataflow", ["--project=p", "--region=r", "--temp_location=gs://b/t"],
                        streaming=True) as (_, resolved):
        wheels = [Path(a.split("=", 1)[1]) for a in resolved if a.startswith("--extra_package")]
        assert wheels[0] == made[-1] and wheels[1].name.startswith("kafka_python-")
        assert "kafka/__init__.py" in zipfile.ZipFile(wheels[1]).namelist()
        assert resolved[-1] == "--streaming"


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
    # the workers run the encoders (torch), the feature store and the streaming job's reader
    extras = re.search(r'"\.\[([a-z,]+)\]"', text).group(1).split(",")
    assert {"encoders", "feast", "kafka"} <= set(extras)
    pyproject_extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(extras) <= set(pyproject_extras)
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
