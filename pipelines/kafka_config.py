"""Kafka client settings shared by every client we make: bootstrap, topics, SASL/SSL.

Settings come from (later wins) defaults, a JSON/YAML config file and ``MMALIGN_KAFKA_*``
environment variables, e.g. ``MMALIGN_KAFKA_BOOTSTRAP_SERVERS``,
``MMALIGN_KAFKA_SECURITY_PROTOCOL=SASL_SSL``, ``MMALIGN_KAFKA_SASL_MECHANISM=SCRAM-SHA-512``,
``MMALIGN_KAFKA_SASL_PLAIN_USERNAME``, ``MMALIGN_KAFKA_SASL_PLAIN_PASSWORD``,
``MMALIGN_KAFKA_SSL_CAFILE`` ... Any kafka-python client option is accepted by that naming.
``redacted()`` is the only form ever logged: secrets are masked.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "MMALIGN_KAFKA_"
SECRET_WORDS = ("password", "secret", "token", "key")   # ssl_keyfile is a path, masked anyway
MODALITY_TOPICS = {"video": "mmalign.video", "audio": "mmalign.audio",
                   "text": "mmalign.text", "sensor": "mmalign.sensor"}
DEADLETTER_TOPIC = "mmalign.deadletter"

# kafka-python options that pass straight through to every client (producer, consumer, admin)
CLIENT_OPTIONS = {
    "bootstrap_servers", "client_id", "security_protocol", "sasl_mechanism",
    "sasl_plain_username", "sasl_plain_password", "sasl_kerberos_service_name",
    "sasl_kerberos_domain_name", "sasl_oauth_token_provider", "ssl_cafile", "ssl_certfile",
    "ssl_keyfile", "ssl_password", "ssl_crlfile", "ssl_check_hostname", "ssl_ciphers",
    "request_timeout_ms", "retry_backoff_ms", "reconnect_backoff_ms",
    "reconnect_backoff_max_ms", "connections_max_idle_ms", "api_version",
    "bootstrap_timeout_ms",
}


class KafkaConfigError(ValueError):
    """A Kafka setting is unknown or malformed; the message names it and the fix."""


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: dict[str, str] = field(default_factory=lambda: dict(MODALITY_TOPICS))
    deadletter_topic: str = DEADLETTER_TOPIC
    client: dict = field(default_factory=dict)   # security + tuning, passed to every client

    def common(self) -> dict:
        """kwargs for any kafka-python client."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.client}

    def topic_for(self, modality: str) -> str:
        return self.topics[modality]

    def redacted(self) -> dict:
        """The settings with every secret value masked: the only form that may be logged."""
        client = {k: ("***" if any(w in k for w in SECRET_WORDS) and v is not None else v)
                  for k, v in self.client.items()}
        return {"bootstrap_servers": self.bootstrap_servers, "topics": self.topics,
                "deadletter_topic": self.deadletter_topic, "client": client}


def _coerce(name: str, value: str):
    if name.endswith("_ms") or name == "api_version":
        if name == "api_version":
            return tuple(int(x) for x in value.split("."))
        try:
            return int(value)
        except ValueError:
            raise KafkaConfigError(f"{ENV_PREFIX}{name.upper()}={value!r} is not an integer "
                                   f"number of milliseconds") from None
    if name == "ssl_check_hostname":
        return value.strip().lower() in ("1", "true", "yes")
    return value


