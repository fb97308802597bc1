"""Runners as Beam users name them, and Beam's own pipeline options on mmalign's command line.

``--runner`` takes Beam's runner names and mmalign's short presets:

    DirectRunner    local, direct    the backfill's default (no servers); for ``stream``, the
                                     local Prism (Beam's DirectRunner hands streaming to Prism)
    PrismRunner     prism            Beam's Prism, built locally (infra/prism.py); ``stream``'s
                                     default
    FlinkRunner     flink            Beam's portable Flink runner: ``--flink_master=[local]`` or
                                     none (or ``[auto]``) runs an embedded Flink mini-cluster
                                     through a Beam Flink job server started for the run;
                                     ``--flink_master=HOST:PORT`` submits through that job
                                     server to a Flink cluster; ``--job_endpoint=HOST:PORT`` uses
                                     a running job server; ``--flink_job_server_jar`` /
                                     ``--flink_submit_uber_jar`` leave it all to Beam
    PortableRunner  portable         any Beam job server: ``--job_endpoint`` is required
    DataflowRunner  dataflow         ``--project``, ``--region``, a gs:// ``--temp_location``;
                                     workers get mmalign from ``--sdk_container_image``
                                     (deploy/Dockerfile) or, without one, as a wheel of the
                                     installed package (``--extra_package``, ``project_wheel``);
                                     GPUs for the encoder stage by ``--encoder_accelerator``

Any other Beam runner name (or a runner's dotted class path) is handed to Beam as it is.
Beam's pipeline options (``--flink_master``, ``--job_endpoint``, ``--parallelism``,
``--project``, ``--region``, ``--temp_location``, ...) follow the command's own options, with or
without a ``--`` before them (``PipelineArgsParser``); an option that is neither the command's
nor Beam's, or a bad value for one of Beam's, is a RunnerConfigError (exit 2).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import importlib.metadata
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from difflib import get_close_matches
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2 as pb
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.runner import _RUNNER_MAP  # Beam's own table of runner names

from mmalign.infra.flink_jobserver import FLINK_MINOR, FlinkJobServer
from mmalign.infra.prism import session as prism_session

PRESETS = {"local": "DirectRunner", "direct": "DirectRunner", "prism": "PrismRunner",
           "flink": "FlinkRunner", "portable": "PortableRunner", "dataflow": "DataflowRunner"}
RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner", "PortableRunner", "DataflowRunner")
LOCAL_FLINK = ("[local]", "[auto]")      # Beam's names for "no cluster: an embedded Flink"
DEFAULT_GPU = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
GPU_STAGE_PREFIX = "encode"   # post-align stages whose name starts with this get the GPU hint
# docker-compose.yml: the SDK worker pool shares the taskmanager's network namespace
COMPOSE_WORKER_POOL = "localhost:50000"
PACKAGE = "mmalign"
WHEEL_DATE = (1980, 1, 1, 0, 0, 0)       # fixed entry times: the same files, the same wheel


class RunnerConfigError(ValueError):
    """A runner or a pipeline option is unknown, missing or bad; the message names the fix."""


class MmalignRunnerOptions(PipelineOptions):
    """Options of ours that ride along with Beam's (``--encoder_accelerator``)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--encoder_accelerator", default=None,
            help="Dataflow accelerator for the encoder stage only, as a resource hint, e.g. "
                 f"'{DEFAULT_GPU}' (right fitting: other stages run on CPU workers)")


# -- the command line --------------------------------------------------------------------------

class _BeamParser(argparse.ArgumentParser):
    """Beam's option parser, raising instead of exiting on a bad value."""

    def error(self, message: str):
        raise RunnerConfigError("Beam pipeline option " + message.removeprefix("argument "))


def beam_option_parser() -> argparse.ArgumentParser:
    """A parser of every Beam pipeline option (and ours), as Beam builds it."""
    parser = _BeamParser(allow_abbrev=False, add_help=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)      # noqa: SLF001 -- Beam's own registration hook
    return parser


def _option_names(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}   # noqa: SLF001


