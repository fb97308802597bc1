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
               "MMALIGN_KAFKA_BOOTSTRAP_TIMEOUT_MS": "20000",
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
