"""Runner flags as Beam users type them (pipelines/runners.py, the CLI in-process).

`--runner DirectRunner|FlinkRunner|DataflowRunner|PortableRunner|PrismRunner` (or a preset) on
`backfill`, `demo` and `stream`; Beam's own pipeline options after the command with or without
`--`; anything neither ours nor Beam's is exit 2 with one sentence. How each runner resolves
(an embedded Flink job server for `--flink_master=[local]`, Prism built locally, the wheel
Dataflow's workers get) is checked with the servers faked; the real runs are
tests/integration/test_flink_backfill.py (Flink), test_stream_e2e.py (Prism) and
test_dataflow_dry_run.py (Dataflow, offline).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from mmalign.pipelines import runners
from mmalign.pipelines.cli import build_parser, main
from mmalign.pipelines.runners import (
    RunnerConfigError,
    installed_distribution,
    project_wheel,
    repack_installed,
    resolve_runner,
    runner_session,
)

BACKFILL = ["backfill", "--manifest", "m.yaml", "--out", "out"]
STREAM = ["stream", "--manifest", "m.yaml", "--out", "out"]


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


# -- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("tail, runner, args", [
    # as Beam's docs write them: no `--`
    (["--runner", "FlinkRunner", "--flink_master=[local]", "--parallelism=2"],
     "FlinkRunner", ["--flink_master=[local]", "--parallelism=2"]),
    # values after a space, options before and after --runner
    (["--project", "P", "--runner=DataflowRunner", "--region", "europe-west4",
      "--temp_location=gs://b/tmp"],
     "DataflowRunner", ["--project", "P", "--region", "europe-west4",
                        "--temp_location=gs://b/tmp"]),
    # the `--` separator still works
    (["--runner", "flink", "--", "--job_endpoint=localhost:8099", "--parallelism=2"],
     "flink", ["--job_endpoint=localhost:8099", "--parallelism=2"]),
    # Beam's own --runner among Beam's options is ours
    (["--", "--runner=PortableRunner", "--job_endpoint=h:1"],
     "PortableRunner", ["--job_endpoint=h:1"]),
    (["--runner", "PrismRunner", "--prism_log_level", "warn"],
     "PrismRunner", ["--prism_log_level", "warn"]),
    ([], None, []),
])
def test_beam_options_follow_the_command_with_or_without_separator(tail, runner, args) -> None:
    for command in (BACKFILL, STREAM):
        ns = parse(*command, *tail)
        assert (ns.runner, ns.pipeline_args) == (runner, args), command


def test_stream_takes_runner_and_kafka_options_together() -> None:
    ns = parse(*STREAM, "-X", "security.protocol=SASL_SSL", "--runner", "FlinkRunner",
               "--flink_master", "[local]", "--bootstrap-servers", "b:9092", "--streaming")
    assert ns.runner == "FlinkRunner" and ns.bootstrap_servers == "b:9092"
    assert ns.kafka_property == ["security.protocol=SASL_SSL"]
    assert ns.pipeline_args == ["--flink_master", "[local]", "--streaming"]
    ns = parse("demo", "--runner", "local", "--direct_num_workers=2")
    assert (ns.runner, ns.pipeline_args) == ("local", ["--direct_num_workers=2"])


@pytest.mark.parametrize("tail, words", [
    (["--flink-master=x:1"], ["--flink-master", "neither an option of mmalign backfill nor a "
                              "Beam pipeline option", "did you mean --flink_master?"]),
    (["--", "--jobendpoint=h:1"], ["--jobendpoint", "did you mean --job_endpoint?"]),
    (["--parallelism=two"], ["--parallelism", "invalid int value: 'two'"]),
    (["--runner", "FlinkRunner", "--flink_version=0.9"], ["--flink_version", "invalid choice"]),
    (["stray"], ["'stray' is not an option"]),
    (["--runner", "SparklyRunner"], ["unknown runner 'SparklyRunner'", "FlinkRunner"]),
    (["--runner", "flink", "--", "--runner=DataflowRunner"], ["disagree"]),
    (["--manifestt", "x"], ["--manifestt", "did you mean --manifest?"]),   # no prefix matching
])
def test_unknown_or_bad_options_exit_2_with_one_sentence(tail, words, capsys) -> None:
    assert main([*BACKFILL, *tail]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mmalign backfill: "), err
    for w in words:
        assert w in err, err


def test_stream_refuses_beams_kafka_option_for_ours(capsys) -> None:
    """Beam's Kafka Streams runner has --bootstrap_servers; mmalign's is --bootstrap-servers."""
    assert main([*STREAM, "--bootstrap_servers=h:9092"]) == 2
    err = capsys.readouterr().err
    assert "mmalign stream: --bootstrap_servers" in err and "--bootstrap-servers" in err


def test_commands_without_a_pipeline_keep_argparse_errors(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["generate", "--out", "x", "--flink_master=[local]"])
    assert e.value.code == 2
    assert "unrecognized arguments: --flink_master=[local]" in capsys.readouterr().err


def test_help_names_the_runners_and_beam_options(capsys) -> None:
    for command in ("backfill", "stream", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "FlinkRunner" in text and "--flink_master=[local]" in text, command
        assert "without --" in text, command


# -- runner resolution ------------------------------------------------------------------------

def test_runner_names_presets_and_beam_class_paths() -> None:
    for given, beam_name in [("DirectRunner", "DirectRunner"), ("local", "DirectRunner"),
                             ("direct", "DirectRunner"), ("flinkrunner", "FlinkRunner"),
                             ("Flink", "FlinkRunner"), ("dataflow", "DataflowRunner"),
                             ("portable", "PortableRunner"), ("prism", "PrismRunner"),
                             ("SparkRunner", "SparkRunner"), (None, "DirectRunner"),
                             ("apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner",
                              "apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner")]:
        assert resolve_runner(given) == beam_name, given
    # streaming: Prism by default, and DirectRunner's way (it hands streaming to Prism)
    assert resolve_runner(None, streaming=True) == "PrismRunner"
    assert resolve_runner("DirectRunner", streaming=True) == "PrismRunner"
    with pytest.raises(RunnerConfigError, match="unknown runner"):
        resolve_runner("nope")


class FakeJobServer:
    """Stands in for infra's FlinkJobServer: records starts and stops."""
    made: list[FakeJobServer] = []

    def __init__(self, home: Path):
        self.home, self.endpoint, self.running = home, f"127.0.0.1:{9000 + len(self.made)}", False
        FakeJobServer.made.append(self)

    def start(self) -> FakeJobServer:
        self.running = True
        return self

    def stop(self) -> bool:
        self.running = False
        return True

    def pipeline_args(self, streaming: bool = False, parallelism: int = 1) -> list[str]:
        return ["--runner=PortableRunner", f"--job_endpoint={self.endpoint}",
                "--environment_type=LOOPBACK", f"--parallelism={parallelism}"]