def _norm(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def check_pipeline_args(command: str, own: set[str], extra: Sequence[str]
                        ) -> tuple[list[str], str | None]:
    """``(Beam pipeline args, runner named among them)`` from the arguments a command did not
    know: the first ``--`` dropped, every option checked against Beam's; RunnerConfigError
    (one sentence) for one that is neither ``own`` nor Beam's, a bad value, or a Beam option
    that is a misspelling of one of ``own`` (Beam's ``--bootstrap_servers`` vs mmalign's
    ``--bootstrap-servers``)."""
    args = list(extra)
    if "--" in args:
        args.remove("--")
    parser = beam_option_parser()
    try:
        known, unknown = parser.parse_known_args(args)
    except RunnerConfigError as e:
        raise RunnerConfigError(f"mmalign {command}: {e}") from None
    beam_names = _option_names(parser)
    if unknown:
        bad = unknown[0]
        if not bad.startswith("-"):
            raise RunnerConfigError(
                f"mmalign {command}: {bad!r} is not an option (a Beam option's value must "
                f"follow its name: --name=value or --name value)")
        name = bad.split("=", 1)[0]
        close = get_close_matches(name, sorted(own | beam_names), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RunnerConfigError(f"mmalign {command}: {name} is neither an option of mmalign "
                                f"{command} nor a Beam pipeline option{hint}")
    ours = {_norm(o): o for o in own if o.startswith("--")}
    for a in args:
        name = a.split("=", 1)[0]
        if name.startswith("--") and name not in own and _norm(name) in ours:
            raise RunnerConfigError(f"mmalign {command}: {name} is a Beam pipeline option that "
                                    f"mmalign does not use; did you mean {ours[_norm(name)]}?")
    runner = known.runner
    if runner is not None:                       # --runner among Beam's options: ours
        out, skip = [], False
        for a in args:
            if skip:
                skip = False
            elif a == "--runner":
                skip = True
            elif not a.startswith("--runner="):
                out.append(a)
        args = out
    return args, runner


class PipelineArgsParser(argparse.ArgumentParser):
    """A subcommand's parser. One that runs a pipeline (``add_runner_arguments``) also takes
    Beam's pipeline options after its own, with or without ``--``: they are checked
    (``check_pipeline_args``) and land in ``ns.pipeline_args``; ``--runner`` among them is the
    command's ``--runner``."""

    takes_pipeline_options = False

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        if not self.takes_pipeline_options:
            return ns, extra
        command = self.prog.split()[-1]
        ns.pipeline_args, runner = check_pipeline_args(command, _option_names(self), extra)
        try:
            if runner is not None:
                if ns.runner is not None and resolve_runner(ns.runner) != resolve_runner(runner):
                    raise RunnerConfigError(f"--runner {ns.runner} and --runner={runner} "
                                            f"disagree; give one")
                ns.runner = ns.runner or runner
            if ns.runner is not None:
                resolve_runner(ns.runner)
        except RunnerConfigError as e:
            raise RunnerConfigError(f"mmalign {command}: {e}") from None
        return ns, []


def add_runner_arguments(p: argparse.ArgumentParser, *, streaming: bool = False) -> None:
    """``--runner`` and Beam's pipeline options for a command that runs a pipeline."""
    default = "PrismRunner (local)" if streaming else "DirectRunner"
    p.add_argument(
        "--runner", default=None,
        help=f"Beam runner: {', '.join(RUNNERS)} (or local, prism, flink, portable, "
             f"dataflow); default {default}. Beam's pipeline options follow, with or "
             "without --: e.g. --runner FlinkRunner --flink_master=[local] --parallelism=2, "
             "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp")
    p.set_defaults(pipeline_args=[])
    p.__class__ = PipelineArgsParser        # an argparse parser of ours, made by add_parser
    p.takes_pipeline_options = True


def resolve_runner(runner: str | None, streaming: bool = False) -> str:
    """Beam's name for ``runner`` (a preset, a runner name in any case, a dotted class path);
    None -> the command's default. ``stream`` runs DirectRunner's way: on Prism."""
    if runner is None:
        return "PrismRunner" if streaming else "DirectRunner"
    key = runner.lower()
    name = PRESETS.get(key) or next((r for r in RUNNERS if r.lower() in (key, key + "runner")),
                                    None)
    if name is None:
        if key in _RUNNER_MAP or key + "runner" in _RUNNER_MAP or "." in runner:
            return runner
        raise RunnerConfigError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)} "
                                f"(or local, prism, flink, portable, dataflow)")
    return "PrismRunner" if streaming and name == "DirectRunner" else name


class LocalRunner(SwitchingDirectRunner):
    """Beam's DirectRunner for the batch jobs, without its first try on Prism: since Beam 2.6x
    the DirectRunner hands a pipeline Prism supports to a Prism binary it downloads from
    GitHub at run time, and falls back to its in-process FnApiRunner when that fails. The
    backfill runs in process here, where it is measured and tested: no download, no job on a
    different runner when a network happens to allow it, and no worker pool and temporary
    folder left behind by the failed try. Beam skips Prism for interactive pipelines (the
    flag decides nothing else), so this runner declares itself one."""
    _is_interactive = True


