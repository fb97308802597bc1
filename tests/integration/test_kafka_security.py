"""Issue 3: SASL/SSL settings reach every Kafka client, secrets never show.

On two real brokers -- client listener SASL_PLAINTEXT/PLAIN (fixture ``sasl_kafka_broker``) and
SASL_SSL/SCRAM-SHA-512 with the broker's own CA (``scram_tls_kafka_broker``) -- with the
credentials and the CA file ONLY in ``MMALIGN_KAFKA_*`` variables, the CLIs run as a user runs them:
``mmalign publish`` -> ``mmalign stream`` (Prism; its reader builds its consumer on the worker)
-> ``mmalign deadletter inspect``. A wrong password makes each fail with one sentence and a
non-zero exit; the password never appears in any output or file of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path

import pytest

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.kafka import MODALITY_TOPICS, load_settings
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import run_mmalign
from tests.e2e_checks import assert_rows_equal

USER = "mmalign-app"
WRONG = "not-the-Pw-93ad"


_mmalign = partial(run_mmalign, timeout=300)


def _user_env(broker, tag: str, password: str) -> dict[str, str]:
    """The process environment a user would set: no other MMALIGN_KAFKA_* leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMALIGN_KAFKA_")}
    if broker.tls:
        env["MMALIGN_KAFKA_SSL_CAFILE"] = str(broker.ca_file)
    env.update({
        "MMALIGN_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "MMALIGN_KAFKA_SECURITY_PROTOCOL": broker.security_protocol,
        "MMALIGN_KAFKA_SASL_MECHANISM": broker.sasl_mechanism,
        "MMALIGN_KAFKA_SASL_PLAIN_USERNAME": USER,
        "MMALIGN_KAFKA_SASL_PLAIN_PASSWORD": password,
        "MMALIGN_KAFKA_DEADLETTER_TOPIC": f"dlq.{tag}",
        **{f"MMALIGN_KAFKA_TOPIC_{m.upper()}": f"{t}.{tag}" for m, t in MODALITY_TOPICS.items()},
    })
    return env


@pytest.fixture(scope="module", params=["sasl_kafka_broker", "scram_tls_kafka_broker"],
                ids=["sasl-plaintext-plain", "sasl-ssl-scram"])
def secured(request, tmp_path_factory):
    broker = request.getfixturevalue(request.param)
    password = broker.sasl_users[USER]
    tmp = tmp_path_factory.mktemp("sasl")
    manifest = generate_recording(tmp / "rec", seed=11, duration_s=6.0)
    backfill.run([manifest], tmp / "batch", run_id="batch")
    tag = uuid.uuid4().hex[:8]
    env = _user_env(broker, tag, password)
    for k, topic in env.items():
        if k.startswith("MMALIGN_KAFKA_TOPIC_") or k == "MMALIGN_KAFKA_DEADLETTER_TOPIC":
            broker.create_topic(topic, 1)
    procs = {
        "publish": _mmalign("-v", "publish", "--manifest", str(manifest), "--json", env=env),
        "stream": _mmalign("-v", "stream", "--manifest", str(manifest), "--out",
                           str(tmp / "stream"), "--group-id", f"g-{tag}",
                           "--stop-after-idle", "3", "--json", env=env),
        "inspect": _mmalign("deadletter", "inspect", "--json", env=env),
        "inspect-v": _mmalign("-v", "deadletter", "inspect", env=env),
    }
    # wrong password: all three at once, each bounded by the client's bootstrap timeout; a
    # short reconnect backoff so kafka-python's first attempts (which end in a plain disconnect)
    # do not back off past the broker's refusal
    bad_env = {**env, "MMALIGN_KAFKA_SASL_PLAIN_PASSWORD": WRONG,
               "MMALIGN_KAFKA_BOOTSTRAP_TIMEOUT_MS": "60000",
               "MMALIGN_KAFKA_RECONNECT_BACKOFF_MAX_MS": "500"}
    cmds = {
        "bad-publish": ["publish", "--manifest", str(manifest)],
        "bad-stream": ["stream", "--manifest", str(manifest), "--out", str(tmp / "bad"),
                       "--stop-after-idle", "3"],
        "bad-inspect": ["deadletter", "inspect", "--timeout", "2"],
    }
    running = {k: subprocess.Popen([sys.executable, "-m", "mmalign.pipelines.cli", *c], env=bad_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for k, c in cmds.items()}
    for k, p in running.items():
        try:
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"{k} with a wrong password still ran after 180 s: {err[-500:]}")
        procs[k] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return {"tmp": tmp, "env": env, "password": password, "procs": procs, "broker": broker}