@pytest.fixture
def fake_flink(monkeypatch):
    FakeJobServer.made = []
    monkeypatch.setattr(runners, "FlinkJobServer", FakeJobServer)
    return FakeJobServer.made


@pytest.mark.parametrize("master", [None, "[local]", "[auto]"])
def test_flink_local_master_runs_an_embedded_job_server(fake_flink, master) -> None:
    given = ([f"--flink_master={master}"] if master else []) + ["--parallelism=2"]
    with runner_session("FlinkRunner", given) as (runner, args):
        (server,) = fake_flink
        assert server.running and runner == "PortableRunner"
        assert f"--job_endpoint={server.endpoint}" in args
        assert "--environment_type=LOOPBACK" in args
        assert [a for a in args if a.startswith("--parallelism")] == ["--parallelism=2"]
        assert args[-len(given):] == given        # the flink master reaches the job server
        assert "--streaming" not in args
    assert not server.running                    # stopped after the run


def test_flink_streaming_and_remote_master(fake_flink) -> None:
    with runner_session("flink", ["--flink_master=flink-jm:8081"], streaming=True
                        ) as (runner, args):
        assert runner == "PortableRunner" and fake_flink[0].running
        # a cluster elsewhere: Beam's FlinkRunner does not default to LOOPBACK there
        assert not any(a.startswith("--environment_type") for a in args)
        assert "--flink_master=flink-jm:8081" in args and args[-1] == "--streaming"
        assert "--parallelism=1" in args


def test_flink_with_a_running_job_server_starts_none(fake_flink) -> None:
    with runner_session("FlinkRunner", ["--job_endpoint=js:8099",
                                        "--environment_type=EXTERNAL",
                                        "--environment_config=localhost:50000"]
                        ) as (runner, args):
        assert runner == "PortableRunner" and fake_flink == []
        assert args == ["--job_endpoint=js:8099", "--environment_type=EXTERNAL",
                        "--environment_config=localhost:50000"]


