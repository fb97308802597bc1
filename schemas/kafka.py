"""Kafka client settings: the record and its loading (file, environment, command line).

Settings come from, later winning: defaults; a config file (``--kafka-config``, or the
``MMALIGN_KAFKA_CONFIG`` variable): a Kafka ``client.properties`` file as Apache Kafka,
Confluent Cloud and Amazon MSK hand them out, or JSON/YAML (``bootstrap_servers``, ``topics``,
``deadletter_topic``, ``client``); ``MMALIGN_KAFKA_<KEY>`` environment variables; ``-X KEY=VALUE``
on the command line; an explicit ``--bootstrap-servers``.

A key is either one of Kafka's dotted client properties (``bootstrap.servers``,
``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``, ``ssl.truststore.location``,
librdkafka's ``sasl.username`` / ``ssl.ca.location`` ...: ``PROPERTIES`` and ``SPECIAL``) or a
kafka-python option name (``sasl_plain_username``: ``CLIENT_OPTIONS``); every one ends up as a
kafka-python argument. ``sasl.jaas.config`` becomes ``sasl_plain_username`` /
``sasl_plain_password`` (PLAIN and SCRAM); a PEM trust store becomes ``ssl_cafile``, a PEM key
store ``ssl_certfile``. Keys Kafka hands out that do not apply to mmalign's clients are
recorded as ``ignored`` with the reason (``IGNORED``); any other key, or one mmalign cannot
honour (a JKS store, OAuth, Kerberos keytabs), is a ``KafkaConfigError`` naming the key.
Secret values never appear in an error, a summary or a log: ``redacted()`` is the only form
ever logged. The command-line side is pipelines/kafka_config.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

import yaml

ENV_PREFIX = "MMALIGN_KAFKA_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"                       # a config file, as --kafka-config
SECRET_WORDS = ("password", "secret", "token", "key", "jaas", "user.info")
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
    "bootstrap_timeout_ms", "client_dns_lookup", "metadata_max_age_ms",
    "receive_buffer_bytes", "send_buffer_bytes",
}

# Kafka's dotted client properties (Java clients; librdkafka's spelling where it differs)
# that are one kafka-python option each
PROPERTIES = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "client.dns.lookup": "client_dns_lookup",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",                # librdkafka
    "sasl.username": "sasl_plain_username",             # librdkafka
    "sasl.password": "sasl_plain_password",             # librdkafka
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "ssl.ca.location": "ssl_cafile",                    # librdkafka
    "ssl.certificate.location": "ssl_certfile",         # librdkafka
    "ssl.key.location": "ssl_keyfile",                  # librdkafka
    "ssl.key.password": "ssl_password",
    "ssl.crl.location": "ssl_crlfile",                  # librdkafka
    "request.timeout.ms": "request_timeout_ms",
    "retry.backoff.ms": "retry_backoff_ms",
    "reconnect.backoff.ms": "reconnect_backoff_ms",
    "reconnect.backoff.max.ms": "reconnect_backoff_max_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "receive.buffer.bytes": "receive_buffer_bytes",
    "send.buffer.bytes": "send_buffer_bytes",
}
# properties that are translated with others (a store and its type, a JAAS line)
SPECIAL = {
    "sasl.jaas.config", "ssl.truststore.location", "ssl.truststore.type",
    "ssl.truststore.password", "ssl.keystore.location", "ssl.keystore.type",
    "ssl.keystore.password", "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification", "sasl.client.callback.handler.class", "acks",
}
# properties Kafka, Confluent Cloud or MSK hand out that do not apply to mmalign's clients
IGNORED = {
    "session.timeout.ms": "mmalign's consumers assign partitions themselves (no group "
                          "membership)",
    "heartbeat.interval.ms": "mmalign's consumers assign partitions themselves (no group "
                             "membership)",
    "schema.registry.url": "mmalign's messages do not use a Schema Registry",
    "basic.auth.credentials.source": "mmalign's messages do not use a Schema Registry",
    "basic.auth.user.info": "mmalign's messages do not use a Schema Registry",
    "schema.registry.basic.auth.credentials.source": "mmalign's messages do not use a "
                                                     "Schema Registry",
    "schema.registry.basic.auth.user.info": "mmalign's messages do not use a Schema Registry",
    "ssl.truststore.password": "a PEM trust store has no password",
    "ssl.keystore.password": "a PEM key store's key is protected by ssl.key.password",
}
# properties Kafka knows that mmalign cannot honour, with what to do instead
UNSUPPORTED = {
    "ssl.truststore.certificates": "give the CA certificates as a PEM file "
                                   "(ssl.truststore.location, ssl.truststore.type=PEM)",
    "ssl.keystore.certificate.chain": "give the key and certificate chain as a PEM file "
                                      "(ssl.keystore.location, ssl.keystore.type=PEM)",
    "ssl.keystore.key": "give the key and certificate chain as a PEM file "
                        "(ssl.keystore.location, ssl.keystore.type=PEM)",
    "sasl.login.callback.handler.class": "kafka-python cannot load Java callback handlers",
    "sasl.oauthbearer.token.endpoint.url": "OAUTHBEARER needs a token provider object, which "
                                           "a properties file cannot give",
    "config.providers": "set secrets through MMALIGN_KAFKA_* variables instead",
    "group.id": "the streaming job's consumer group is --group-id",
}
MMALIGN_KEYS = {"mmalign.deadletter.topic", *(f"mmalign.topic.{m}" for m in MODALITY_TOPICS)}
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "AWS_MSK_IAM", "OAUTHBEARER")
DNS_LOOKUPS = ("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only")
# JAAS login modules a client may name, and the SASL mechanisms each one serves
LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": ("PLAIN",),
    "org.apache.kafka.common.security.scram.ScramLoginModule": ("SCRAM-SHA-256",
                                                                "SCRAM-SHA-512"),
    "software.amazon.msk.auth.iam.IAMLoginModule": ("AWS_MSK_IAM",),
}
IAM_CALLBACK = "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|<[A-Za-z_ -]+>")


class KafkaConfigError(ValueError):
    """A Kafka setting is unknown, unsupported or malformed; the message names it and the fix
    (never its value when that may be a secret)."""


def is_secret(key: str) -> bool:
    """A key (dotted property or kafka-python option) whose value is never shown."""
    k = key.lower()
    return any(w in k for w in SECRET_WORDS)


_BROKER_VERSIONS: dict[str, tuple[int, ...]] = {}   # bootstrap servers -> probed


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: dict[str, str] = field(default_factory=lambda: dict(MODALITY_TOPICS))
    deadletter_topic: str = DEADLETTER_TOPIC
    client: dict = field(default_factory=dict)   # security + tuning, passed to every client
    # kafka-python option -> where it was set (a file's key, a variable, -X): never a value
    origins: dict[str, str] = field(default_factory=dict, compare=False)
    # keys given but not applied -> why
    ignored: dict[str, str] = field(default_factory=dict, compare=False)

    def common(self) -> dict:
        """kwargs for any kafka-python client (with the broker's API version once a client
        of this process has probed it: ``make``)."""
        kw = {"bootstrap_servers": self.bootstrap_servers, **self.client}
        known = _BROKER_VERSIONS.get(self.bootstrap_servers)
        if known is not None and "api_version" not in kw:
            kw["api_version"] = known
        return kw

    def make(self, cls, **kw):
        """``cls(**common(), **kw)`` for a kafka-python client class, noting the broker API
        version it probed: a client given the version skips the probe, ~0.1 s of its start
        (the stream job makes six or more)."""
        client = cls(**self.common(), **kw)
        self.note_version(client)
        return client

    def note_version(self, client) -> None:
        """Remember the broker API version ``client`` probed, for the clients made after it.
        A consumer or producer keeps it in its config; an admin client only on its connection
        manager (kafka-python 3.0), read if there: without it a later client probes again."""
        version = ((getattr(client, "config", None) or {}).get("api_version")
                   or getattr(getattr(client, "_manager", None), "broker_version", None))
        if version:
            _BROKER_VERSIONS.setdefault(self.bootstrap_servers, tuple(version))

    def topic_for(self, modality: str) -> str:
        return self.topics[modality]

    def redacted(self) -> dict:
        """The settings with every secret value masked: the only form that may be logged."""
        client = {k: ("***" if is_secret(k) and v is not None else v)
                  for k, v in self.client.items()}
        return {"bootstrap_servers": self.bootstrap_servers, "topics": self.topics,
                "deadletter_topic": self.deadletter_topic, "client": client,
                "sources": dict(sorted(self.origins.items())),
                "ignored": sorted(self.ignored)}

    def credentials_origin(self) -> str | None:
        """Where the SASL user name and password were set, for a message (no values)."""
        found = [self.origins[k] for k in ("sasl_plain_username", "sasl_plain_password")
                 if k in self.origins]
        if not found:
            return None
        if all(o.startswith(ENV_PREFIX + "SASL_PLAIN_") for o in found):
            return f"{ENV_PREFIX}SASL_PLAIN_USERNAME/_PASSWORD"
        return " and ".join(dict.fromkeys(found))


# -- Java properties files ---------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        n = text[i + 1]
        if n == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2:i + 6]):
            out.append(chr(int(text[i + 2:i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(n, n))
        i += 2
    return "".join(out)


def parse_properties(text: str) -> list[tuple[str, str, int]]:
    """``(key, value, line number)`` of a Java ``.properties`` text, as
    ``java.util.Properties.load`` reads it: ``#``/``!`` comments, ``key=value``, ``key: value``
    or ``key value``, a line ending in an odd number of backslashes continues on the next one
    (its leading blanks dropped), ``\\`` escapes."""
    items: list[tuple[str, str, int]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1 and i < len(lines):
            line = line[:-1] + lines[i].lstrip(" \t\f")
            i += 1
        if (len(line) - len(line.rstrip("\\"))) % 2 == 1:     # continued past the last line
            line = line[:-1]
        j, key_end = 0, None
        while j < len(line):
            c = line[j]
            if c == "\\":
                j += 2
                continue
            if c in "=: \t\f":
                key_end = j
                break
            j += 1
        if key_end is None:
            key, rest = line, ""
        else:
            key, k = line[:key_end], key_end + 1
            separator = line[key_end] in "=:"
            while k < len(line) and line[k] in " \t\f":
                k += 1
            if not separator and k < len(line) and line[k] in "=:":
                k += 1
                while k < len(line) and line[k] in " \t\f":
                    k += 1
            rest = line[k:]
        items.append((_unescape(key), _unescape(rest), start + 1))
    return items


# -- JAAS -------------------------------------------------------------------------------------

_JAAS_TOKEN = re.compile(r"""\s*(?:(?P<q>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<p>[=;])|"""
                         r"""(?P<w>[^\s=;"']+))""", re.S)


def _jaas_tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _JAAS_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError("unbalanced quotes")
        pos = m.end()
        if m.group("q") is not None:
            tokens.append(("q", _unescape(m.group("q")[1:-1])))
        elif m.group("p") is not None:
            tokens.append(("p", m.group("p")))
        else:
            tokens.append(("w", m.group("w")))
    return tokens


def parse_jaas(text: str) -> tuple[str, dict[str, str]]:
    """``(login module class, options)`` of a client's ``sasl.jaas.config``: one entry,
    ``<LoginModule> required key="value" ... ;`` (values quoted with " or ', or bare words).
    The ValueError says what is wrong without quoting the text (it holds a password)."""
    try:
        tokens = _jaas_tokens(text)
    except ValueError as e:
        raise ValueError(f"cannot be read ({e})") from None
    if tokens and tokens[-1] == ("p", ";"):
        tokens = tokens[:-1]
    if ("p", ";") in tokens:
        raise ValueError("holds more than one login module; a client has exactly one")
    if len(tokens) < 2 or tokens[0][0] != "w" or tokens[1][0] != "w":
        raise ValueError("is not '<LoginModule class> required key=\"value\" ...;'")
    module, flag = tokens[0][1], tokens[1][1]
    if flag not in ("required", "requisite", "sufficient", "optional"):
        raise ValueError("needs a control flag after the login module ('required')")
    options: dict[str, str] = {}
    rest = tokens[2:]
    if len(rest) % 3:
        raise ValueError("options must be key=\"value\" pairs")
    for k in range(0, len(rest), 3):
        (kt, key), eq, (vt, value) = rest[k], rest[k + 1], rest[k + 2]
        if kt != "w" or eq != ("p", "=") or vt == "p":
            raise ValueError("options must be key=\"value\" pairs")
        options[key] = value
    return module, options


# -- loading -----------------------------------------------------------------------------------

@dataclass
class _Item:
    key: str          # a dotted property, a kafka-python option, or an mmalign key
    value: object
    origin: str       # "bootstrap.servers in /x/client.properties:3", "MMALIGN_KAFKA_...", "-X ..."
    layer: int


def _placeholder(value: str, secret: bool) -> bool:
    """Does ``value`` still hold a template's placeholder (Confluent's ``{{ CLUSTER_API_KEY }}``,
    MSK's ``<BootstrapBrokerString>``)? Secrets only by the ``{{ }}`` form."""
    return bool(_PLACEHOLDER.search(value) if not secret else "{{" in value and "}}" in value)


def _coerce(name: str, value, origin: str):
    """A kafka-python option's value from text (files, variables, -X) or YAML."""
    if not isinstance(value, str):
        return value
    if name == "api_version":
        try:
            return tuple(int(x) for x in value.split("."))
        except ValueError:
            raise KafkaConfigError(f"{origin}: {value!r} is not a version like 2.8.0"
                                   ) from None
    if name.endswith(("_ms", "_bytes")):
        try:
            return int(value)
        except ValueError:
            raise KafkaConfigError(f"{origin}: {value!r} is not an integer") from None
    if name == "ssl_check_hostname":
        return _bool(value, origin)
    if name == "security_protocol":
        if value.upper() not in PROTOCOLS:
            raise KafkaConfigError(f"{origin}: security protocol {value!r} is not one of "
                                   f"{', '.join(PROTOCOLS)}")
        return value.upper()
    if name == "sasl_mechanism":
        if value.upper() not in MECHANISMS:
            raise KafkaConfigError(f"{origin}: SASL mechanism {value!r} is not one of "
                                   f"{', '.join(MECHANISMS)}")
        return value.upper()
    if name == "client_dns_lookup":
        if value not in DNS_LOOKUPS:
            raise KafkaConfigError(f"{origin}: {value!r} is not one of {', '.join(DNS_LOOKUPS)}")
    return value


def _bool(value: str, origin: str) -> bool:
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise KafkaConfigError(f"{origin}: {value!r} is not true or false")


def _suggest(key: str) -> str:
    known = [*PROPERTIES, *SPECIAL, *IGNORED, *CLIENT_OPTIONS, *MMALIGN_KEYS]
    close = get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_file(path: Path) -> list[_Item]:
    """A config file's items: a client.properties file (any name but .json/.yaml/.yml), or
    JSON/YAML with bootstrap_servers, topics, deadletter_topic and client."""
    try:
        text = path.read_text()
    except OSError as e:
        raise KafkaConfigError(f"{path}: cannot read the Kafka config ({e.strerror}); give "
                               f"an existing file") from None
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        return [_Item(k, v, f"{k} in {path}:{n}", 0) for k, v, n in parse_properties(text)]
    try:
        data = (yaml.safe_load(text) if path.suffix.lower() != ".json" else json.loads(text)
                ) or {}
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise KafkaConfigError(f"{path}: not valid {path.suffix[1:].upper()} ({e})") from None
    if not isinstance(data, dict):
        raise KafkaConfigError(f"{path}: expected a mapping with bootstrap_servers, topics, "
                               f"deadletter_topic, client")
    unknown = set(data) - {"bootstrap_servers", "topics", "deadletter_topic", "client"}
    if unknown:
        raise KafkaConfigError(f"{path}: unknown field(s) {sorted(unknown)}; allowed: "
                               f"bootstrap_servers, topics, deadletter_topic, client")
    items = []
    if "bootstrap_servers" in data:
        items.append(_Item("bootstrap_servers", data["bootstrap_servers"],
                           f"bootstrap_servers in {path}", 0))
    if "deadletter_topic" in data:
        items.append(_Item("mmalign.deadletter.topic", data["deadletter_topic"],
                           f"deadletter_topic in {path}", 0))
    for modality, topic in (data.get("topics") or {}).items():
        if modality not in MODALITY_TOPICS:
            raise KafkaConfigError(f"{path}: topics: unknown modality {modality!r}; use "
                                   f"{sorted(MODALITY_TOPICS)}")
        items.append(_Item(f"mmalign.topic.{modality}", topic, f"topics.{modality} in {path}",
                           0))
    for key, value in (data.get("client") or {}).items():
        items.append(_Item(str(key), value, f"client.{key} in {path}", 0))
    return items


def _env_items(env: Mapping[str, str]) -> list[_Item]:
    """``MMALIGN_KAFKA_<KEY>``: a kafka-python option (``SASL_PLAIN_PASSWORD``), a dotted
    property with ``_`` for ``.`` (``SASL_JAAS_CONFIG``), ``TOPIC_<MODALITY>``,
    ``DEADLETTER_TOPIC``; ``CONFIG`` is the config file."""
    items = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name, value = var[len(ENV_PREFIX):].lower(), env[var]
        if name == "deadletter_topic":
            key = "mmalign.deadletter.topic"
        elif name.startswith("topic_") and name[6:] in MODALITY_TOPICS:
            key = f"mmalign.topic.{name[6:]}"
        elif name in CLIENT_OPTIONS:
            key = name
        elif name.replace("_", ".") in (*PROPERTIES, *SPECIAL, *IGNORED, *UNSUPPORTED):
            key = name.replace("_", ".")
        else:
            raise KafkaConfigError(f"environment variable {var} is not a Kafka setting; use "
                                   f"{ENV_PREFIX}<kafka-python option or client property with "
                                   f"_ for .>, e.g. {ENV_PREFIX}SECURITY_PROTOCOL")
        items.append(_Item(key, value, var, 1))
    return items


def _cli_items(properties: Iterable[str]) -> list[_Item]:
    items = []
    for text in properties:
        key, eq, value = text.partition("=")
        key = key.strip()
        if not eq or not key:
            raise KafkaConfigError(f"-X {key or text!r}: expected KEY=VALUE, e.g. -X "
                                   f"security.protocol=SASL_SSL")
        items.append(_Item(key, value.strip(), f"-X {key}", 2))
    return items


class _Builder:
    """Items -> KafkaSettings: translate each to kafka-python options, later layers win."""

    def __init__(self, items: list[_Item]):
        self.items = items
        self.client: dict = {}
        self.origins: dict[str, str] = {}
        self.layer_of: dict[str, int] = {}
        self.ignored: dict[str, str] = {}
        self.boot: str | None = None
        self.topics = dict(MODALITY_TOPICS)
        self.dlq = DEADLETTER_TOPIC
        self.login_module: tuple[str, str] | None = None      # (module, origin)
        # the last value of each dotted property that qualifies another one (store types)
        self.last = {it.key: it for it in items}

    def set(self, option: str, value, it: _Item) -> None:
        if option not in CLIENT_OPTIONS:
            raise KafkaConfigError(f"{it.origin}: {option} is not a kafka-python client option "
                                   f"mmalign passes on{_suggest(option)}")
        value = _coerce(option, value, it.origin)
        if (self.layer_of.get(option) == it.layer and self.client.get(option) != value
                and self.origins[option] != it.origin):
            raise KafkaConfigError(f"{it.origin} and {self.origins[option]} both set "
                                   f"{option}, differently; keep one")
        self.client[option] = value
        self.origins[option] = it.origin
        self.layer_of[option] = it.layer

    def build(self) -> None:
        for it in self.items:
            self.one(it)
        self.check()

    def one(self, it: _Item) -> None:
        key, value = it.key, it.value
        if isinstance(value, str):
            if not is_secret(key):
                value = it.value = value.strip()
            if key != "sasl.jaas.config" and _placeholder(value, is_secret(key)):
                raise KafkaConfigError(f"{it.origin}: still holds a template placeholder"
                                       + ("" if is_secret(key) else f" ({value})")
                                       + "; fill it in")
        if key == "bootstrap.servers" or key == "bootstrap_servers":
            self.boot = ",".join(value) if isinstance(value, list) else str(value)
            self.origins["bootstrap_servers"] = it.origin
        elif key == "mmalign.deadletter.topic":
            self.dlq = str(value)
        elif key.startswith("mmalign.topic.") and key[14:] in MODALITY_TOPICS:
            self.topics[key[14:]] = str(value)
        elif key in CLIENT_OPTIONS:
            self.set(key, value, it)
        elif key in PROPERTIES:
            self.set(PROPERTIES[key], value, it)
        elif key in IGNORED:
            self.ignored[key] = IGNORED[key]
        elif key in SPECIAL:
            self.special(it)
        elif key in UNSUPPORTED:
            raise KafkaConfigError(f"{it.origin}: {key} is not supported: {UNSUPPORTED[key]}")
        else:
            raise KafkaConfigError(f"{it.origin}: {key} is not a Kafka client setting mmalign "
                                   f"applies{_suggest(key)}; see README 'Streaming on Kafka'")

    def store_type(self, kind: str, path: str, it: _Item) -> None:
        """A trust or key store must be PEM: kafka-python reads PEM files only."""
        given = self.last.get(f"ssl.{kind}store.type")
        typ = str(given.value).upper() if given else None
        if typ is None:                                      # Kafka's default is JKS: sniff
            try:
                head = Path(path).read_bytes()[:4096]
            except OSError as e:
                raise KafkaConfigError(f"{it.origin}: cannot read {path} ({e.strerror})"
                                       ) from None
            typ = "PEM" if b"-----BEGIN " in head else "JKS or PKCS12"
        if typ != "PEM":
            raise KafkaConfigError(
                f"{it.origin}: the {kind} store is {typ}, and kafka-python reads PEM only; "
                + ("export its certificates (keytool -exportcert -rfc -keystore STORE -alias "
                   "A > ca.pem) and set ssl.truststore.location=ca.pem and "
                   "ssl.truststore.type=PEM, or drop it to trust the system CAs (Confluent "
                   "Cloud and Amazon MSK use public ones)" if kind == "trust" else
                   "convert it (openssl pkcs12 -in STORE -out client.pem) and set "
                   "ssl.keystore.location=client.pem and ssl.keystore.type=PEM"))

    def special(self, it: _Item) -> None:
        key, value = it.key, str(it.value)
        if key == "sasl.jaas.config":
            try:
                module, opts = parse_jaas(value)
            except ValueError as e:
                raise KafkaConfigError(f"{it.origin} {e}") from None
            if module not in LOGIN_MODULES:
                why = ("OAUTHBEARER needs a token provider object, which a properties file "
                       "cannot give" if "OAuthBearer" in module else
                       "kafka-python takes Kerberos tickets from the ticket cache (kinit); "
                       "remove sasl.jaas.config and set sasl.mechanism=GSSAPI"
                       if "Krb5" in module else
                       f"use one of {', '.join(m.rsplit('.', 1)[1] for m in LOGIN_MODULES)}")
                raise KafkaConfigError(f"{it.origin}: login module {module} is not "
                                       f"supported: {why}")
            self.login_module = (module, it.origin)
            wanted = set() if module.endswith("IAMLoginModule") else {"username", "password"}
            extra = sorted(set(opts) - wanted)
            if extra:
                raise KafkaConfigError(f"{it.origin}: option(s) {', '.join(extra)} of "
                                       f"{module.rsplit('.', 1)[1]} are not supported"
                                       + ("; only username and password" if wanted else ""))
            missing = sorted(wanted - set(opts))
            if missing:
                raise KafkaConfigError(f"{it.origin}: {module.rsplit('.', 1)[1]} needs "
                                       f"{' and '.join(missing)}")
            for opt in ("username", "password"):
                if opt in opts:
                    if _placeholder(opts[opt], opt == "password"):
                        raise KafkaConfigError(f"{it.origin}: the {opt} still holds a "
                                               f"template placeholder; fill it in")
                    self.set(f"sasl_plain_{opt}", opts[opt], it)
        elif key == "ssl.truststore.location":
            self.store_type("trust", value, it)
            self.set("ssl_cafile", value, it)
        elif key == "ssl.keystore.location":
            self.store_type("key", value, it)
            self.set("ssl_certfile", value, it)
        elif key in ("ssl.truststore.type", "ssl.keystore.type"):
            if value.upper() != "PEM" and f"{key.rsplit('.', 1)[0]}.location" not in self.last:
                raise KafkaConfigError(f"{it.origin}: {key}={value} is not supported; "
                                       f"kafka-python reads PEM stores only")
        elif key == "ssl.endpoint.identification.algorithm":
            if value.lower() not in ("", "https", "none"):
                raise KafkaConfigError(f"{it.origin}: {value!r} is not https or empty")
            self.set("ssl_check_hostname", value.lower() == "https", it)
        elif key == "enable.ssl.certificate.verification":
            if not _bool(value, it.origin):
                raise KafkaConfigError(f"{it.origin}: turning certificate verification off is "
                                       f"not supported; give the CA (ssl.ca.location)")
        elif key == "sasl.client.callback.handler.class":
            if value != IAM_CALLBACK:
                raise KafkaConfigError(f"{it.origin}: callback handler {value} is not "
                                       f"supported (kafka-python cannot load Java classes)")
            self.ignored[key] = "kafka-python's AWS_MSK_IAM does the same"
        elif key == "acks":
            if value.strip().lower() not in ("all", "-1"):
                raise KafkaConfigError(f"{it.origin}: acks={value} is not supported: mmalign's "
                                       f"producers always wait for all in-sync replicas "
                                       f"(acks=all)")
            self.ignored[key] = "mmalign's producers always use acks=all"

    def check(self) -> None:
        """Settings that only make sense together."""
        mech = self.client.get("sasl_mechanism")
        proto = self.client.get("security_protocol", "PLAINTEXT")
        if self.login_module:
            module, origin = self.login_module
            served = LOGIN_MODULES[module]
            if mech is None and len(served) == 1:
                self.client["sasl_mechanism"] = mech = served[0]
                self.origins["sasl_mechanism"] = origin
            if mech is None:
                raise KafkaConfigError(f"{origin} needs sasl.mechanism ({' or '.join(served)})")
            if mech not in served:
                raise KafkaConfigError(f"{origin} names {module.rsplit('.', 1)[1]}, which does "
                                       f"not serve sasl.mechanism {mech} "
                                       f"({self.origins['sasl_mechanism']})")
        if mech and not proto.startswith("SASL_"):
            raise KafkaConfigError(f"{self.origins['sasl_mechanism']}: SASL is set but "
                                   f"security.protocol is {proto}; set it to SASL_SSL or "
                                   f"SASL_PLAINTEXT")
        if mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            missing = [k for k in ("sasl_plain_username", "sasl_plain_password")
                       if not self.client.get(k)]
            if missing:
                raise KafkaConfigError(f"{self.origins['sasl_mechanism']}: {mech} needs a user "
                                       f"name and password (sasl.jaas.config, or "
                                       f"{ENV_PREFIX}SASL_PLAIN_USERNAME/_PASSWORD)")
        if mech == "OAUTHBEARER" and not self.client.get("sasl_oauth_token_provider"):
            raise KafkaConfigError(f"{self.origins['sasl_mechanism']}: OAUTHBEARER needs a "
                                   f"token provider object, which settings cannot give")
        if mech == "AWS_MSK_IAM":
            try:
                import botocore  # noqa: F401  -- lazy: only AWS_MSK_IAM signs with it
            except ImportError:
                raise KafkaConfigError(f"{self.origins['sasl_mechanism']}: AWS_MSK_IAM needs "
                                       f"the botocore package (pip install botocore)") from None


def load_settings(path: str | Path | None = None, *, bootstrap_servers: str | None = None,
                  env: Mapping[str, str] | None = None, properties: Sequence[str] = ()
                  ) -> KafkaSettings:
    """Settings from a config file (``path``, else ``$MMALIGN_KAFKA_CONFIG``), then
    ``MMALIGN_KAFKA_*`` variables, then ``properties`` (``-X KEY=VALUE``), then an explicit
    ``bootstrap_servers``; see the module's doc."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    items = [*(_read_file(Path(path)) if path else []), *_env_items(env),
             *_cli_items(properties)]
    if bootstrap_servers:
        items.append(_Item("bootstrap_servers", bootstrap_servers, "--bootstrap-servers", 3))
    b = _Builder(items)
    b.build()
    return KafkaSettings(b.boot or KafkaSettings.bootstrap_servers, b.topics, b.dlq, b.client,
                         b.origins, b.ignored)
