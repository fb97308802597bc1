"""A single-node Apache Kafka (KRaft, broker+controller) from Maven Central, run as a local process.

Jars: ``org.apache.kafka:kafka_2.13`` and its runtime closure plus a log4j2 binding, resolved by
Maven into ``<cache>/kafka-<version>/lib``. Each broker lives in a state dir (config, KRaft log
dir, server log, pid). ``python -m mmalign.infra.kafka_broker fetch|start|stop|status``
drives one in ``<cache>/run/kafka``.

``KafkaBroker(home, sasl_users={"alice": "pw"})`` starts the client listener as SASL_PLAINTEXT with
the PLAIN mechanism instead (the KRaft controller listener stays PLAINTEXT); the broker's own
clients (readiness, ``create_topic``) authenticate as an extra internal user, ``client_config()``.
``sasl_mechanism="SCRAM-SHA-512"`` (or -256) stores salted credentials in the KRaft metadata at
format time instead of a user list; ``tls=True`` makes the listener SASL_SSL (or SSL without
users) with a certificate for 127.0.0.1 from a CA made for this broker (``ca_file``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

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

KAFKA_VERSION = os.environ.get("MMALIGN_KAFKA_VERSION", "4.4.0")
LOG4J_VERSION = "2.24.3"
HOST = "127.0.0.1"
MAIN_CLASS = "kafka.Kafka"
JVM_OPTS = ["-Xmx512m", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true"]  # fmt: skip
READY_TOPIC = "__mmalign_ready"


def fetch() -> Path:
    """Resolve Kafka's jars (cached); return the lib dir."""
    return maven_fetch(
        f"kafka-{KAFKA_VERSION}",
        [
            f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
            f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
            f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
        ],
    )


_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
"""


SASL_LISTENER = "SASL_PLAINTEXT"
INFRA_USER = "mmalign-infra"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _jaas_quote(value: str) -> str:
    if '"' in value or "\\" in value or ";" in value:
        raise InfraError("SASL user names and passwords may not contain quotes, backslashes "
                         "or semicolons (they go into a JAAS line)")
    return f'"{value}"'


def _sasl_properties(listener: str, mechanism: str, users: dict[str, str],
                     infra_password: str) -> dict[str, str]:
    """SASL on the client listener. PLAIN: the JAAS line lists every user (``user_<name>``);
    SCRAM: the users are in the metadata log (``_scram_arguments``), the JAAS line only holds
    the broker's own login."""
    own = f"username={_jaas_quote(INFRA_USER)} password={_jaas_quote(infra_password)}"
    if mechanism == "PLAIN":
        entries = {INFRA_USER: infra_password, **users}
        jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required " + own + " "
                + " ".join(f"user_{n}={_jaas_quote(pw)}" for n, pw in entries.items()) + ";")
    else:
        jaas = f"org.apache.kafka.common.security.scram.ScramLoginModule required {own};"
    return {
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config": jaas,
    }


def _scram_arguments(mechanism: str, users: dict[str, str]) -> list[str]:
    """``kafka-storage format --add-scram`` arguments: SCRAM credentials live in KRaft's
    metadata, written when the log dir is formatted."""
    for name, pw in users.items():
        if any(c in name + pw for c in ",[]=\"'"):
            raise InfraError("SCRAM user names and passwords may not contain , [ ] = or "
                             "quotes (they go into a --add-scram argument)")
    return [a for name, pw in users.items()
            for a in ("--add-scram", f"{mechanism}=[name={name},password={pw}]")]