def preload_local_runner() -> None:
    """Import the local runner's own modules, which Beam imports on a pipeline's first run
    (~0.05 s): processes forked after this (the sliced backfill's later workers) have them."""
    import apache_beam.runners.portability.fn_api_runner  # noqa: F401


def pipeline(runner: str, options: PipelineOptions) -> beam.Pipeline:
    """A pipeline for Beam runner name ``runner``: DirectRunner is ``LocalRunner``."""
    return beam.Pipeline(runner=LocalRunner() if runner == "DirectRunner" else None,
                         options=options)


# -- options helpers ---------------------------------------------------------------------------

def _has(args: Sequence[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def _value(args: Sequence[str], name: str) -> str | None:
    """The last value of ``--name`` (Beam's argparse: the last one wins)."""
    found = None
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            found = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(args):
            found = args[i + 1]
    return found


def _values(args: Sequence[str], *names: str) -> list[str]:
    out = []
    for i, a in enumerate(args):
        for n in names:
            if a.startswith(f"--{n}="):
                out.append(a.split("=", 1)[1])
            elif a == f"--{n}" and i + 1 < len(args):
                out.append(args[i + 1])
    return out


def is_dry_run(args: Sequence[str]) -> bool:
    """Beam's ``--dry_run`` (DataflowRunner translates the job and does not submit it)."""
    return bool(PipelineOptions(list(args)).view_as(TestOptions).dry_run)


# -- Dataflow ----------------------------------------------------------------------------------

def dataflow_args(*, project: str, region: str, temp_location: str,
                  staging_location: str | None = None, job_name: str | None = None,
                  machine_type: str = "n1-standard-4", num_workers: int | None = None,
                  max_num_workers: int | None = None, sdk_container_image: str | None = None,
                  setup_file: str | Path | None = None, extra_package: str | Path | None = None,
                  encoder_accelerator: str | None = None,
                  worker_accelerator: str | None = None, service_account: str | None = None,
                  subnetwork: str | None = None, streaming: bool = False) -> list[str]:
    """Pipeline args for DataflowRunner (Runner v2).

    Workers get the project from a custom SDK container (``sdk_container_image``, built from
    deploy/Dockerfile: needed for GPUs and for a fast start), from ``extra_package`` (a wheel,
    e.g. ``project_wheel``'s) or ``setup_file``; with none of them, ``runner_session`` stages
    the installed package's wheel. ``encoder_accelerator`` puts a GPU only on the encoder stage
    (a resource hint); ``worker_accelerator`` on every worker (a Dataflow service option)."""
    for name, value in (("project", project), ("region", region),
                        ("temp_location", temp_location)):
        if not value:
            raise RunnerConfigError(f"Dataflow needs --{name}")
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
    if setup_file:
        args.append(f"--setup_file={setup_file}")
    if extra_package:
        args.append(f"--extra_package={extra_package}")
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
            "--runner DataflowRunner needs " + ", ".join(f"--{n}" for n in missing)
            + " (e.g. --project=P --region=europe-west4 --temp_location=gs://B/tmp); see "
            "README 'Running on Dataflow'")
    dataflow_args(project=_value(args, "project"), region=_value(args, "region"),
                  temp_location=_value(args, "temp_location"),
                  staging_location=_value(args, "staging_location"),
                  encoder_accelerator=_value(args, "encoder_accelerator"))


def _package_dir() -> Path:
    return Path(importlib.import_module(PACKAGE).__file__).resolve().parent


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def repack_installed(dist: importlib.metadata.Distribution, out_dir: Path) -> Path:
    """The wheel an installed distribution came from, rebuilt from its installed files (its
    RECORD): the package and its .dist-info, without byte code, scripts or install-time
    files; entries sorted with fixed times, so the same installation gives the same bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for f in dist.files or []:
        parts = f.parts
        if (parts[0] in ("..", "bin", "Scripts")                  # console scripts
                or "__pycache__" in parts or f.suffix == ".pyc"
                or (parts[0].endswith(".dist-info")
                    and parts[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"))):
            continue
        files["/".join(parts)] = Path(dist.locate_file(f))
    info = next((n.split("/")[0] for n in files if n.split("/")[0].endswith(".dist-info")), None)
    if info is None or all(n.startswith(info) for n in files):
        raise RunnerConfigError(f"the installed {dist.metadata['Name']} lists no package files "
                                f"in its RECORD; give --sdk_container_image or "
                                f"--extra_package=<its wheel>")
    wheel_meta = (Path(dist.locate_file(f"{info}/WHEEL"))).read_text()
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]
    name = dist.metadata["Name"].replace("-", "_")
    wheel = out_dir / f"{name}-{dist.version}-{tags[0] if tags else 'py3-none-any'}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for arc in sorted(files):
            data = files[arc].read_bytes()
            entry = zipfile.ZipInfo(arc, WHEEL_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
            record.append(f"{arc},{_record_hash(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        entry = zipfile.ZipInfo(f"{info}/RECORD", WHEEL_DATE)
        entry.external_attr = 0o644 << 16
        entry.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(entry, "\n".join(record) + "\n")
    return wheel


def installed_distribution(package_dir: Path) -> importlib.metadata.Distribution | None:
    """The distribution installed next to ``package_dir`` (its .dist-info), if any."""
    for dist in importlib.metadata.distributions(path=[str(package_dir.parent)]):
        if (dist.metadata["Name"] or "").lower() == PACKAGE:
            return dist
    return None


def project_wheel(out_dir: Path) -> Path:
    """A wheel of the mmalign that is running, for Dataflow's workers (``--extra_package``):
    from a source checkout (pyproject.toml next to the package: an editable install or the
    repo on the path) built with pip; from an installed package, rebuilt from its files."""
    pkg = _package_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    if (pkg / "pyproject.toml").is_file():
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
               "-w", str(out_dir), str(pkg)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = sorted(out_dir.glob(f"{PACKAGE}-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise RunnerConfigError(f"building {PACKAGE}'s wheel for the Dataflow workers "
                                    f"failed ({tail[0]}); give --sdk_container_image or "
                                    f"--extra_package=<wheel>")
        return wheels[-1]
    dist = installed_distribution(pkg)
    if dist is None:
        raise RunnerConfigError(f"{pkg} is neither a source checkout nor an installed "
                                f"{PACKAGE}; give --sdk_container_image or "
                                f"--extra_package=<wheel>")
    return repack_installed(dist, out_dir)


def _has_image(args: Sequence[str]) -> bool:
    return any(_has(args, n) for n in ("sdk_container_image", "worker_harness_container_image"))


def _ships(args: Sequence[str], wheel_prefix: str) -> bool:
    """Do the args already give workers this package (an image, a wheel of it, for mmalign a
    setup file)?"""
    if _has_image(args) or (wheel_prefix == PACKAGE and _has(args, "setup_file")):
        return True
    return any(Path(p).name.lower().startswith(f"{wheel_prefix}-")
               for p in _values(args, "extra_package", "extra_packages"))


def installed_wheel(name: str, out_dir: Path) -> Path:
    """The wheel of an installed distribution other than mmalign (``repack_installed``)."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise RunnerConfigError(f"the streaming job's workers need {name}, which is not "
                                f"installed here (pip install 'mmalign[kafka]')") from None
    return repack_installed(dist, out_dir)


