"""Beam Prism (the Go portable runner) built from source with the Go toolchain via the module proxy.

Beam Python normally downloads a prebuilt prism binary from GitHub, which is not reachable here;
``go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam>`` builds the same binary into
``<cache>/prism-<beam>/bin/prism`` (Go's own module and build caches stay where Go keeps them).
Run pipelines inside :func:`session` (a prism server for the run), or start a standalone prism
job server: ``python -m mmalign.infra.prism fetch|start|stop|status`` (state in
``<cache>/run/prism``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import apache_beam

from mmalign.infra import (
    InfraError,
    PidFile,
    cache_dir,
    file_lock,
    free_port,
    log_tail,
    port_open,
    require_tool,
    rss_mb,
    run_dir,
    server_command,
    spawn,
)

BEAM_VERSION = os.environ.get("MMALIGN_PRISM_VERSION", apache_beam.__version__.split(".dev")[0])
PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
HOST = "127.0.0.1"


def fetch(timeout_s: float = 3600) -> Path:
    """Build (once) and return the prism binary for :data:`BEAM_VERSION`."""
    bindir = cache_dir() / f"prism-{BEAM_VERSION}" / "bin"
    binary = bindir / "prism"
    with file_lock(cache_dir() / ".prism.lock"):
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
        go = require_tool("go", "install Go 1.23+ (https://go.dev/doc/install or "
                                "apt-get install golang).")
        bindir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOBIN": str(bindir), "GOFLAGS": "-modcacherw"}
        cmd = [go, "install", f"{PACKAGE}@v{BEAM_VERSION}"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"building prism took over {timeout_s:.0f}s") from exc
        if proc.returncode != 0 or not binary.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise InfraError(f"`{' '.join(cmd)}` failed:\n{tail}")
        return binary


@contextmanager
def session(streaming: bool = False) -> Iterator[list[str]]:
    """Beam Python options for one run on a prism job server started for it (stopped after).

    :func:`pipeline_args` lets Beam start prism, which costs about a second per run: Beam's
    first gRPC connect comes before prism listens (prism listens after ~25 ms) and gRPC waits
    out its 1 s reconnect back-off before the next. Here the job port is polled every 10 ms
    and the run connects to a server that already listens. The SDK runs in this process
    (LOOPBACK). Streaming disables prism's splits of slow SDF bundles: Beam Python 2.77 can
    report NaN progress for them (an output counted before its size is sampled) and the split
    then fails the bundle; our Kafka reader checkpoints itself instead (transforms/io/kafka.py)."""
    home = Path(tempfile.mkdtemp(prefix="mmalign-prism-"))
    server = PrismServer(home, free_port(HOST), idle_shutdown_s=60)
    try:
        server.start()
        args = ["--runner=PrismRunner", f"--job_endpoint={server.endpoint}",
                "--environment_type=LOOPBACK"]
        yield [*args, "--streaming", "--experiments=prism_disable_sdf_split"] if streaming \
            else args
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class PrismServer:
    """A standalone prism job server (``--job_endpoint`` for PortableRunner), state in ``home``."""

    home: Path
    job_port: int = 0
    idle_shutdown_s: float | None = None   # exit after this long without a job (orphans)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        state = self.home / "state.json"
        saved = json.loads(state.read_text()) if state.exists() else {}
        self.job_port = self.job_port or saved.get("job_port") or free_port(HOST)
        state.write_text(json.dumps({"job_port": self.job_port}))
        self._pidfile = PidFile(self.home / "prism.pid", "prism")

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.job_port}"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "prism.log"

    @property
    def pid(self) -> int | None:
        return self._pidfile.pid()

    def start(self, timeout_s: float = 30.0) -> PrismServer:
        """Start prism; return once its job port accepts connections."""
        if self.pid is None:
            if port_open(HOST, self.job_port):
                raise InfraError(f"port {self.endpoint} is already in use")
            binary = fetch()
            cmd = [str(binary), "--job_port", str(self.job_port), "--serve_http=false",
                   "--log_level", "info"]  # fmt: skip
            if self.idle_shutdown_s is not None:
                cmd += ["--idle_shutdown_timeout", f"{self.idle_shutdown_s:g}s"]
            self._pidfile.write(spawn(cmd, self.log_file, cwd=self.home))
        deadline = time.monotonic() + timeout_s
        while not port_open(HOST, self.job_port):
            if self.pid is None:
                raise InfraError(f"prism exited during start:\n{log_tail(self.log_file)}")
            if time.monotonic() > deadline:
                raise InfraError(f"prism not listening on {self.endpoint} after {timeout_s:.0f}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> bool:
        return self._pidfile.stop(timeout_s)

    def status(self) -> dict[str, object]:
        pid = self.pid
        return {"running": pid is not None, "pid": pid, "job_endpoint": self.endpoint,
                "home": str(self.home), "log": str(self.log_file), "beam": BEAM_VERSION,
                "rss_mb": rss_mb(pid) if pid else None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmalign.infra.prism",
        description="Build / start / stop a local Beam Prism runner."
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=None, help="default <cache>/run/prism")
    parser.add_argument("--job-port", type=int, default=8073, help="for a new state dir")
    parser.add_argument("--json", action="store_true", help="print status as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            t0 = time.monotonic()
            print(f"{fetch()} ({time.monotonic() - t0:.0f}s)")
            return 0
        home = args.home or run_dir("prism")
        fresh = not (Path(home) / "state.json").exists()
        server = PrismServer(home, args.job_port if fresh else 0)
        return server_command(args.command, server, lambda secs: (
            f"prism {BEAM_VERSION} on {server.endpoint} (pid {server.pid}, {secs:.1f}s)"),
            args.json)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
