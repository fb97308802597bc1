"""The Prometheus side as committed: promtool checks the rule file and runs its unit tests
(deploy/prometheus/alerts_test.yml), every Grafana panel's query names a series the exporter
serves (schemas/metrics.py's families, as prometheus-client writes them) or a recording rule,
with labels those series have, and the Prometheus/Grafana provisioning files point at them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mmalign.pipelines import observe
from mmalign.pipelines.slo import load_slo
from mmalign.schemas import metrics

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "mmalign.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; "
                             "scripts/system-deps.sh installs it, CI has it)")
# labels Prometheus adds to every scraped series; PromQL words that are not series names
TARGET_LABELS = {"job", "instance"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "and", "or", "unless", "inf", "nan"}


# ---------------------------------------------------------------- promtool


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=PROM, capture_output=True, text=True,
                          timeout=120)


@needs_promtool
def test_promtool_check_rules() -> None:
    p = promtool("check", "rules", "alerts.yml")
    assert p.returncode == 0, p.stdout + p.stderr
    n = sum(len(g["rules"]) for g in observe.rules_document(load_slo())["groups"])
    assert f"SUCCESS: {n} rules found" in p.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    p = promtool("test", "rules", "alerts_test.yml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


@needs_promtool
def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path) -> None:
    # the rule tests can fail: the same tests against rules with another SLO target
    doc = yaml.safe_load((ROOT / "deploy" / "slo.yaml").read_text())
    doc["availability"]["sensor"] = {"target": 0.9, "for": "30m"}    # imu would fire late
    (tmp_path / "slo.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "alerts.yml").write_text(observe.rules_yaml(load_slo(tmp_path / "slo.yaml")))
    shutil.copy(PROM / "alerts_test.yml", tmp_path)
    p = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "MmalignModalityUnavailable" in p.stdout + p.stderr


@needs_promtool
def test_promtool_check_config() -> None:
    p = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------- what the exporter serves


def _labels_for(fam: metrics.Family) -> dict:
    return {k: f"x{i}" for i, k in enumerate(fam.labels)}


@pytest.fixture(scope="module")
def served() -> dict[str, set[str]]:
    """series name -> its label names, as prometheus-client writes the mirror with one series
    of every family."""
    metrics.reset_local()
    try:
        for fam in metrics.FAMILIES:
            if fam.kind == metrics.COUNTER:
                fam.inc(2, **_labels_for(fam))
            elif fam.kind == metrics.GAUGE:
                fam.set(0.5, **_labels_for(fam))
            else:
                fam.observe_many([fam.buckets[0] / 2, fam.buckets[-1] * 2], **_labels_for(fam))
        text = observe.exposition()
    finally:
        metrics.reset_local()
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def test_the_exporter_serves_exactly_the_names_it_declares(served) -> None:
    assert set(served) == set(observe.exported_names())
    for fam in metrics.FAMILIES:
        for name in fam.exposed():
            extra = {"le"} if name.endswith("_bucket") else set()
            assert served[name] == set(fam.labels) | extra, name
    assert {"mmalign_stage_seconds_bucket", "mmalign_stage_seconds_count",
            "mmalign_stage_seconds_sum", "mmalign_dead_letters_total"} <= set(served)


def _recorded() -> dict[str, set[str]]:
    """recording rule -> the labels it keeps (its outermost ``by (...)``)."""
    out = {}
    for r in observe.recording_rules(load_slo()):
        groups = re.findall(r"by \(([^)]*)\)", r["expr"])
        out[r["record"]] = {g.strip() for g in groups[0].split(",")} - {"le"}
    return out


# ---------------------------------------------------------------- PromQL


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names it matches on) of every selector in a PromQL expression;
    label names of ``by``/``without``/``on`` groupings are attached to every name too, as
    ("", labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)                        # range selectors
    expr = re.sub(r"(?<![\w:])\d[\d.]*(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)*", " ", expr)  # numbers
    out: list[tuple[str, set[str]]] = []
    for m in re.finditer(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        out.append(("", {x.strip() for x in m.group(2).split(",") if x.strip()}))
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    pos = 0
    token = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\}|\()?")
    while (m := token.search(expr, pos)) is not None:
        pos = m.end()
        name, after = m.group(1), m.group(2) or ""
        if after == "(" or name.lower() in PROMQL_WORDS or name.startswith("__"):
            continue                                               # a function, a keyword
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", after))
        out.append((name, labels))
    return out


def test_selectors_parser() -> None:
    got = selectors('histogram_quantile(0.95, sum by (stream, le) (rate(x_bucket{job=~"$j",'
                    ' a!="b"}[5m]))) / y offset 5m and ALERTS{alertstate="firing"}')
    assert ("x_bucket", {"job", "a"}) in got and ("y", set()) in got
    assert ("ALERTS", {"alertstate"}) in got and ("", {"stream", "le"}) in got
    assert not any(n in ("histogram_quantile", "sum", "rate", "offset") for n, _ in got)


def _panels(d: dict):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def test_every_dashboard_query_names_an_exported_series(served) -> None:
    d = json.loads(DASHBOARD.read_text())
    names = {n: labels | TARGET_LABELS for n, labels in served.items()}
    names.update({n: labels | TARGET_LABELS for n, labels in _recorded().items()})
    names["ALERTS"] = {"alertname", "alertstate", "severity", "slo", "modality", "session",
                       "stream"} | TARGET_LABELS
    queries = []
    for p in _panels(d):
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        queries += [(p["title"], t["expr"]) for t in p["targets"]]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            assert inner, q
            queries.append((f"variable {v['name']}", inner.group(1)))
            assert inner.group(2) in names[selectors(inner.group(1))[0][0]]
    used = set()
    for title, q in queries:
        found = selectors(q)
        series = [(n, ls) for n, ls in found if n]
        assert series, f"{title}: no series in {q!r}"
        for n, ls in series:
            assert n in names, f"{title}: {n} is neither exported nor recorded"
            assert ls <= names[n], f"{title}: {n} has no labels {ls - names[n]}"
            used.add(n)
        # grouping labels exist on some series of the query
        have = set().union(*(names[n] for n, _ in series)) | {"le"}
        for n, ls in found:
            if not n:
                assert ls <= have, f"{title}: groups by {ls - have}"
    # the SLIs the issue names are on the dashboard
    assert {"mmalign:stream_availability:ratio", "mmalign_alignment_residual_seconds_bucket",
            "mmalign_dead_letters_total", "mmalign_stage_seconds_bucket",
            "mmalign_output_latency_seconds_bucket", "mmalign_watermark_lag_seconds",
            "mmalign_kafka_consumer_lag", "mmalign_drift_mmd", "mmalign_stage_events_total",
            "mmalign_embeddings_total"} <= used


def test_a_query_with_an_unknown_name_is_caught(served) -> None:
    # the check above can fail: a misspelt series is no exported name
    names = set(served) | set(_recorded())
    assert "mmalign_dead_letter_total" not in names
    assert selectors('rate(mmalign_dead_letter_total{job="x"}[5m])')[0][0] not in names


def test_every_rule_expression_names_exported_series(served) -> None:
    names = set(served) | set(_recorded())
    for g in observe.rules_document(load_slo())["groups"]:
        for r in g["rules"]:
            for n, _ in selectors(r["expr"]):
                assert not n or n in names, (r.get("alert") or r.get("record"), n)


# ---------------------------------------------------------------- provisioning


def test_prometheus_config_loads_the_rules_and_grafana_points_at_prometheus() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert {"mmalign-stream", "mmalign-backfill", "pushgateway"} <= jobs
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
                        .read_text())["datasources"][0]
    d = json.loads(DASHBOARD.read_text())
    current = next(v for v in d["templating"]["list"] if v["name"] == "datasource")
    assert ds["uid"] == current["current"]["value"] and ds["type"] == "prometheus"
    assert ds["jsonData"]["timeInterval"] == cfg["global"]["scrape_interval"]
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/mmalign.yml")
                          .read_text())["providers"][0]
    assert prov["options"]["path"] == "/var/lib/grafana/dashboards"
