"""Runner presets: what `--runner local|flink|dataflow` means as Beam pipeline options.

    local     DirectRunner (the default; no servers)
    prism     Beam's Prism runner (local, portable, streaming)
    flink     PortableRunner on a Beam Flink job server, SDK harness in-process (LOOPBACK):
              ``-- --job_endpoint=host:port`` uses a running job server (``python -m
              infra.flink_jobserver start``, or docker-compose's ``jobserver:8099``); without it
              an embedded one (Flink mini-cluster) is started for the run and stopped after.
    dataflow  DataflowRunner: project, region and a gs:// temp location are required; the
              project is installed on workers from pyproject.toml (``--setup_file``) unless a
              custom SDK container (deploy/Dockerfile) is given; GPUs for the encoder stage
              by a resource hint (``--encoder_accelerator``) or for every worker.

Any other name is handed to Beam as a runner class name (``DirectRunner``, ``PortableRunner``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from mmalign.infra.flink_jobserver import FlinkJobServer

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"local": "DirectRunner", "direct": "DirectRunner", "prism": "PrismRunner",
           "flink": "PortableRunner", "flinkrunner": "PortableRunner",
           "dataflow": "DataflowRunner", "dataflowrunner": "DataflowRunner"}
DEFAULT_GPU = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
GPU_STAGE_PREFIX = "encode"   # post-align stages whose name starts with this get the GPU hint
# docker-compose.yml: the SDK worker pool shares the taskmanager's network namespace
COMPOSE_WORKER_POOL = "localhost:50000"


class RunnerConfigError(ValueError):
    """A runner preset is missing an option or has a bad one; the message names the fix."""


class MmalignRunnerOptions(PipelineOptions):
    """Options of ours that ride along with Beam's (``--encoder_accelerator``)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--encoder_accelerator", default=None,
            help="Dataflow accelerator for the encoder stage only, as a resource hint, e.g. "
                 f"'{DEFAULT_GPU}' (right fitting: other stages run on CPU workers)")