def load_settings(path: str | Path | None = None, *, bootstrap_servers: str | None = None,
                  env: dict[str, str] | None = None) -> KafkaSettings:
    """Settings from a config file (JSON/YAML: bootstrap_servers, topics, deadletter_topic,
    client), then ``MMALIGN_KAFKA_*`` variables, then an explicit ``bootstrap_servers``."""
    env = os.environ if env is None else env
    data: dict = {}
    if path:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise KafkaConfigError(f"{p}: cannot read the Kafka config ({e.strerror}); "
                                   f"give an existing file") from None
        if p.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        unknown = set(data) - {"bootstrap_servers", "topics", "deadletter_topic", "client"}
        if unknown:
            raise KafkaConfigError(f"{p}: unknown field(s) {sorted(unknown)}; allowed: "
                                   f"bootstrap_servers, topics, deadletter_topic, client")
    client = dict(data.get("client") or {})
    topics = {**MODALITY_TOPICS, **(data.get("topics") or {})}
    bad = set(topics) - set(MODALITY_TOPICS)
    if bad:
        raise KafkaConfigError(f"topics: unknown modality {sorted(bad)}; use "
                               f"{sorted(MODALITY_TOPICS)}")
    boot = data.get("bootstrap_servers", KafkaSettings.bootstrap_servers)
    dlq = data.get("deadletter_topic", DEADLETTER_TOPIC)
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name == "bootstrap_servers":
            boot = value
        elif name == "deadletter_topic":
            dlq = value
        elif name.startswith("topic_") and name[6:] in MODALITY_TOPICS:
            topics[name[6:]] = value
        elif name in CLIENT_OPTIONS:
            client[name] = _coerce(name, value)
        else:
            raise KafkaConfigError(f"environment variable {key} is not a Kafka setting; use "
                                   f"{ENV_PREFIX}<kafka-python option>, e.g. "
                                   f"{ENV_PREFIX}SECURITY_PROTOCOL")
    unknown = set(client) - CLIENT_OPTIONS
    if unknown:
        raise KafkaConfigError(f"client: unknown kafka-python option(s) {sorted(unknown)}")
    return KafkaSettings(bootstrap_servers or boot, topics, dlq, client)


def add_kafka_args(p) -> None:
    """The Kafka options every Kafka subcommand takes."""
    p.add_argument("--kafka-config", default=None,
                   help="JSON/YAML Kafka settings (bootstrap_servers, topics, deadletter_topic, "
                        "client: SASL/SSL...); MMALIGN_KAFKA_* variables override it")
    p.add_argument("--bootstrap-servers", default=None, help="host:port[,host:port]")


