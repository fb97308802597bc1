"""Kafka settings as Kafka, Confluent Cloud and Amazon MSK hand them out (schemas/kafka.py,
pipelines/kafka_config.py, the CLI in-process).

A ``client.properties`` file (``--kafka-config``), dotted keys on the command line
(``-X key=value`` / ``--kafka-property``) and in ``MMALIGN_KAFKA_<KEY>`` variables map onto
kafka-python's arguments: ``sasl.jaas.config`` -> user name and password (PLAIN, SCRAM), PEM
trust and key stores, librdkafka's names (``ssl.ca.location``, ``sasl.username``); keys that
do not apply are ignored with a reason, unknown or unsupported ones are exit 2 naming the key;
secrets never appear in an error, a summary or a log. The same files against real SASL
brokers: tests/integration/test_kafka_security.py.
"""

from __future__ import annotations

import datetime
import json
import ssl
from pathlib import Path

import pytest

from mmalign.pipelines import kafka_config
from mmalign.pipelines.cli import build_parser, main
from mmalign.schemas.kafka import (
    KafkaConfigError,
    KafkaSettings,
    load_settings,
    parse_jaas,
    parse_properties,
)

PASSWORD = "pa$$w0rd;with=\"odd' chars"
CONFLUENT_JAVA = """\
# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers=pkc-n00kk.europe-west4.gcp.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
username='ABCDEFGH12345678' password='cflt/Secret+Value==';
sasl.mechanism=PLAIN
# Required for correctness in Apache Kafka clients prior to 2.6
client.dns.lookup=use_all_dns_ips

# Best practice for higher availability in Apache Kafka clients prior to 3.0
session.timeout.ms=45000

# Best practice for Kafka producer to prevent data loss
acks=all

# Required connection configs for Confluent Cloud Schema Registry
schema.registry.url=https://psrc-4r3n1.europe-west4.gcp.confluent.cloud
basic.auth.credentials.source=USER_INFO
basic.auth.user.info=SRKEY:SR-secret-value
"""
CONFLUENT_LIBRDKAFKA = """\
bootstrap.servers=pkc-n00kk.europe-west4.gcp.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=ABCDEFGH12345678
sasl.password=cflt/Secret+Value==
ssl.ca.location={ca}
session.timeout.ms=45000
"""
MSK_SCRAM = """\
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
ssl.truststore.location={store}
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
    username="alice" \\
    password="alice-secret";
"""
MSK_IAM = """\
bootstrap.servers=b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com:9098
security.protocol = SASL_SSL
sasl.mechanism = AWS_MSK_IAM
sasl.jaas.config = software.amazon.msk.auth.iam.IAMLoginModule required;
sasl.client.callback.handler.class = software.amazon.msk.auth.iam.IAMClientCallbackHandler
"""