@contextmanager
def _dataflow(args: list[str], streaming: bool) -> Iterator[list[str]]:
    """Dataflow's args; without an image the workers get wheels: mmalign's, and for the
    streaming job kafka-python's (an extra of mmalign's, so not among the wheel's own
    requirements), both as installed here."""
    _check_dataflow(args)
    stream = ["--streaming"] if streaming and not _has(args, "streaming") else []
    with tempfile.TemporaryDirectory(prefix="mmalign-wheel-") as tmp:
        wheels = [] if _ships(args, PACKAGE) else [project_wheel(Path(tmp) / PACKAGE)]
        if streaming and not _ships(args, "kafka_python"):
            wheels.append(installed_wheel("kafka-python", Path(tmp) / "kafka"))
        yield [*args, *(f"--extra_package={w}" for w in wheels), *stream]


def describe_dry_run(pipeline: beam.Pipeline, result) -> dict:
    """What a DataflowRunner ``--dry_run`` would have submitted: the job's name, project,
    region, locations, worker image(s) and the artifacts staged for the workers (name, size,
    sha256 of the local file)."""
    proto = pipeline.runner.proto_pipeline
    staged, images = {}, set()
    for env in proto.components.environments.values():
        if env.urn == common_urns.environments.DOCKER.urn:
            images.add(pb.DockerPayload.FromString(env.payload).container_image)
        for dep in env.dependencies:
            if dep.type_urn != common_urns.artifact_types.FILE.urn:
                continue
            path = Path(pb.ArtifactFilePayload.FromString(dep.type_payload).path)
            name = pb.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            data = path.read_bytes()
            staged[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    opts = pipeline.options.get_all_options(drop_default=True)
    return {"runner": "DataflowRunner", "dry_run": True,
            "job_name": result.job.proto.name,
            **{k: opts.get(k) for k in ("project", "region", "temp_location",
                                        "staging_location", "sdk_container_image")},
            "worker_images": sorted(images), "staged": dict(sorted(staged.items())),
            "transforms": len(proto.components.transforms)}


# -- Flink and Prism ---------------------------------------------------------------------------

@contextmanager
def _flink(args: list[str], streaming: bool) -> Iterator[tuple[str, list[str]]]:
    """Beam's FlinkRunner semantics on a job server of ours (Beam's Python FlinkRunner would
    download a job server jar): the pipeline's ``--flink_master`` reaches the job server, which
    runs an embedded mini-cluster for ``[local]``/``[auto]`` and submits to HOST:PORT."""
    stream = ["--streaming"] if streaming and not _has(args, "streaming") else []
    if _has(args, "flink_job_server_jar") or _has(args, "flink_submit_uber_jar"):
        yield "FlinkRunner", [*args, *stream]             # Beam's own jar handling
        return
    master = _value(args, "flink_master")
    local = master is None or master.strip() in LOCAL_FLINK
    # LOOPBACK (the SDK harness in this process) as Beam's FlinkRunner does for a local master
    env = [] if _has(args, "environment_type") or not local else ["--environment_type=LOOPBACK"]
    if _has(args, "job_endpoint"):
        yield "PortableRunner", [*args, *env, *stream]
        return
    version = _value(args, "flink_version")
    if version and version != FLINK_MINOR:
        raise RunnerConfigError(f"--flink_version={version}: mmalign's Flink job server runs "
                                f"Flink {FLINK_MINOR} (MMALIGN_FLINK_MINOR); give "
                                f"--flink_version={FLINK_MINOR}, or --job_endpoint of a job "
                                f"server for {version}")
    with tempfile.TemporaryDirectory(prefix="mmalign-flink-") as home:
        server = FlinkJobServer(Path(home)).start()
        try:
            given = {"--parallelism": _has(args, "parallelism"),
                     "--environment_type": True, "--runner": True, "--streaming": True}
            base = [a for a in server.pipeline_args() if not given.get(a.split("=")[0])]
            yield "PortableRunner", [*base, *env, *args, *stream]
        finally:
            server.stop()


@contextmanager
def _prism(args: list[str], streaming: bool) -> Iterator[list[str]]:
    """Prism's options before ``args``: a prism server for the run (infra/prism.py: built
    locally, no prebuilt download), unless the args name one (``--job_endpoint``) or a
    binary for Beam to start (``--prism_location``)."""
    if _has(args, "prism_location") or _has(args, "job_endpoint"):
        base = ["--environment_type=LOOPBACK"]
        if _has(args, "prism_location"):
            base.append("--experiments=disable_prism_server_singleton")
        if streaming:
            base += ["--streaming", "--experiments=prism_disable_sdf_split"]
        yield _after(base, args, streaming)
        return
    with prism_session(streaming=streaming) as session_args:  # builds prism once (Go)
        yield _after([a for a in session_args if not a.startswith("--runner")], args, streaming)


def _after(base: list[str], args: list[str], streaming: bool) -> list[str]:
    if _has(args, "environment_type"):
        base = [a for a in base if not a.startswith("--environment_type")]
    return [*base, *(a for a in args if not (streaming and a == "--streaming"))]


@contextmanager
def runner_session(runner: str | None, pipeline_args: Sequence[str] | None = None, *,
                   streaming: bool = False) -> Iterator[tuple[str, list[str]]]:
    """``(Beam runner, pipeline args)`` for a run: servers the runner needs (an embedded Flink
    job server) run for the duration of the block; Dataflow gets mmalign's wheel staged unless
    the args ship the project; ``streaming`` adds ``--streaming`` (the ``stream`` command)."""
    args = list(pipeline_args or [])
    name = resolve_runner(runner, streaming)
    if name == "DataflowRunner":
        with _dataflow(args, streaming) as resolved:
            yield name, resolved
    elif name == "FlinkRunner":
        with _flink(args, streaming) as resolved:
            yield resolved
    elif name == "PrismRunner":
        with _prism(args, streaming) as resolved:
            yield name, resolved
    elif name == "PortableRunner" and not _has(args, "job_endpoint"):
        raise RunnerConfigError(
            "--runner PortableRunner needs --job_endpoint=HOST:PORT of a running Beam job "
            "server (e.g. python -m mmalign.infra.flink_jobserver start); --runner FlinkRunner "
            "or PrismRunner start one for the run")
    else:
        stream = ["--streaming"] if streaming and not _has(args, "streaming") else []
        yield name, [*args, *stream]
