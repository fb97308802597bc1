"""Real servers for tests and dev: fetched from Maven Central, run as local background processes.

Shared pieces: the download cache (``.cache/`` at the repo root, or ``$MMALIGN_CACHE``), Maven
resolution of a dependency set into a directory of jars, free ports, and pid-file process control.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"


class InfraError(RuntimeError):
    """A server could not be fetched, started or stopped; the message says why and what to do."""


def cache_dir() -> Path:
    """Download cache: ``$MMALIGN_CACHE`` if set, else ``<repo>/.cache``."""
    env = os.environ.get("MMALIGN_CACHE")
    path = Path(env).expanduser().resolve() if env else REPO_ROOT / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(name: str) -> Path:
    """State of a CLI-started server (pid, logs, data): ``<cache>/run/<name>``."""
    path = cache_dir() / "run" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_tool(name: str, hint: str) -> str:
    """Absolute path of executable ``name``, or InfraError naming how to install it."""
    path = shutil.which(name)
    if path is None:
        raise InfraError(f"`{name}` is not on PATH; {hint}")
    return path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_SETTINGS = f"""<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">
  <mirrors>
    <mirror><id>central-only</id><mirrorOf>*</mirrorOf><url>{MAVEN_CENTRAL}</url></mirror>
  </mirrors>
</settings>
"""


def _pom(name: str, deps: Sequence[str], exclusions: Sequence[str]) -> str:
    excl = "".join(
        f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>"
        for g, a in (e.split(":") for e in exclusions)
    )
    rows = []
    for coord in deps:
        group, artifact, version = coord.split(":")
        rows.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version><exclusions>{excl}</exclusions></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>mmalign.infra</groupId><artifactId>{name}</artifactId><version>1</version>"
        "<packaging>pom</packaging><dependencies>" + "".join(rows) + "</dependencies></project>\n"
    )


def maven_fetch(
    name: str, deps: Sequence[str], exclusions: Sequence[str] = (), timeout_s: float = 1800
) -> Path:
    """Resolve ``deps`` (``group:artifact:version``) with their runtime closure into a jar dir.

    Jars land in ``<cache>/<name>/lib``; Maven's own repository is ``<cache>/m2``. Only Maven
    Central is used (a generated settings.xml mirrors every repository a POM declares to it).
    Idempotent: a completed fetch is recorded and not repeated.
    """
    root = cache_dir() / name
    lib = root / "lib"
    done = root / "fetched.json"
    with file_lock(cache_dir() / f".{name}.lock"):
        same = done.exists() and json.loads(done.read_text()).get("deps") == list(deps)
        if same and lib.is_dir():
            return lib
        mvn = require_tool("mvn", "install Maven (Debian: apt-get install maven) and Java 17.")
        require_tool("java", "install Java 17 (Debian: apt-get install openjdk-17-jre-headless).")
        root.mkdir(parents=True, exist_ok=True)
        (root / "pom.xml").write_text(_pom(name, deps, exclusions))
        settings = cache_dir() / "maven-settings.xml"
        settings.write_text(_SETTINGS)
        if lib.exists():
            shutil.rmtree(lib)
        cmd = [
            mvn, "-B", "-q", "-s", str(settings), f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"Maven fetch of {name} took over {timeout_s:.0f}s") from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise InfraError(f"Maven could not fetch {name} ({', '.join(deps)}):\n{tail}")
        done.write_text(json.dumps({"deps": list(deps), "jars": sorted(os.listdir(lib))}))
        return lib


def classpath(lib: Path) -> str:
    """Java classpath of every jar in ``lib``."""
    return str(lib / "*")


@dataclass(frozen=True)
class PidFile:
    """A background process recorded by pid in ``path``; ``marker`` must be in its command line."""

    path: Path
    marker: str

    def pid(self) -> int | None:
        """The pid if the recorded process is alive and is ours, else None."""
        reap()
        try:
            pid = int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
            zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
            if zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return None  # dead, not yet reaped (a zombie leader with live threads is alive)
        except OSError:
            return None
        # An empty cmdline means the process is inside execve (the java launcher may re-exec).
        return pid if (self.marker in cmdline or not cmdline) else None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.path.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid() is not None:
            _signal_group(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.path.unlink(missing_ok=True)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: pid is the group leader
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def spawn(cmd: Sequence[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` detached (own session), stdout+stderr appended to ``log``; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
    _reapers.append(proc)
    return proc.pid


# Popen objects of children we started: kept so they can be reaped (no zombies in this process).
_reapers: list[subprocess.Popen[bytes]] = []


def reap() -> None:
    """Collect exit statuses of finished children started by :func:`spawn`."""
    for proc in list(_reapers):
        if proc.poll() is not None:
            _reapers.remove(proc)


def log_tail(log: Path, lines: int = 25) -> str:
    """Last ``lines`` lines of a log file (empty if missing)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (None if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def server_command(command: str, server, started: Callable[[float], str],
                   as_json: bool = False) -> int:
    """``start`` | ``stop`` | ``status`` of a managed server (``start()``, ``stop() -> bool``,
    ``status() -> dict`` with ``running``) for the modules' CLIs; ``started(seconds)`` is the
    line printed after a start. Exit code: 0, or 3 for ``status`` of a server not running."""
    if command == "start":
        t0 = time.monotonic()
        server.start()
        print(started(time.monotonic() - t0))
    elif command == "stop":
        print("stopped" if server.stop() else "not running")
    else:
        status = server.status()
        print(json.dumps(status) if as_json else
              "\n".join(f"{k}: {v}" for k, v in status.items()))  # fmt: skip
        return 0 if status["running"] else 3
    return 0