def _write(tmp_path: Path, text: str, name: str = "client.properties") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _pem_ca(tmp_path: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    client = tmp_path / "client.pem"     # a PEM key store: encrypted key + certificate chain
    client.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pw")) + ca.read_bytes())
    return ca


# -- file formats -------------------------------------------------------------------------------

def test_properties_are_read_as_java_reads_them() -> None:
    text = ("# comment\n! also a comment\n  a = 1\nb:2\nc 3\nd=x \\\n   y\\\n z\n"
            "e\\ f=has\\tescapes\\u00e9\nempty=\ng\n h = = lead\nurl=https://h:1/p?q=1\n")
    got = {k: v for k, v, _ in parse_properties(text)}
    assert got == {"a": "1", "b": "2", "c": "3", "d": "x yz", "e f": "has\tescapesé",
                   "empty": "", "g": "", "h": "= lead", "url": "https://h:1/p?q=1"}
    lines = {k: n for k, _, n in parse_properties(text)}
    assert lines["d"] == 6 and lines["url"] == 13


def test_jaas_lines_quotes_escapes_and_errors() -> None:
    module, opts = parse_jaas(
        'org.apache.kafka.common.security.scram.ScramLoginModule required '
        'username="al ice" password="p;a=s\\"s";')
    assert module.endswith("ScramLoginModule") and opts == {"username": "al ice",
                                                            "password": 'p;a=s"s'}
    assert parse_jaas("x.PlainLoginModule required username='u' password='p'")[1] == {
        "username": "u", "password": "p"}
    for bad in ('x.PlainLoginModule username="u";', 'x.P required username="u;',
                'x.P required username;', 'a.P required; b.Q required;'):
        with pytest.raises(ValueError) as e:
            parse_jaas(bad)
        assert '"u' not in str(e.value) and "u;" not in str(e.value)


def test_confluent_cloud_java_file(tmp_path) -> None:
    s = load_settings(_write(tmp_path, CONFLUENT_JAVA), env={})
    assert s.common() == {
        "bootstrap_servers": "pkc-n00kk.europe-west4.gcp.confluent.cloud:9092",
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "ABCDEFGH12345678", "sasl_plain_password": "cflt/Secret+Value==",
        "client_dns_lookup": "use_all_dns_ips"}
    assert set(s.ignored) == {"session.timeout.ms", "acks", "schema.registry.url",
                              "basic.auth.credentials.source", "basic.auth.user.info"}
    red = json.dumps(s.redacted())
    assert "cflt/Secret" not in red and "SR-secret" not in red
    assert s.redacted()["client"]["sasl_plain_password"] == "***"
    assert s.redacted()["sources"]["sasl_plain_password"].startswith("sasl.jaas.config in ")
    assert s.credentials_origin() == f"sasl.jaas.config in {tmp_path / 'client.properties'}:4"


def test_confluent_librdkafka_file_and_msk_scram_with_a_pem_trust_store(tmp_path) -> None:
    ca = _pem_ca(tmp_path)
    s = load_settings(_write(tmp_path, CONFLUENT_LIBRDKAFKA.format(ca=ca)), env={})
    assert s.client["sasl_mechanism"] == "PLAIN" and s.client["ssl_cafile"] == str(ca)
    assert s.client["sasl_plain_username"] == "ABCDEFGH12345678"
    # MSK's file with the store converted to PEM (a .pem file, no type given: sniffed)
    s = load_settings(_write(tmp_path, MSK_SCRAM.format(store=ca)), env={},
                      bootstrap_servers="b-1.msk:9096")
    assert s.common() == {"bootstrap_servers": "b-1.msk:9096", "security_protocol": "SASL_SSL",
                          "sasl_mechanism": "SCRAM-SHA-512", "ssl_cafile": str(ca),
                          "sasl_plain_username": "alice", "sasl_plain_password": "alice-secret"}


def test_msk_jks_trust_store_says_how_to_convert(tmp_path) -> None:
    jks = tmp_path / "kafka.client.truststore.jks"
    jks.write_bytes(b"\xfe\xed\xfe\xed\x00\x00\x00\x02")
    with pytest.raises(KafkaConfigError) as e:
        load_settings(_write(tmp_path, MSK_SCRAM.format(store=jks)), env={})
    msg = str(e.value)
    assert msg.startswith(f"ssl.truststore.location in {tmp_path / 'client.properties'}:3")
    assert "PEM only" in msg and "keytool -exportcert -rfc" in msg and "system CAs" in msg
    with pytest.raises(KafkaConfigError, match="PEM only"):
        load_settings(None, env={}, properties=[f"ssl.truststore.location={_pem_ca(tmp_path)}",
                                                "ssl.truststore.type=PKCS12"])


def test_pem_key_store_loads_as_kafka_python_loads_it(tmp_path) -> None:
    ca = _pem_ca(tmp_path)
    s = load_settings(None, env={}, properties=[
        "security.protocol=SSL", f"ssl.truststore.location={ca}", "ssl.truststore.type=PEM",
        f"ssl.keystore.location={tmp_path / 'client.pem'}", "ssl.keystore.type=PEM",
        "ssl.key.password=key-pw", "ssl.keystore.password=ignored",
        "ssl.endpoint.identification.algorithm="])
    c = s.client
    assert (c["ssl_cafile"], c["ssl_certfile"]) == (str(ca), str(tmp_path / "client.pem"))
    assert c["ssl_password"] == "key-pw" and c["ssl_check_hostname"] is False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)       # kafka-python's calls
    ctx.load_verify_locations(c["ssl_cafile"])
    ctx.load_cert_chain(certfile=c["ssl_certfile"], keyfile=c.get("ssl_keyfile"),
                        password=c["ssl_password"])
    assert "key-pw" not in json.dumps(s.redacted())


def test_msk_iam_file(tmp_path) -> None:
    s = load_settings(_write(tmp_path, MSK_IAM), env={})
    assert s.client == {"security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"}
    assert "sasl.client.callback.handler.class" in s.ignored
    bad = MSK_IAM.replace("required;", 'required awsProfileName="dev";')
    with pytest.raises(KafkaConfigError, match="awsProfileName of IAMLoginModule"):
        load_settings(_write(tmp_path, bad), env={})


# -- layers: file < environment < -X < --bootstrap-servers ---------------------------------------