class _AuthRefusals(logging.Handler):
    """Keeps the last login refusal kafka-python logged: it retries a refused SASL login until
    its bootstrap timeout and then raises only ``Unable to bootstrap``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        from kafka.errors import AuthorizationError, SaslAuthenticationFailedError
        args = record.args if isinstance(record.args, tuple) else ()
        for a in args:
            if isinstance(a, (SaslAuthenticationFailedError, AuthorizationError)):
                self.last = str(a).rpartition("Error: ")[2] or type(a).__name__


_REFUSALS = _AuthRefusals()


def auth_refusal(settings: KafkaSettings) -> str | None:
    """One sentence if the broker refused our login during this command, else None."""
    if _REFUSALS.last is None:
        return None
    user = settings.client.get("sasl_plain_username")
    who = f" of user {user!r}" if user else ""
    return (f"Kafka at {settings.bootstrap_servers} refused the "
            f"{settings.client.get('sasl_mechanism', 'SASL')} login{who} ({_REFUSALS.last}); "
            f"check {ENV_PREFIX}SASL_PLAIN_USERNAME/_PASSWORD or the client: section of "
            f"--kafka-config")


def kafka_failure(settings: KafkaSettings, otherwise: str) -> str:
    """The sentence for a command whose Kafka client failed: the refused login when the
    broker refused one (``auth_refusal``), else ``otherwise`` (e.g. an unreachable broker)."""
    return auth_refusal(settings) or otherwise


def settings_from_args(ns) -> KafkaSettings:
    """Settings for a subcommand; kafka-python's connection logs only with ``-v`` (a refused
    login is still recorded for ``auth_refusal``)."""
    kafka_log = logging.getLogger("kafka")
    if _REFUSALS not in kafka_log.handlers:
        kafka_log.addHandler(_REFUSALS)
    if not getattr(ns, "verbose", False):
        kafka_log.setLevel(logging.WARNING)
        kafka_log.propagate = False
    return load_settings(ns.kafka_config, bootstrap_servers=ns.bootstrap_servers)


def _lazy(module: str, name: str):
    """A subcommand function imported on use: `mmalign --help` does not import Beam."""
    def run(ns) -> int:
        import importlib
        return getattr(importlib.import_module(module), name)(ns)
    return run


def _names_checked(fn, **options: str):
    """``fn`` after checking the options that become file or folder names (schemas/names.py),
    e.g. ``run_id="--run-id"``: a bad one is a ManifestError (exit 2) before any disk use."""
    def run(ns) -> int:
        from mmalign.schemas.names import check_name
        for attr, flag in options.items():
            if getattr(ns, attr, None) is not None:
                check_name(getattr(ns, attr), flag)
        return fn(ns)
    return run


def add_kafka_commands(sub) -> None:
    """Register `mmalign publish`, `mmalign stream` and `mmalign deadletter`."""
    _add_publish(sub)
    _add_stream(sub)
    _add_deadletter(sub)


def _add_publish(sub) -> None:
    p = sub.add_parser("publish", help="replay a recording (manifest) into the Kafka topics")
    p.add_argument("--manifest", required=True, help="recording manifest (YAML/JSON)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="x real time (1 = real time); 0 = as fast as possible (default)")
    p.add_argument("--spool", default=None,
                   help="folder for chunks too big to send inline (sent as file:// URIs)")
    p.add_argument("--no-extents", action="store_true",
                   help="do not declare stream extents in the messages")
    p.add_argument("--run-id", default="publish", help="run id on decode dead letters")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_kafka_args(p)
    p.set_defaults(fn=_lazy("mmalign.pipelines.publish", "cmd_publish"))


def _add_stream(sub) -> None:
    p = sub.add_parser("stream", help="the streaming job: Kafka topics -> aligned Parquet + "
                                      "dead-letter topic (Beam Prism)")
    p.add_argument("--manifest", action="append", required=True,
                   help="manifest of a session to accept (streams, clocks, alignment); repeat")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--group-id", default="mmalign-stream",
                   help="Kafka consumer group; names OUT/_stream/<group>/ (letters, digits, "
                        "_ . -)")
    p.add_argument("--out-of-orderness", type=float, default=2.0,
                   help="seconds a message may arrive behind the latest event time")
    p.add_argument("--allowed-lateness", type=float, default=2.0,
                   help="extra seconds before a message is too late (dead letter)")
    p.add_argument("--stop-after-idle", type=float, default=None,
                   help="stop (and drain) once every partition was caught up this long")
    p.add_argument("--payload-root", action="append",
                   help="folder that file:// payload URIs may point into; repeat")
    p.add_argument("--run-id", default=None,
                   help="names OUT/_stream/<run>.json (letters, digits, _ . -)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    add_kafka_args(p)
    p.add_argument("pipeline_args", nargs="*",
                   help="Beam options after -- (default: a local Prism in streaming mode)")
    p.set_defaults(fn=_names_checked(_lazy("mmalign.pipelines.stream", "cmd_stream"),
                                     run_id="--run-id", group_id="--group-id"))


def _add_deadletter(sub) -> None:
    p = sub.add_parser("deadletter", help="inspect or replay the Kafka dead-letter topic")
    p.add_argument("action", choices=["inspect", "replay"],
                   help="inspect: counts + letters; replay: re-publish letters that came from "
                        "a topic to that topic, with their original key")
    p.add_argument("--stage", default=None, help="only letters of this stage")
    p.add_argument("--reason", default=None, help="only letters with this reason")
    p.add_argument("--topic", default=None, help="dead-letter topic (default from settings)")
    p.add_argument("--limit", type=int, default=20, help="letters to list (inspect)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the topic's records (inspect)")
    p.add_argument("--json", action="store_true")
    add_kafka_args(p)
    p.set_defaults(fn=_lazy("mmalign.deadletter.kafka_topic", "cmd_deadletter"))