@pytest.mark.slow
def test_publish_stream_inspect_succeed_with_env_credentials_only(secured):
    procs = secured["procs"]
    for name in ("publish", "stream", "inspect", "inspect-v"):
        assert procs[name].returncode == 0, f"{name}: {procs[name].stderr[-2000:]}"
    report = json.loads(procs["publish"].stdout)
    assert sum(report["messages"].values()) > 10
    summary = json.loads(procs["stream"].stdout)
    broker = secured["broker"]
    assert summary["kafka"]["client"]["sasl_plain_password"] == "***"
    assert summary["kafka"]["client"]["sasl_plain_username"] == USER
    assert summary["kafka"]["client"]["security_protocol"] == broker.security_protocol
    assert summary["kafka"]["client"]["sasl_mechanism"] == broker.sasl_mechanism
    assert summary["counters"].get("sink.aligned.rows", 0) > 100


@pytest.mark.slow
def test_streamed_rows_equal_backfill_rows(secured):
    assert_rows_equal(read_aligned(secured["tmp"] / "stream" / "aligned"),
                      read_aligned(secured["tmp"] / "batch" / "aligned"))


@pytest.mark.slow
def test_deadletter_inspect_reads_every_letter_through_sasl(secured):
    # decode letters (sent by publish) + validate letters (sent by the stream's DLQ producer)
    expected = read_dead_letters(secured["tmp"] / "batch" / "deadletter").num_rows
    out = json.loads(secured["procs"]["inspect"].stdout)
    assert expected >= 2 and out["records"] == expected
    assert any(k.startswith("decode/") for k in out["by_reason"])
    assert any(k.startswith("validate/") for k in out["by_reason"])
    assert f"{expected} dead letters" in secured["procs"]["inspect-v"].stdout


@pytest.mark.slow
def test_wrong_password_fails_with_one_clear_sentence(secured):
    for name in ("bad-publish", "bad-stream", "bad-inspect"):
        p = secured["procs"][name]
        err = p.stderr.strip()
        assert p.returncode == 1, f"{name}: rc {p.returncode}: {err[-1000:]}"
        # publish decodes first: the recording's corrupt PNG makes libpng print one line
        lines = [x for x in err.splitlines() if not x.startswith("libpng error:")]
        assert len(lines) == 1 and "Traceback" not in err, f"{name}: {err[-1000:]}"
        assert lines[0].startswith(f"mmalign {name[4:].replace('inspect', 'deadletter')}: ")
        mechanism = secured["broker"].sasl_mechanism
        assert f"refused the {mechanism} login of user '{USER}'" in lines[0], err
        assert "MMALIGN_KAFKA_SASL_PLAIN_USERNAME/_PASSWORD" in lines[0], err
        assert WRONG not in err + p.stdout
    assert not (secured["tmp"] / "bad" / "aligned").exists()


@pytest.mark.slow
def test_password_never_in_outputs_logs_or_files(secured):
    pw = secured["password"]
    for name, p in secured["procs"].items():
        assert pw not in p.stdout and pw not in p.stderr, name
    # -v really shows the clients' logs (so the check above covers them)
    assert "kafka." in secured["procs"]["publish"].stderr
    leaked = [f for f in Path(secured["tmp"]).rglob("*")
              if f.is_file() and pw.encode() in f.read_bytes()]
    assert leaked == []
    files = {f.name for f in (secured["tmp"] / "stream").rglob("*") if f.is_file()}
    assert any(n.endswith(".json") for n in files)     # the run summary was among those read