def test_environment_and_command_line_override_the_file(tmp_path) -> None:
    f = _write(tmp_path, CONFLUENT_JAVA)
    env = {"MMALIGN_KAFKA_SASL_PLAIN_PASSWORD": "env-pw",               # kafka-python name
           "MMALIGN_KAFKA_SASL_JAAS_CONFIG": "org.apache.kafka.common.security.plain."
           "PlainLoginModule required username='env-user' password='env-pw';",  # dotted key
           "MMALIGN_KAFKA_REQUEST_TIMEOUT_MS": "7000", "MMALIGN_KAFKA_TOPIC_VIDEO": "v.env",
           "OTHER": "ignored"}
    s = load_settings(f, env=env)
    assert s.client["sasl_plain_username"] == "env-user"
    assert s.client["sasl_plain_password"] == "env-pw"
    assert s.client["request_timeout_ms"] == 7000 and s.topics["video"] == "v.env"
    assert s.credentials_origin() == ("MMALIGN_KAFKA_SASL_JAAS_CONFIG and "
                                      "MMALIGN_KAFKA_SASL_PLAIN_PASSWORD")
    s = load_settings(f, env=env, properties=["sasl.password=cli-pw", "request.timeout.ms=9000",
                                              "mmalign.deadletter.topic=dlq.cli"],
                      bootstrap_servers="arg:1")
    assert s.client["sasl_plain_password"] == "cli-pw"
    assert s.client["request_timeout_ms"] == 9000 and s.deadletter_topic == "dlq.cli"
    assert s.bootstrap_servers == "arg:1" and s.origins["bootstrap_servers"] == \
        "--bootstrap-servers"
    # MMALIGN_KAFKA_CONFIG names the file when --kafka-config does not
    s = load_settings(None, env={"MMALIGN_KAFKA_CONFIG": str(f)})
    assert s.client["sasl_plain_username"] == "ABCDEFGH12345678"


def test_yaml_client_section_takes_dotted_keys_too(tmp_path) -> None:
    f = _write(tmp_path, "bootstrap_servers: [a:1, b:2]\nclient:\n  security.protocol: SASL_SSL\n"
               "  sasl.mechanism: SCRAM-SHA-256\n  sasl_plain_username: u\n"
               "  sasl.password: p\n", "kafka.yaml")
    s = load_settings(f, env={})
    assert s.bootstrap_servers == "a:1,b:2"
    assert s.client == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                        "sasl_plain_username": "u", "sasl_plain_password": "p"}


# -- refusals: one sentence naming the key, never the secret -----------------------------------

