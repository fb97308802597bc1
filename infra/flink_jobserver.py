"""Beam's portable Flink runner job server with an embedded Flink mini-cluster, as a local process.

Jars: ``org.apache.beam:beam-runners-flink-<flink>`` (it contains ``FlinkJobServerDriver``) and its
runtime closure, resolved by Maven into ``<cache>/beam-flink-<flink>-<beam>/lib``. The prebuilt
``...-job-server`` shadow jars are not on the Maven Central reachable here, and Beam Java 2.62.0
is the newest release whose whole closure for Flink 1.19 is (see infra/README.md). Python
pipelines reach it with ``--runner=PortableRunner --job_endpoint=<endpoint>
--environment_type=LOOPBACK`` (no Docker). ``python -m mmalign.infra.flink_jobserver
fetch|start|stop|status`` drives one in ``<cache>/run/flink``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

from mmalign.infra import (
    InfraError,
    PidFile,
    classpath,
    free_port,
    log_tail,
    maven_fetch,
    port_open,
    require_tool,
    rss_mb,
    run_dir,
    server_command,
    spawn,
)

BEAM_JAVA_VERSION = os.environ.get("MMALIGN_BEAM_JAVA_VERSION", "2.62.0")
FLINK_MINOR = os.environ.get("MMALIGN_FLINK_MINOR", "1.19")
SLF4J_VERSION = "2.0.16"
HOST = "127.0.0.1"
DEFAULT_JOB_PORT = 8099   # Beam's usual job port; docker-compose publishes the same
MAIN_CLASS = "org.apache.beam.runners.flink.FlinkJobServerDriver"
# The module opens Flink's own launch scripts pass on Java 17, plus a modest heap.
JVM_OPTS = [
    "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS",
    "-Dorg.slf4j.simpleLogger.log.org.apache.flink=warn",
    "-Dorg.slf4j.simpleLogger.log.org.apache.pekko=warn",
    *(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
        "java.lang", "java.lang.reflect", "java.net", "java.io", "java.nio", "sun.nio.ch",
        "java.text", "java.time", "java.util", "java.util.concurrent",
        "java.util.concurrent.atomic", "java.util.concurrent.locks")),
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
]  # fmt: skip


def fetch() -> Path:
    """Resolve the Flink runner's jars (cached); return the lib dir."""
    return maven_fetch(
        f"beam-flink-{FLINK_MINOR}-{BEAM_JAVA_VERSION}",
        [
            f"org.apache.beam:beam-runners-flink-{FLINK_MINOR}:{BEAM_JAVA_VERSION}",
            f"org.slf4j:slf4j-api:{SLF4J_VERSION}",
            f"org.slf4j:slf4j-simple:{SLF4J_VERSION}",
        ],
    )


