"""A real S3 API server for the tests: moto's server mode (``python -m moto.server``, an HTTP
server process on 127.0.0.1), started once per test session and stopped at its end.

tests/conftest.py registers this module (``pytest_plugins``). Clients reach it as a user
reaches any S3-compatible store: through the environment (``S3Server.env``:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), which mmalign (pyarrow), boto3 and s3fs all read. ``s3_env`` puts it
into the test process too; ``s3_bucket`` is a new empty bucket per test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mmalign.infra import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "mmalign-test", "AWS_SECRET_ACCESS_KEY": "mmalign-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}
_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
             "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@dataclass
class S3Server:
    """A running moto server: ``endpoint`` (http://127.0.0.1:PORT), ``env`` (the variables
    a user sets), ``storage_options`` (for pandas / fsspec), ``create_bucket``, ``upload``."""
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def process_env(self) -> dict[str, str]:
        """This process's environment with only this server's AWS settings (for a CLI)."""
        base = {k: v for k, v in os.environ.items()
                if k not in _AWS_VARS and not k.startswith("AWS_")}
        return {**base, **self.env}

    @property
    def storage_options(self) -> dict:
        return {"key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                "client_kwargs": {"endpoint_url": self.endpoint,
                                  "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]}}

    def client(self):
        import boto3  # lazy: test-only (moto brings it)

        return boto3.client("s3", endpoint_url=self.endpoint,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"])

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"mmalign-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def upload(self, folder: Path, bucket: str, prefix: str) -> list[str]:
        """Every file under ``folder`` to ``s3://bucket/prefix/<relative path>``; the keys."""
        c, keys = self.client(), []
        for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{f.relative_to(folder).as_posix()}"
            c.upload_file(str(f), bucket, key)
            keys.append(key)
        return keys

    def keys(self, bucket: str, prefix: str = "", markers: bool = False) -> list[str]:
        """Every object key under ``prefix`` (sorted); without the empty folder markers
        (``.../``) that pyarrow leaves where it deleted objects, unless ``markers``."""
        out, kw = [], {"Bucket": bucket, "Prefix": prefix}
        while True:
            r = self.client().list_objects_v2(**kw)
            out += [o["Key"] for o in r.get("Contents", [])
                    if markers or not o["Key"].endswith("/")]
            if not r.get("IsTruncated"):
                return sorted(out)
            kw["ContinuationToken"] = r["NextContinuationToken"]

    def start(self, timeout: float = 60.0) -> S3Server:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self.proc.returncode}); see "
                                   f"{self.log}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} in {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("moto", reason="the S3 tests need moto[server] (the test extra)")
    server = S3Server(free_port(), tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
           tmp_path: Path) -> Iterator[S3Server]:
    """The server's variables in this process's environment (and a fresh source cache), for
    in-process reads; mmalign's cached file systems are rebuilt from them."""
    from mmalign.schemas.fs import reset_filesystems

    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MMALIGN_SOURCE_CACHE", str(tmp_path / "source-cache"))
    reset_filesystems()
    yield s3_server
    reset_filesystems()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's server."""
    return s3_server.create_bucket()