def _has(args: Sequence[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def _value(args: Sequence[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def dataflow_args(*, project: str, region: str, temp_location: str,
                  staging_location: str | None = None, job_name: str | None = None,
                  machine_type: str = "n1-standard-4", num_workers: int | None = None,
                  max_num_workers: int | None = None, sdk_container_image: str | None = None,
                  setup_file: str | Path | None = None, encoder_accelerator: str | None = None,
                  worker_accelerator: str | None = None, service_account: str | None = None,
                  subnetwork: str | None = None, streaming: bool = False) -> list[str]:
    """Pipeline args for DataflowRunner (Runner v2).

    Workers get the project either from a custom SDK container (``sdk_container_image``,
    built from deploy/Dockerfile: needed for GPUs and for a fast start) or by building and
    installing this repo's sdist (``setup_file``, default the repo's pyproject.toml).
    ``encoder_accelerator`` puts a GPU only on the encoder stage (a resource hint);
    ``worker_accelerator`` on every worker (a Dataflow service option)."""
    for name, value in (("project", project), ("region", region),
                        ("temp_location", temp_location)):
        if not value:
            raise RunnerConfigError(f"Dataflow needs --{name}; give it after `--`")
    for name, value in (("temp_location", temp_location), ("staging_location", staging_location)):
        if value and not value.startswith("gs://"):
            raise RunnerConfigError(f"--{name}={value} is not a gs:// path; Dataflow stages "
                                    f"and writes temp files in Cloud Storage")
    args = [f"--project={project}", f"--region={region}", f"--temp_location={temp_location}",
            f"--staging_location={staging_location or temp_location.rstrip('/') + '/staging'}",
            f"--worker_machine_type={machine_type}", "--experiments=use_runner_v2"]
    if job_name:
        args.append(f"--job_name={job_name}")
    if num_workers:
        args.append(f"--num_workers={int(num_workers)}")
    if max_num_workers:
        args.append(f"--max_num_workers={int(max_num_workers)}")
    if sdk_container_image:
        args.append(f"--sdk_container_image={sdk_container_image}")
    else:
        args.append(f"--setup_file={Path(setup_file or REPO_ROOT / 'pyproject.toml')}")
    for name, value in (("encoder_accelerator", encoder_accelerator),
                        ("worker_accelerator", worker_accelerator)):
        if value:
            check_accelerator(value, name)
    if encoder_accelerator:
        args.append(f"--encoder_accelerator={encoder_accelerator}")
    if worker_accelerator:
        args.append(f"--dataflow_service_options=worker_accelerator={worker_accelerator}")
    if service_account:
        args.append(f"--service_account_email={service_account}")
    if subnetwork:
        args.append(f"--subnetwork={subnetwork}")
    return [*args, "--streaming"] if streaming else args


def check_accelerator(spec: str, name: str = "accelerator") -> str:
    """``type:<gpu>;count:<n>[;install-nvidia-driver]`` or a RunnerConfigError saying so."""
    parts = dict((p.split(":", 1) + [""])[:2] for p in spec.split(";") if p)
    ok = parts.get("type", "").startswith("nvidia-") and parts.get("count", "").isdigit()
    if not ok or int(parts["count"]) < 1 or set(parts) - {"type", "count", "install-nvidia-driver"}:
        raise RunnerConfigError(f"--{name}={spec!r} is not 'type:nvidia-<gpu>;count:<n>"
                                f"[;install-nvidia-driver]', e.g. '{DEFAULT_GPU}'")
    return spec


def with_stage_hints(options: PipelineOptions, name: str, stage: beam.PTransform
                     ) -> beam.PTransform:
    """``stage`` with the encoder accelerator hint if it is an encoder stage and one is set."""
    accel = options.view_as(MmalignRunnerOptions).encoder_accelerator
    if accel and name.lower().startswith(GPU_STAGE_PREFIX):
        return stage.with_resource_hints(accelerator=check_accelerator(accel,
                                                                       "encoder_accelerator"))
    return stage


def _check_dataflow(args: Sequence[str]) -> None:
    missing = [n for n in ("project", "region", "temp_location") if not _has(args, n)]
    if missing:
        raise RunnerConfigError(
            "--runner dataflow needs " + ", ".join(f"--{n}" for n in missing) + " after `--` "
            "(e.g. -- --project=P --region=europe-west4 --temp_location=gs://B/tmp); see "
            "README 'Running on Dataflow'")
    dataflow_args(project=_value(args, "project"), region=_value(args, "region"),
                  temp_location=_value(args, "temp_location"),
                  staging_location=_value(args, "staging_location"),
                  encoder_accelerator=_value(args, "encoder_accelerator"))


@contextmanager
def runner_session(runner: str, pipeline_args: Sequence[str] | None = None,
                   ) -> Iterator[tuple[str, list[str]]]:
    """Resolve a preset into ``(Beam runner name, pipeline args)`` for the duration of a run.

    ``flink`` without ``--job_endpoint`` starts an embedded Flink job server and stops it
    when the block ends. Dataflow without a container image installs the project from
    pyproject.toml."""
    args = list(pipeline_args or [])
    name = PRESETS.get(runner.lower(), runner)
    if name == "DataflowRunner":
        _check_dataflow(args)
        if not _has(args, "sdk_container_image") and not _has(args, "setup_file"):
            args.append(f"--setup_file={REPO_ROOT / 'pyproject.toml'}")
        yield name, args
        return
    if runner.lower() not in ("flink", "flinkrunner"):
        yield name, args
        return
    if _has(args, "flink_master"):
        raise RunnerConfigError(
            "--flink_master is not used with --runner flink: Beam's Flink job server submits "
            "to the cluster; give -- --job_endpoint=<job server host:port> (docker-compose: "
            "localhost:8099) or nothing for an embedded Flink")
    if _has(args, "job_endpoint"):
        env = [] if _has(args, "environment_type") else ["--environment_type=LOOPBACK"]
        yield name, [*args, *env]
        return
    with tempfile.TemporaryDirectory(prefix="mmalign-flink-") as home:
        server = FlinkJobServer(Path(home)).start()
        try:
            extra = [a for a in server.pipeline_args() if a.split("=")[0] != "--runner"
                     and not (a.startswith("--parallelism") and _has(args, "parallelism"))]
            yield name, [*extra, *args]
        finally:
            server.stop()