def test_load_settings_yaml_then_env_wins_and_redacted_masks(tmp_path):
    cfg = tmp_path / "kafka.yaml"
    cfg.write_text(
        "bootstrap_servers: file-host:9092\n"
        "deadletter_topic: dlq.file\n"
        "topics: {video: v.file}\n"
        "client:\n"
        "  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_plain_username: file-user\n"
        "  sasl_plain_password: file-pw\n"
        "  ssl_cafile: /etc/ca.pem\n"
        "  ssl_password: key-pw\n")
    env = {"MMALIGN_KAFKA_SASL_PLAIN_PASSWORD": "env-pw",
           "MMALIGN_KAFKA_TOPIC_AUDIO": "a.env", "MMALIGN_KAFKA_REQUEST_TIMEOUT_MS": "7000",
           "MMALIGN_KAFKA_BOOTSTRAP_TIMEOUT_MS": "4000", "OTHER": "ignored"}
    s = load_settings(cfg, env=env)
    assert s.bootstrap_servers == "file-host:9092" and s.deadletter_topic == "dlq.file"
    assert s.topics["video"] == "v.file" and s.topics["audio"] == "a.env"
    assert s.topics["text"] == MODALITY_TOPICS["text"]
    common = s.common()
    assert common["sasl_plain_password"] == "env-pw"          # env beats the file
    assert common["sasl_plain_username"] == "file-user"       # the file fills the rest
    assert common["security_protocol"] == "SASL_SSL" and common["ssl_cafile"] == "/etc/ca.pem"
    assert common["request_timeout_ms"] == 7000 and common["bootstrap_timeout_ms"] == 4000
    assert load_settings(cfg, env={"MMALIGN_KAFKA_BOOTSTRAP_SERVERS": "env-host:1"},
                         bootstrap_servers="arg-host:2").bootstrap_servers == "arg-host:2"
    red = s.redacted()
    assert red["client"]["sasl_plain_password"] == "***"
    assert red["client"]["ssl_password"] == "***"
    assert red["client"]["sasl_plain_username"] == "file-user"
    text = json.dumps(red)
    assert "env-pw" not in text and "file-pw" not in text and "key-pw" not in text
    assert s.common()["sasl_plain_password"] == "env-pw"      # redacted() copies, never mutates


# -- a client.properties file, as Amazon MSK and Confluent Cloud hand them out -----------------

CLIENT_PROPERTIES = """\
# Amazon MSK, SASL/SCRAM (client.properties as in the MSK developer guide; the trust store
# exported to PEM, which is what kafka-python reads)
bootstrap.servers={bootstrap}
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
ssl.truststore.location={ca}
ssl.truststore.type=PEM
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
    username="{user}" \\
    password="{password}";

# What Confluent Cloud's Java client snippet adds
# Required for correctness in Apache Kafka clients prior to 2.6
client.dns.lookup=use_all_dns_ips
# Best practice for higher availability in Apache Kafka clients prior to 3.0
session.timeout.ms=45000
# Best practice for Kafka producer to prevent data loss
acks=all
# Required connection configs for Confluent Cloud Schema Registry
schema.registry.url=https://psrc-00000.europe-west4.gcp.confluent.cloud
basic.auth.credentials.source=USER_INFO
basic.auth.user.info=SRKEY:sr-Secret-0000
"""