def _tls_files(home: Path) -> tuple[Path, Path]:
    """(CA certificate, server key + certificate chain) as PEM under ``home/tls``, made once:
    a CA for this broker and a server certificate for 127.0.0.1 / localhost signed by it."""
    # lazy: cryptography is a test extra, needed only for a TLS broker
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = home / "tls"
    ca_file, server_file = d / "ca.pem", d / "server.pem"
    if ca_file.exists() and server_file.exists():
        return ca_file, server_file
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mmalign test CA"))
          .issuer_name(name("mmalign test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(HOST)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    server_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        + cert.public_bytes(pem) + ca.public_bytes(pem))
    server_file.chmod(0o600)
    ca_file.write_bytes(ca.public_bytes(pem))
    return ca_file, server_file


def _tls_properties(ca_file: Path, server_file: Path) -> dict[str, str]:
    """PEM key store (key + chain) and trust store (the CA: the broker's own inter-broker
    connections go through the same listener)."""
    return {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(server_file),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca_file)}


def _server_properties(data: Path, broker_port: int, controller_port: int,
                       auto_create: bool, security: dict[str, str] | None = None,
                       client: str = "PLAINTEXT") -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"{client}://{HOST}:{broker_port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"{client}://{HOST}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": str(auto_create).lower(),
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        **(security or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


@dataclass
class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1 with its state in ``home``.

    Ports are chosen once (free ones unless given) and kept in ``home/state.json``, so a stopped
    broker restarts on the same ports and the same log dir. ``sasl_users`` (name -> password)
    makes the client listener SASL_PLAINTEXT/PLAIN; clients then need ``client_config()``'s
    security settings with one of those users.
    """

    home: Path
    broker_port: int = 0
    controller_port: int = 0
    auto_create_topics: bool = True
    sasl_users: dict[str, str] | None = None
    sasl_mechanism: str = "PLAIN"
    tls: bool = False

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        state = self.home / "state.json"
        if state.exists():
            saved = json.loads(state.read_text())
            self.broker_port = self.broker_port or saved["broker_port"]
            self.controller_port = self.controller_port or saved["controller_port"]
            cluster_id = saved["cluster_id"]
            infra_password = saved.get("infra_password")
        else:
            cluster_id = "-"
            while cluster_id.startswith("-"):   # a leading "-" reads as an option to the tool
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            infra_password = None
        if self.sasl_users is not None and not self.sasl_users:
            raise InfraError("sasl_users is empty; give at least one user: password")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise InfraError(f"sasl_mechanism {self.sasl_mechanism!r} is not one of "
                             f"{list(SASL_MECHANISMS)}")
        self._infra_password = infra_password or secrets.token_urlsafe(16)
        self.broker_port = self.broker_port or free_port(HOST)
        self.controller_port = self.controller_port or free_port(HOST)
        if self.controller_port == self.broker_port:
            raise InfraError(f"broker and controller port are both {self.broker_port}")
        self.cluster_id = cluster_id
        state.write_text(
            json.dumps(
                {"broker_port": self.broker_port, "controller_port": self.controller_port,
                 "cluster_id": cluster_id, "infra_password": self._infra_password}  # fmt: skip
            )
        )
        self._pidfile = PidFile(self.home / "kafka.pid", MAIN_CLASS)

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients."""
        return f"{HOST}:{self.broker_port}"

    @property
    def security_protocol(self) -> str:
        """The client listener's protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
        if self.sasl_users:
            return "SASL_SSL" if self.tls else SASL_LISTENER
        return "SSL" if self.tls else "PLAINTEXT"

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate (PEM) clients verify a TLS broker with."""
        return self.home / "tls" / "ca.pem" if self.tls else None

    def client_config(self, user: str | None = None, password: str | None = None
                      ) -> dict[str, object]:
        """kafka-python kwargs to reach this broker: bootstrap, the CA file on a TLS broker,
        and on a SASL broker the credentials (``user``'s from ``sasl_users``, or ``password``
        given; default the internal infra user)."""
        conf: dict[str, object] = {"bootstrap_servers": self.bootstrap_servers}
        if self.tls:
            conf |= {"security_protocol": self.security_protocol,
                     "ssl_cafile": str(self.ca_file)}
        if not self.sasl_users:
            return conf
        if user is None:
            user, password = INFRA_USER, self._infra_password
        elif password is None:
            if user not in self.sasl_users:
                raise InfraError(f"no SASL user {user!r} on this broker; users: "
                                 f"{sorted(self.sasl_users)}")
            password = self.sasl_users[user]
        return {**conf, "security_protocol": self.security_protocol,
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": user, "sasl_plain_password": password}

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2)."""
        return self.home / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.home / "logs" / "stdout.log"

    @property
    def pid(self) -> int | None:
        """Pid of the running broker, or None."""
        return self._pidfile.pid()

    def _write_config(self) -> tuple[Path, Path]:
        (self.home / "logs").mkdir(exist_ok=True)
        props = self.home / "server.properties"
        listener = self.security_protocol
        security: dict[str, str] = {}
        if self.sasl_users:
            security |= _sasl_properties(listener, self.sasl_mechanism, self.sasl_users,
                                         self._infra_password)
        if self.tls:
            security |= _tls_properties(*_tls_files(self.home))
        props.write_text(
            _server_properties(self.data_dir, self.broker_port, self.controller_port,
                               self.auto_create_topics, security, listener)
        )
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.log_file))
        return props, log4j

    def _java(self, lib: Path, log4j: Path) -> list[str]:
        java = require_tool("java", "install Java 17 (apt-get install openjdk-17-jre-headless).")
        return [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={self.log_file.parent}", "-cp", classpath(lib)]  # fmt: skip

    def _format_storage(self, lib: Path, props: Path, log4j: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cmd = [*self._java(lib, log4j), "kafka.tools.StorageTool", "format",
               "-t", self.cluster_id, "-c", str(props)]  # fmt: skip
        if self.sasl_users and self.sasl_mechanism.startswith("SCRAM"):
            cmd += _scram_arguments(self.sasl_mechanism,
                                    {INFRA_USER: self._infra_password, **self.sasl_users})
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise InfraError(
                f"kafka-storage format of {self.data_dir} failed:\n{proc.stdout}{proc.stderr}"
            )

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        """Format storage if new, start the broker, return once a topic can be created."""
        if self.pid is not None:
            self.wait_ready(timeout_s)
            return self
        for port in (self.broker_port, self.controller_port):
            if port_open(HOST, port):
                raise InfraError(
                    f"port {HOST}:{port} is already in use; stop whatever listens there or give "
                    f"other ports (state in {self.home / 'state.json'})"
                )
        lib = fetch()
        props, log4j = self._write_config()
        self._format_storage(lib, props, log4j)
        cmd = [*self._java(lib, log4j), MAIN_CLASS, str(props)]
        self._pidfile.write(spawn(cmd, self.stdout_file, cwd=self.home))
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until an admin client can create (or finds) the readiness topic."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.pid is None:
                raise InfraError(
                    f"Kafka broker exited during start; log {self.log_file}:\n"
                    f"{log_tail(self.stdout_file)}\n{log_tail(self.log_file)}"
                )
            if port_open(HOST, self.broker_port):
                try:
                    admin = KafkaAdminClient(
                        **self.client_config(), request_timeout_ms=5000,
                        client_id="mmalign-infra-ready",
                    )  # fmt: skip
                    try:
                        admin.create_topics([NewTopic(READY_TOPIC, 1, 1)])
                    except TopicAlreadyExistsError:
                        pass
                    finally:
                        admin.close()
                    return
                except KafkaError as exc:
                    last = exc
            time.sleep(0.25)
        raise InfraError(
            f"Kafka broker on {self.bootstrap_servers} not ready after {timeout_s:.0f}s "
            f"(last error: {last!r}); log {self.log_file}:\n{log_tail(self.log_file)}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Controlled shutdown (SIGTERM; SIGKILL after ``timeout_s``). True if it was running."""
        return self._pidfile.stop(timeout_s)

    def kill(self) -> bool:
        """Hard crash (SIGKILL at once), for fault tests."""
        return self._pidfile.stop(timeout_s=0.0)

    def restart(self, timeout_s: float = 90.0) -> KafkaBroker:
        """Stop, then start on the same ports and log dir."""
        self.stop()
        return self.start(timeout_s)

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None):
        """Create ``name`` (replication 1) and wait until its partitions have leaders."""
        if partitions < 1:
            raise InfraError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        admin = KafkaAdminClient(**self.client_config(),
                                 client_id="mmalign-infra-admin")  # fmt: skip
        try:
            try:
                admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
            except TopicAlreadyExistsError as exc:
                raise InfraError(
                    f"topic {name!r} already exists on {self.bootstrap_servers}") from exc
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    parts = admin.describe_topics([name])[0].get("partitions") or []
                except KafkaError:  # metadata not propagated yet
                    parts = []
                if len(parts) == partitions and all(p["leader_id"] >= 0 for p in parts):
                    return
                time.sleep(0.1)
            raise InfraError(f"topic {name!r} has no leaders after 30s on {self.bootstrap_servers}")
        finally:
            admin.close()

    def status(self) -> dict[str, object]:
        """Machine-readable status."""
        pid = self.pid
        return {
            "running": pid is not None, "pid": pid, "bootstrap_servers": self.bootstrap_servers,
            "controller_port": self.controller_port, "home": str(self.home),
            "security_protocol": self.security_protocol,
            "log": str(self.log_file), "kafka_version": KAFKA_VERSION,
            "rss_mb": rss_mb(pid) if pid else None,
        }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmalign.infra.kafka_broker",
        description="Fetch / start / stop a local single-node KRaft Kafka broker.",
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=None,
                        help="state dir (default <cache>/run/kafka)")  # fmt: skip
    parser.add_argument("--port", type=int, default=int(os.environ.get("MMALIGN_KAFKA_PORT", 9092)),
                        help="broker port for a new state dir (default 9092)")  # fmt: skip
    parser.add_argument("--controller-port", type=int, default=0,
                        help="controller port for a new state dir (default port+1)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print status as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch())
            return 0
        home = args.home or run_dir("kafka")
        fresh = not (Path(home) / "state.json").exists()
        broker = KafkaBroker(
            home,
            broker_port=args.port if fresh else 0,
            controller_port=(args.controller_port or args.port + 1) if fresh else 0,
        )
        return server_command(args.command, broker, lambda secs: (
            f"kafka {KAFKA_VERSION} up on {broker.bootstrap_servers} "
            f"(pid {broker.pid}, {secs:.1f}s, log {broker.log_file})"), args.json)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
