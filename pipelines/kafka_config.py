"""The Kafka side of the command line: ``--kafka-config`` (a client.properties file, or
JSON/YAML), ``-X KEY=VALUE`` / ``--kafka-property``, ``--bootstrap-servers``, the `publish`,
`stream` and `deadletter` subcommands, and one sentence for a refused login.

The settings record and its loading (file, ``MMALIGN_KAFKA_*`` variables, ``-X``) are
schemas/kafka.py; ``redacted()`` is the only form of them ever logged.
"""

from __future__ import annotations

import importlib
import logging

from mmalign.pipelines.observe import add_observe_arguments
from mmalign.pipelines.runners import add_runner_arguments
from mmalign.schemas.kafka import ENV_PREFIX, KafkaSettings, load_settings
from mmalign.schemas.names import check_name


def add_kafka_args(p) -> None:
    """The Kafka options every Kafka subcommand takes."""
    p.add_argument("--kafka-config", default=None, metavar="FILE",
                   help="Kafka client settings: a client.properties file as Kafka, Confluent "
                        "Cloud or MSK hand it out (bootstrap.servers, security.protocol, "
                        "sasl.mechanism, sasl.jaas.config, ssl.truststore.location ...), or "
                        "JSON/YAML (bootstrap_servers, topics, deadletter_topic, client); "
                        f"default ${ENV_PREFIX}CONFIG; {ENV_PREFIX}* variables override it")
    p.add_argument("-X", "--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                   help="one Kafka client property (dotted, e.g. -X security.protocol=SASL_SSL, "
                        "or a kafka-python option); repeat; overrides the file and variables")
    p.add_argument("--bootstrap-servers", default=None, help="host:port[,host:port]")


class _AuthRefusals(logging.Handler):
    """Keeps the last login refusal kafka-python logged: it retries a refused SASL login until
    its bootstrap timeout and then raises only ``Unable to bootstrap``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # lazy: kafka-python only where a broker is used (a Kafka command logged this)
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
    where = settings.credentials_origin() or (f"{ENV_PREFIX}SASL_PLAIN_USERNAME/_PASSWORD or "
                                              f"sasl.jaas.config in --kafka-config")
    return (f"Kafka at {settings.bootstrap_servers} refused the "
            f"{settings.client.get('sasl_mechanism', 'SASL')} login{who} ({_REFUSALS.last}); "
            f"check {where}")


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
    return load_settings(ns.kafka_config, bootstrap_servers=ns.bootstrap_servers,
                         properties=getattr(ns, "kafka_property", None) or ())


def _lazy(module: str, name: str):
    """A subcommand function imported on use: `mmalign --help` does not import Beam."""
    def run(ns) -> int:
        return getattr(importlib.import_module(module), name)(ns)
    return run


def _names_checked(fn, **options: str):
    """``fn`` after checking the options that become file or folder names (schemas/names.py),
    e.g. ``run_id="--run-id"``: a bad one is a ManifestError (exit 2) before any disk use."""
    def run(ns) -> int:
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
                                      "dead-letter topic (default runner: a local Beam Prism)",
                       allow_abbrev=False)
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
                   help="stop (and drain) this many seconds after the last record, every "
                        "partition caught up")
    p.add_argument("--payload-root", action="append",
                   help="folder that file:// payload URIs may point into; repeat")
    p.add_argument("--run-id", default=None,
                   help="names OUT/_stream/<run>.json (letters, digits, _ . -)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    add_kafka_args(p)
    add_observe_arguments(p)               # --metrics-port, --trace-sample, ... (observe.py)
    add_runner_arguments(p, streaming=True)
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
    p.set_defaults(fn=_lazy("mmalign.pipelines.deadletter_cli", "cmd_deadletter"))