@pytest.fixture(scope="module")
def properties_run(scram_tls_kafka_broker, tmp_path_factory):
    """publish -> stream -> deadletter inspect as subprocesses with the SASL_SSL/SCRAM broker's
    settings ONLY in a client.properties file (--kafka-config); topics as -X mmalign keys;
    then one inspect with a file holding a wrong password."""
    broker = scram_tls_kafka_broker
    password = broker.sasl_users[USER]
    tmp = tmp_path_factory.mktemp("props")
    manifest = generate_recording(tmp / "rec", seed=13, duration_s=6.0)
    backfill.run([manifest], tmp / "batch", run_id="batch")
    tag = uuid.uuid4().hex[:8]
    topics = [f"-Xmmalign.topic.{m}={t}.{tag}" for m, t in MODALITY_TOPICS.items()]
    topics.append(f"--kafka-property=mmalign.deadletter.topic=dlq.{tag}")
    for t in [*(f"{t}.{tag}" for t in MODALITY_TOPICS.values()), f"dlq.{tag}"]:
        broker.create_topic(t, 1)
    conf = tmp / "secrets" / "client.properties"
    conf.parent.mkdir()
    conf.write_text(CLIENT_PROPERTIES.format(bootstrap=broker.bootstrap_servers, ca=broker.ca_file,
                                             user=USER, password=password))
    bad = tmp / "secrets" / "wrong.properties"
    bad.write_text(CLIENT_PROPERTIES.format(bootstrap=broker.bootstrap_servers, ca=broker.ca_file,
                                            user=USER, password=WRONG))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMALIGN_KAFKA_")}
    kafka = ["--kafka-config", str(conf), *topics]
    procs = {
        "publish": _mmalign("-v", "publish", "--manifest", manifest, "--json", *kafka, env=env),
        "stream": _mmalign("stream", "--manifest", manifest, "--out", tmp / "stream",
                           "--group-id", f"g-{tag}", "--stop-after-idle", "3", "--json",
                           *kafka, env=env),
        "inspect": _mmalign("-v", "deadletter", "inspect", "--json", *kafka, env=env),
        "bad-inspect": _mmalign("deadletter", "inspect", "--timeout", "2", "--kafka-config",
                                bad, "-X", "bootstrap_timeout_ms=60000",
                                "-X", "reconnect.backoff.max.ms=500", *topics, env=env),
    }
    return {"tmp": tmp, "procs": procs, "password": password, "conf": conf, "bad": bad}


@pytest.mark.slow
def test_client_properties_file_runs_publish_stream_inspect(properties_run):
    procs, tmp = properties_run["procs"], properties_run["tmp"]
    for name in ("publish", "stream", "inspect"):
        assert procs[name].returncode == 0, f"{name}: {procs[name].stderr[-2000:]}"
    assert_rows_equal(read_aligned(tmp / "stream" / "aligned"),
                      read_aligned(tmp / "batch" / "aligned"))
    kafka = json.loads(procs["stream"].stdout)["kafka"]
    assert kafka["client"] == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                               "ssl_cafile": kafka["client"]["ssl_cafile"],
                               "sasl_plain_username": USER, "sasl_plain_password": "***",
                               "client_dns_lookup": "use_all_dns_ips"}
    conf = properties_run["conf"]
    assert kafka["sources"]["sasl_plain_password"] == f"sasl.jaas.config in {conf}:8"
    assert kafka["sources"]["ssl_cafile"] == f"ssl.truststore.location in {conf}:6"
    assert set(kafka["ignored"]) == {"session.timeout.ms", "acks", "schema.registry.url",
                                     "basic.auth.credentials.source", "basic.auth.user.info"}
    expected = read_dead_letters(tmp / "batch" / "deadletter").num_rows
    assert json.loads(procs["inspect"].stdout)["records"] == expected


@pytest.mark.slow
def test_client_properties_wrong_password_names_the_file_line(properties_run):
    p = properties_run["procs"]["bad-inspect"]
    err = p.stderr.strip()
    assert p.returncode == 1 and len(err.splitlines()) == 1, err[-1000:]
    assert f"refused the SCRAM-SHA-512 login of user '{USER}'" in err
    assert err.endswith(f"check sasl.jaas.config in {properties_run['bad']}:8")
    assert WRONG not in err + p.stdout


@pytest.mark.slow
def test_client_properties_secrets_never_leave_the_file(properties_run):
    secrets = (properties_run["password"], "sr-Secret-0000")
    for name, p in properties_run["procs"].items():
        for s in secrets:
            assert s not in p.stdout and s not in p.stderr, name
    assert "kafka." in properties_run["procs"]["publish"].stderr       # -v showed the logs
    leaked = [f for f in Path(properties_run["tmp"]).rglob("*")
              if f.is_file() and f.parent.name != "secrets"
              and any(s.encode() in f.read_bytes() for s in secrets)]
    assert leaked == []
