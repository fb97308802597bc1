"""Kafka client settings: the record and its loading (defaults, a JSON/YAML file, environment).

Settings come from (later wins) defaults, a JSON/YAML config file and ``MMALIGN_KAFKA_*``
environment variables, e.g. ``MMALIGN_KAFKA_BOOTSTRAP_SERVERS``,
``MMALIGN_KAFKA_SECURITY_PROTOCOL=SASL_SSL``, ``MMALIGN_KAFKA_SASL_MECHANISM=SCRAM-SHA-512``,
``MMALIGN_KAFKA_SASL_PLAIN_USERNAME``, ``MMALIGN_KAFKA_SASL_PLAIN_PASSWORD``,
``MMALIGN_KAFKA_SSL_CAFILE`` ... Any kafka-python client option is accepted by that naming.
``redacted()`` is the only form ever logged: secrets are masked. The command-line side
(``--kafka-config``, login refusals) is pipelines/kafka_config.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

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