def test_flink_job_server_jar_is_left_to_beam_and_versions_checked(fake_flink) -> None:
    with runner_session("FlinkRunner", ["--flink_job_server_jar=/x/js.jar"]) as (runner, args):
        assert (runner, args) == ("FlinkRunner", ["--flink_job_server_jar=/x/js.jar"])
    with pytest.raises(RunnerConfigError, match="Flink 1.19"):
        with runner_session("FlinkRunner", ["--flink_version=2.0"]):
            pass
    assert fake_flink == []


def test_prism_runs_on_a_server_started_for_the_run(monkeypatch) -> None:
    sessions = []

    @contextmanager
    def fake_session(streaming: bool = False):
        sessions.append(streaming)
        yield ["--runner=PrismRunner", "--job_endpoint=127.0.0.1:1234",
               "--environment_type=LOOPBACK", *(["--streaming"] if streaming else [])]
        sessions.append("stopped")

    monkeypatch.setattr(runners, "prism_session", fake_session)
    with runner_session("prism", ["--prism_log_level=warn"]) as (runner, args):
        assert runner == "PrismRunner"
        assert args == ["--job_endpoint=127.0.0.1:1234", "--environment_type=LOOPBACK",
                        "--prism_log_level=warn"]
        assert sessions == [False]
    assert sessions == [False, "stopped"]
    with runner_session(None, ["--streaming"], streaming=True) as (runner, args):  # stream
        assert runner == "PrismRunner" and args.count("--streaming") == 1
    with runner_session("PrismRunner", ["--prism_location=/opt/prism"], streaming=True
                        ) as (runner, args):
        assert not any(a.startswith("--job_endpoint") for a in args)
        assert args[-1] == "--prism_location=/opt/prism"
        assert "--experiments=prism_disable_sdf_split" in args
    with runner_session("PrismRunner", ["--job_endpoint=h:9"]) as (runner, args):
        assert args == ["--environment_type=LOOPBACK", "--job_endpoint=h:9"]
    assert sessions == [False, "stopped", True, "stopped"]   # none when one is named


def test_prism_session_serves_a_job_and_stops(tmp_path) -> None:
    """A real prism server for one small run: the run goes through it, then it is gone."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from mmalign.infra import port_open
    from mmalign.infra.prism import session

    with session() as args:
        endpoint = next(a.split("=", 1)[1] for a in args if a.startswith("--job_endpoint="))
        host, port = endpoint.rsplit(":", 1)
        assert port_open(host, int(port))
        with beam.Pipeline(options=PipelineOptions(args)) as p:
            (p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
             | beam.Map(lambda x, d=str(tmp_path): (open(f"{d}/{x}", "w").close(), x)))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["2", "4", "6"]
    assert not port_open(host, int(port))


def test_portable_needs_a_job_endpoint_and_others_pass_through() -> None:
    with pytest.raises(RunnerConfigError, match="--job_endpoint"):
        with runner_session("PortableRunner", []):
            pass
    with runner_session("PortableRunner", ["--job_endpoint=h:1"], streaming=True
                        ) as (runner, args):
        assert (runner, args) == ("PortableRunner", ["--job_endpoint=h:1", "--streaming"])
    with runner_session("DirectRunner", ["--direct_num_workers=2"]) as (runner, args):
        assert (runner, args) == ("DirectRunner", ["--direct_num_workers=2"])


def test_backfill_runs_with_beam_options_without_separator(tmp_path, capsys) -> None:
    """A real (small) run: Beam's DirectRunner options after the command reach Beam."""
    from mmalign.pipelines.sample_recording import generate_recording

    manifest = generate_recording(tmp_path / "rec", seed=2, duration_s=4.0, bad_records=False)
    code = main(["backfill", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                 "--json", "--runner", "DirectRunner", "--direct_running_mode", "in_memory",
                 "--direct_num_workers=1"])
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    summary = json.loads(out[out.index("{"):])
    assert summary["aligned_rows"] > 0


# -- the wheel Dataflow's workers get ---------------------------------------------------------

