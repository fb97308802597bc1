"""docker-compose.yml agrees with the code's defaults: ports, topic names, versions, volumes,
and the app's command is a valid `mmalign` invocation. (No Docker daemon here: parsed.)"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import apache_beam as beam
import pytest
import yaml

from mmalign.encoders.feature_store import open_store
from mmalign.infra.flink_jobserver import DEFAULT_JOB_PORT, FLINK_MINOR
from mmalign.pipelines.cli import build_parser
from mmalign.pipelines.runners import COMPOSE_WORKER_POOL, runner_session
from mmalign.schemas.encoders import FeatureStoreSpec
from mmalign.schemas.kafka import DEADLETTER_TOPIC, MODALITY_TOPICS, KafkaSettings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _published(service: dict) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for spec in service.get("ports", []):
        host, container = str(spec).rsplit(":", 1)[-2:] if ":" in str(spec) else (spec, spec)
        out[int(container)] = int(host)
    return out


def _flag(cmd: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}="))


def test_every_component_is_there(services) -> None:
    assert {"kafka", "kafka-init", "redis", "jobmanager", "taskmanager", "beam-worker-pool",
            "jobserver", "app"} <= set(services)


def test_kafka_ports_listeners_and_topics_match_kafka_config(services) -> None:
    kafka = services["kafka"]
    host, port = KafkaSettings().bootstrap_servers.rsplit(":", 1)
    assert _published(kafka)[int(port)] == int(port)
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"          # KRaft, no ZooKeeper
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["HOST"] in (f"localhost:{port}", f"{host}:{port}")
    app_boot = services["app"]["environment"]["MMALIGN_KAFKA_BOOTSTRAP_SERVERS"]
    assert app_boot == advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    created = re.findall(r"for t in ([^;]+);", services["kafka-init"]["command"][0])[0].split()
    assert sorted(created) == sorted([*MODALITY_TOPICS.values(), DEADLETTER_TOPIC])
    assert app_boot in services["kafka-init"]["command"][0]


def test_redis_port_is_the_feature_store_default(services) -> None:
    for default in (FeatureStoreSpec.model_fields["redis"].default,
                    inspect.signature(open_store).parameters["redis_connection"].default):
        port = int(default.split(",")[0].rsplit(":", 1)[1])
        assert _published(services["redis"])[port] == port


def test_flink_job_server_and_worker_pool_are_wired(services) -> None:
    js = services["jobserver"]
    assert js["image"] == f"apache/beam_flink{FLINK_MINOR}_job_server:{beam.__version__}"
    for name in ("jobmanager", "taskmanager"):
        assert services[name]["image"].startswith(f"flink:{FLINK_MINOR}")
    assert _flag(js["command"], "job-port") == str(DEFAULT_JOB_PORT)
    assert _published(js)[DEFAULT_JOB_PORT] == DEFAULT_JOB_PORT
    master_host, master_port = _flag(js["command"], "flink-master").split(":")
    assert master_host == "jobmanager" and int(master_port) in _published(services["jobmanager"])
    artifacts = _flag(js["command"], "artifacts-dir")
    for name in ("jobserver", "taskmanager", "beam-worker-pool"):   # one staged-artifact store
        assert f"artifacts:{artifacts}" in services[name]["volumes"], name
    pool = services["beam-worker-pool"]
    assert pool["network_mode"] == "service:taskmanager" and pool["command"] == ["--worker_pool"]
    assert COMPOSE_WORKER_POOL.split(":")[0] == "localhost"
    assert pool["image"] == services["app"]["image"]
    assert (ROOT / pool["build"]["dockerfile"]).is_file()


def test_app_command_is_a_valid_mmalign_flink_run(services) -> None:
    app = services["app"]
    assert app["entrypoint"] == ["mmalign"]
    ns = build_parser().parse_args(app["command"])
    assert ns.runner == "flink"
    with runner_session(ns.runner, ns.pipeline_args) as (runner, args):
        assert runner == "PortableRunner"
    js_port = _flag(args, "job_endpoint").split(":")
    assert js_port == ["jobserver", str(DEFAULT_JOB_PORT)]
    assert _flag(args, "artifact_endpoint") == "jobserver:" + _flag(
        services["jobserver"]["command"], "artifact-port")
    assert _flag(args, "environment_type") == "EXTERNAL"
    assert _flag(args, "environment_config") == COMPOSE_WORKER_POOL
    out = Path(ns.out)
    data = {v.split(":")[1] for v in app["volumes"] if v.startswith("data:")}
    assert any(out.is_relative_to(d) for d in data)
    assert data <= {v.split(":")[1] for v in services["beam-worker-pool"]["volumes"]}


def test_observability_services_are_wired(services) -> None:
    """Prometheus reads deploy/prometheus (its scrape targets are the compose services' metrics
    ports), Grafana is provisioned from deploy/grafana, the app pushes to the Pushgateway and
    the stream service serves /metrics where Prometheus scrapes it."""
    prom = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for rule_file in cfg["rule_files"]:
        assert (ROOT / "deploy" / "prometheus" / rule_file).is_file()
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0]
               for j in cfg["scrape_configs"]}
    assert _published(prom)[9090] == 9090
    gw_host, gw_port = targets["pushgateway"].split(":")
    assert gw_host in services and int(gw_port) in _published(services[gw_host])

    app = build_parser().parse_args(services["app"]["command"])
    assert app.pushgateway == f"http://{targets['pushgateway']}"
    assert "pushgateway" in services["app"]["depends_on"]

    st = services["stream"]
    ns = build_parser().parse_args(st["command"])
    assert ns.command == "stream"
    host, port = targets["mmalign-stream"].split(":")
    # the stream service lives in the taskmanager's network: scraped under that name
    assert st["network_mode"] == f"service:{host}" and ns.metrics_port[1] == int(port)
    assert services["app"]["environment"] == st["environment"]

    graf = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in graf["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/mmalign.yml")
                          .read_text())["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == prov["options"]["path"]
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
                        .read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    for path in (ROOT / "deploy" / "grafana").rglob("*"):
        assert path.is_dir() or path.suffix in (".json", ".yml"), path