@dataclass
class FlinkJobServer:
    """A Beam Flink job server (embedded Flink, ``--flink-master=[local]``) with state in ``home``.

    Ports are chosen once (free ones unless given) and kept in ``home/state.json``.
    """

    home: Path
    job_port: int = 0
    artifact_port: int = 0
    expansion_port: int = 0

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        state = self.home / "state.json"
        saved = json.loads(state.read_text()) if state.exists() else {}
        self.job_port = self.job_port or saved.get("job_port") or free_port(HOST)
        self.artifact_port = self.artifact_port or saved.get("artifact_port") or free_port(HOST)
        self.expansion_port = self.expansion_port or saved.get("expansion_port") or free_port(HOST)
        ports = {self.job_port, self.artifact_port, self.expansion_port}
        if len(ports) != 3:
            raise InfraError(f"job/artifact/expansion ports must differ, got {sorted(ports)}")
        state.write_text(
            json.dumps(
                {"job_port": self.job_port, "artifact_port": self.artifact_port,
                 "expansion_port": self.expansion_port}  # fmt: skip
            )
        )
        self._pidfile = PidFile(self.home / "jobserver.pid", MAIN_CLASS)

    @property
    def endpoint(self) -> str:
        """``host:port`` of the Beam JobService (``--job_endpoint``)."""
        return f"{HOST}:{self.job_port}"

    @property
    def expansion_endpoint(self) -> str:
        """``host:port`` of the Java expansion service the job server also runs."""
        return f"{HOST}:{self.expansion_port}"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "jobserver.log"

    @property
    def pid(self) -> int | None:
        return self._pidfile.pid()

    def pipeline_args(self, streaming: bool = False, parallelism: int = 1) -> list[str]:
        """Beam Python options that run a pipeline on this server, SDK harness in-process."""
        args = [
            "--runner=PortableRunner", f"--job_endpoint={self.endpoint}",
            "--environment_type=LOOPBACK", f"--parallelism={parallelism}",
        ]  # fmt: skip
        return [*args, "--streaming"] if streaming else args

    def start(self, timeout_s: float = 120.0) -> FlinkJobServer:
        """Start the job server; return once its JobService answers GetJobs."""
        if self.pid is not None:
            self.wait_ready(timeout_s)
            return self
        for port in (self.job_port, self.artifact_port, self.expansion_port):
            if port_open(HOST, port):
                raise InfraError(
                    f"port {HOST}:{port} is already in use; stop whatever listens there or give "
                    f"other ports (state in {self.home / 'state.json'})"
                )
        lib = fetch()
        java = require_tool("java", "install Java 17 (apt-get install openjdk-17-jre-headless).")
        tmp = self.home / "tmp"
        tmp.mkdir(exist_ok=True)
        cmd = [
            java, *JVM_OPTS, f"-Djava.io.tmpdir={tmp}", "-cp", classpath(lib), MAIN_CLASS,
            "--flink-master=[local]", f"--job-host={HOST}", f"--job-port={self.job_port}",
            f"--artifact-port={self.artifact_port}", f"--expansion-port={self.expansion_port}",
            f"--artifacts-dir={self.home / 'artifacts'}",
        ]  # fmt: skip
        self._pidfile.write(spawn(cmd, self.log_file, cwd=self.home))
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the JobService answers a GetJobs call."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.pid is None:
                raise InfraError(
                    f"Flink job server exited during start; log {self.log_file}:\n"
                    f"{log_tail(self.log_file)}"
                )
            if port_open(HOST, self.job_port):
                with grpc.insecure_channel(self.endpoint) as channel:
                    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
                    try:
                        stub.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=5)
                        return
                    except grpc.RpcError as exc:
                        last = exc
            time.sleep(0.25)
        raise InfraError(
            f"Flink job server on {self.endpoint} not ready after {timeout_s:.0f}s "
            f"(last error: {last!r}); log {self.log_file}:\n{log_tail(self.log_file)}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM (SIGKILL after ``timeout_s``). True if it was running."""
        return self._pidfile.stop(timeout_s)

    def status(self) -> dict[str, object]:
        pid = self.pid
        return {
            "running": pid is not None, "pid": pid, "job_endpoint": self.endpoint,
            "artifact_port": self.artifact_port, "expansion_endpoint": self.expansion_endpoint,
            "home": str(self.home), "log": str(self.log_file), "flink": FLINK_MINOR,
            "beam_java": BEAM_JAVA_VERSION, "rss_mb": rss_mb(pid) if pid else None,
        }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmalign.infra.flink_jobserver",
        description="Fetch / start / stop a local Beam Flink job server (embedded Flink).",
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=None,
                        help="state dir (default <cache>/run/flink)")  # fmt: skip
    parser.add_argument("--job-port", type=int,
                        default=int(os.environ.get("MMALIGN_FLINK_JOB_PORT", DEFAULT_JOB_PORT)),
                        help="JobService port for a new state dir (default 8099; artifact and "
                             "expansion services take the next two)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print status as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch())
            return 0
        home = args.home or run_dir("flink")
        fresh = not (Path(home) / "state.json").exists()
        port = args.job_port if fresh else 0
        server = FlinkJobServer(home, port, port + 1 if fresh else 0, port + 2 if fresh else 0)
        return server_command(args.command, server, lambda secs: (
            f"beam {BEAM_JAVA_VERSION} flink {FLINK_MINOR} job server on {server.endpoint} "
            f"(pid {server.pid}, {secs:.1f}s, log {server.log_file})"), args.json)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