def _fake_installation(site: Path) -> None:
    """An installed mmalign as pip leaves it: package, .dist-info with RECORD, byte code, a
    console script outside site-packages."""
    files = {
        "mmalign/__init__.py": b"",
        "mmalign/pipelines/__init__.py": b"",
        "mmalign/pipelines/cli.py": b"print('cli')\n",
        "mmalign/schemas/report.schema.json": b"{}\n",
        "mmalign/__pycache__/__init__.cpython-311.pyc": b"\x00pyc",
        "mmalign-0.1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: mmalign\n"
                                             b"Version: 0.1.0\nRequires-Dist: numpy\n",
        "mmalign-0.1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                          b"Tag: py3-none-any\n",
        "mmalign-0.1.0.dist-info/entry_points.txt": b"[console_scripts]\n"
                                                     b"mmalign = mmalign.pipelines.cli:main\n",
        "mmalign-0.1.0.dist-info/top_level.txt": b"mmalign\n",
        "mmalign-0.1.0.dist-info/INSTALLER": b"pip\n",
        "mmalign-0.1.0.dist-info/REQUESTED": b"",
        "mmalign-0.1.0.dist-info/direct_url.json": b'{"url": "file:///x.whl"}',
    }
    for name, data in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(data)
    (site.parent / "bin").mkdir(exist_ok=True)
    (site.parent / "bin" / "mmalign").write_text("#!python\n")
    record = [f"{n},sha256=x,{len(d)}" for n, d in files.items()]
    record += ["../bin/mmalign,sha256=x,10", "mmalign-0.1.0.dist-info/RECORD,,"]
    (site / "mmalign-0.1.0.dist-info" / "RECORD").write_text("\n".join(record) + "\n")


def test_installed_package_is_rebuilt_into_the_same_wheel(tmp_path, monkeypatch) -> None:
    site = tmp_path / "lib" / "site"
    _fake_installation(site)
    dist = installed_distribution(site / "mmalign")
    assert dist is not None and dist.version == "0.1.0"
    (tmp_path / "a").mkdir()
    first = repack_installed(dist, tmp_path / "a")
    assert first.name == "mmalign-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(first) as z:
        names = z.namelist()
        record = z.read("mmalign-0.1.0.dist-info/RECORD").decode().splitlines()
        contents = {n: z.read(n) for n in names}
    assert names[:-1] == sorted(names[:-1]) and names[-1].endswith(".dist-info/RECORD")
    assert "mmalign/pipelines/cli.py" in names
    assert "mmalign/schemas/report.schema.json" in names
    for left_out in ("__pycache__", "INSTALLER", "REQUESTED", "direct_url.json", "bin/"):
        assert not any(left_out in n for n in names), left_out
    rows = {r.split(",")[0]: r.split(",")[1:] for r in record}
    assert set(rows) == set(names)
    for name, (digest, size) in rows.items():
        if name.endswith("RECORD"):
            continue
        data = contents[name]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        assert digest == "sha256=" + expected.decode() and int(size) == len(data), name
    # the same installation gives the same bytes (content-stable staging)
    (tmp_path / "b").mkdir()
    again = repack_installed(dist, tmp_path / "b")
    assert again.read_bytes() == first.read_bytes()
    # project_wheel takes this path when the running mmalign is an installed one
    monkeypatch.setattr(runners, "_package_dir", lambda: site / "mmalign")
    built = project_wheel(tmp_path / "c")
    assert built.read_bytes() == first.read_bytes()


def test_a_package_dir_without_metadata_is_a_clear_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "mmalign").mkdir()
    (tmp_path / "mmalign" / "__init__.py").write_text("")
    monkeypatch.setattr(runners, "_package_dir", lambda: tmp_path / "mmalign")
    with pytest.raises(RunnerConfigError, match="--sdk_container_image or --extra_package"):
        project_wheel(tmp_path / "out")


def _run_logged(p, caplog) -> list[str]:
    """Run a small pipeline; Beam's DirectRunner log lines during it."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    with caplog.at_level("INFO", logger="apache_beam.runners.direct.direct_runner"):
        with p:
            out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
            assert_that(out, equal_to([2, 4, 6]))
    return [r.getMessage() for r in caplog.records
            if r.name == "apache_beam.runners.direct.direct_runner"]


def test_local_runner_runs_in_process_without_trying_prism(caplog) -> None:
    """Beam's DirectRunner first tries Prism (a download from GitHub); the backfill's local
    runner goes straight to Beam's in-process runner, with the same results."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    plain = _run_logged(beam.Pipeline(runner="DirectRunner"), caplog)
    assert any("PrismRunner" in m for m in plain)        # what this runner avoids
    caplog.clear()
    ours = _run_logged(runners.pipeline("DirectRunner", PipelineOptions([])), caplog)
    assert not any("Prism" in m for m in ours), ours
    p = runners.pipeline("DirectRunner", PipelineOptions(["--direct_num_workers=2",
                                                          "--direct_running_mode=multi_threading"]))
    assert isinstance(p.runner, runners.LocalRunner)
    _run_logged(p, caplog)
    other = runners.pipeline("PrismRunner", PipelineOptions(["--runner=PrismRunner"])).runner
    assert type(other).__name__ == "PrismRunner"