@pytest.mark.parametrize("lines, words", [
    (["linger.ms=5"], ["linger.ms is not a Kafka client setting mmalign applies"]),
    (["sasl.mechanisim=PLAIN"], ["sasl.mechanisim", "did you mean sasl.mechanism?"]),
    (["acks=1"], ["acks=1 is not supported", "acks=all"]),
    (["group.id=g"], ["group.id is not supported", "--group-id"]),
    (["ssl.truststore.certificates=-----BEGIN CERTIFICATE-----"],
     ["ssl.truststore.certificates is not supported"]),
    (["enable.ssl.certificate.verification=false"], ["verification off is not supported"]),
    (["security.protocol=SASL_SSL", "sasl.mechanism=OAUTHBEARER", "sasl.jaas.config=org.apache."
      "kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"],
     ["OAuthBearerLoginModule is not supported", "token provider"]),
    (["security.protocol=SASL_SSL", "sasl.mechanism=GSSAPI", "sasl.jaas.config=com.sun."
      "security.auth.module.Krb5LoginModule required useKeyTab=true;"],
     ["Krb5LoginModule is not supported", "kinit"]),
    (["security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-256", "sasl.jaas.config=org.apache."
      "kafka.common.security.plain.PlainLoginModule required username=\"u\" "
      "password=\"jaas-Secret-9\";"],
     ["PlainLoginModule, which does not serve sasl.mechanism SCRAM-SHA-256"]),
    (["security.protocol=SASL_SSL", "sasl.jaas.config=org.apache.kafka.common.security.scram."
      "ScramLoginModule required username=\"u\" password=\"x\";"],
     ["needs sasl.mechanism (SCRAM-SHA-256 or SCRAM-SHA-512)"]),
    (["sasl.mechanism=PLAIN", "sasl.username=u", "sasl.password=x"],
     ["security.protocol is PLAINTEXT"]),
    (["security.protocol=SASL_SSL", "sasl.mechanism=PLAIN"], ["needs a user name and password"]),
    (["security.protocol=SASL_SSL", "sasl.mechanism=PLAIN", "sasl.jaas.config=org.apache.kafka."
      "common.security.plain.PlainLoginModule required username='{{ CLUSTER_API_KEY }}' "
      "password='{{ CLUSTER_API_SECRET }}';"], ["template placeholder"]),
    (["bootstrap.servers=<BootstrapBrokerString>"], ["template placeholder",
                                                    "<BootstrapBrokerString>"]),
    (["security.protocol=TLS"], ["'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"]),
    (["request.timeout.ms=soon"], ["'soon' is not an integer"]),
    (["sasl.username=a", "sasl_plain_username=b"], ["both set sasl_plain_username"]),
    (["security.protocol=SASL_SSL", "sasl.mechanism=PLAIN", f"sasl.password={PASSWORD}",
      "sasl.password=other-Secret-1"], ["both set sasl_plain_password"]),
])
def test_bad_keys_exit_2_naming_the_key(tmp_path, capsys, lines, words) -> None:
    f = _write(tmp_path, "\n".join(lines) + "\n")
    assert main(["deadletter", "inspect", "--kafka-config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mmalign deadletter: "), err
    for w in words:
        assert w in err, err
    for secret in (PASSWORD, "jaas-Secret-9", "other-Secret-1", "CLUSTER_API_SECRET"):
        assert secret not in err


def test_command_line_properties_and_variables_are_checked_too(capsys, monkeypatch) -> None:
    assert main(["deadletter", "inspect", "-X", "security.protocol"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["deadletter", "inspect", "-X", "sasl.kerberos.keytab=/k"]) == 2
    assert "-X sasl.kerberos.keytab: sasl.kerberos.keytab is not" in capsys.readouterr().err
    monkeypatch.setenv("MMALIGN_KAFKA_SASL_PASWORD", "x")
    assert main(["deadletter", "inspect"]) == 2
    assert "MMALIGN_KAFKA_SASL_PASWORD is not a Kafka setting" in capsys.readouterr().err


def test_every_kafka_command_takes_the_file_and_x(tmp_path) -> None:
    f = _write(tmp_path, CONFLUENT_JAVA)
    for argv in (["publish", "--manifest", "m.yaml"], ["deadletter", "replay"],
                 ["stream", "--manifest", "m.yaml", "--out", "o"]):
        ns = build_parser().parse_args([*argv, "--kafka-config", str(f), "-X", "client.id=me",
                                        "--kafka-property", "request.timeout.ms=5000"])
        s = kafka_config.settings_from_args(ns)
        assert s.client["client_id"] == "me" and s.client["request_timeout_ms"] == 5000
        assert s.client["sasl_plain_username"] == "ABCDEFGH12345678"


def test_refused_login_names_where_the_credentials_came_from(tmp_path, monkeypatch) -> None:
    s = load_settings(_write(tmp_path, CONFLUENT_JAVA), env={})
    monkeypatch.setattr(kafka_config._REFUSALS, "last", "Authentication failed")
    msg = kafka_config.auth_refusal(s)
    assert "refused the PLAIN login of user 'ABCDEFGH12345678' (Authentication failed)" in msg
    assert msg.endswith(f"check sasl.jaas.config in {tmp_path / 'client.properties'}:4")
    s = load_settings(None, env={"MMALIGN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                 "MMALIGN_KAFKA_SASL_MECHANISM": "PLAIN",
                                 "MMALIGN_KAFKA_SASL_PLAIN_USERNAME": "u",
                                 "MMALIGN_KAFKA_SASL_PLAIN_PASSWORD": "p"})
    assert kafka_config.auth_refusal(s).endswith(
        "check MMALIGN_KAFKA_SASL_PLAIN_USERNAME/_PASSWORD")


def test_clients_after_the_first_skip_the_broker_version_probe() -> None:
    made = []

    class Client:                       # a kafka-python client: probes when not given a version
        def __init__(self, **kw):
            made.append(kw)
            self.config = {**kw, "api_version": kw.get("api_version") or (4, 3)}

    s = KafkaSettings("probe-test-1:9092")
    first = s.make(Client, group_id="g")
    assert "api_version" not in made[0] and first.config["api_version"] == (4, 3)
    s.make(Client, acks="all")
    assert made[1] == {"bootstrap_servers": "probe-test-1:9092", "api_version": (4, 3),
                       "acks": "all"}
    # a version the user set wins; another cluster probes for itself
    KafkaSettings("probe-test-1:9092", client={"api_version": (2, 6)}).make(Client)
    assert made[2]["api_version"] == (2, 6)
    KafkaSettings("probe-test-2:9092").make(Client)
    assert "api_version" not in made[3]
