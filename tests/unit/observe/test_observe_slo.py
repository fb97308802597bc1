"""One SLO file (deploy/slo.yaml) drives the alert rules (deploy/prometheus/alerts.yml),
align-check's thresholds and README's SLO table: the three agree with it and with each other,
and a changed SLO file changes all three."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mmalign.pipelines import observe
from mmalign.pipelines.align_check import load_thresholds
from mmalign.pipelines.align_report import Thresholds
from mmalign.pipelines.slo import load_slo, seconds, slo_table
from mmalign.schemas.chunk import MODALITIES
from mmalign.schemas.manifest import ManifestError

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SLO = load_slo()


def _alerts(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for g in doc["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                out.setdefault(r["alert"], []).append(r)
    return out


def test_committed_alert_rules_are_generated_from_the_slo_file(capsys) -> None:
    assert ALERTS.read_text() == observe.rules_yaml(SLO)
    assert observe.main(["rules"]) == 0
    assert capsys.readouterr().out == ALERTS.read_text()


def test_readme_table_is_generated_from_the_slo_file() -> None:
    readme = (ROOT / "README.md").read_text()
    assert slo_table(SLO) in readme


def test_alerts_thresholds_and_table_agree_per_modality() -> None:
    """Read back from the three artefacts (not from the code that made them)."""
    rules = _alerts(yaml.safe_load(ALERTS.read_text()))
    table = (ROOT / "README.md").read_text()
    th = load_thresholds(None, {k: None for k in Thresholds.model_fields})
    by_mod = {r["labels"]["modality"]: r for r in rules["MmalignModalityUnavailable"]}
    for mod in MODALITIES:
        target = SLO.availability_target(mod)
        if target is None:
            assert mod not in by_mod
            assert f"| availability, {mod} streams | none" in table
            continue
        rule = by_mod[mod]
        expr_target = float(re.fullmatch(
            rf'mmalign:stream_availability:ratio\{{modality="{mod}"\}} < ([0-9.]+)',
            rule["expr"]).group(1))
        assert expr_target == target == float(rule["labels"]["objective"])
        assert rule["for"] == SLO.availability[mod].for_
        assert th.missing_threshold(mod) == pytest.approx(1 - expr_target)
        assert f"| availability, {mod} streams | >= {target:.0%} of ticks with a value" in table
    ratio = rules["MmalignDeadLetterRatioHigh"][0]
    assert float(ratio["expr"].rsplit(">", 1)[1]) == th.max_dead_rate
    assert f"<= {th.max_dead_rate:.0%} of records in" in table
    dr = rules["MmalignEmbeddingDrift"][0]["expr"]
    assert f"mmalign_drift_mmd > {th.max_drift_mmd:g}" in dr
    assert f"mmalign_drift_p_value < {th.max_drift_p:g}" in dr
    assert f"mmalign_drift_samples >= {int(th.min_drift_samples)}" in dr
    assert f"MMD² > {th.max_drift_mmd:g} and p < {th.max_drift_p:g}" in table


def test_align_check_options_still_override_the_slo() -> None:
    th = load_thresholds(None, {"max_missing": 0.3, "max_dead_rate": None})
    assert th.missing_threshold("video") == 0.3 and th.missing_threshold("text") == 0.3
    default = Thresholds()
    assert default.missing_threshold("text") == default.max_missing   # no target: the default


def test_a_changed_slo_file_changes_the_rules_and_the_table(tmp_path) -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "slo.yaml").read_text())
    doc["availability"]["sensor"] = {"target": 0.75, "for": "2m"}
    doc["availability"]["audio"] = None
    doc["dead_letters"]["max_ratio"] = 0.2
    p = tmp_path / "slo.yaml"
    p.write_text(yaml.safe_dump(doc))
    slo = load_slo(p)
    rules = _alerts(observe.rules_document(slo))
    mods = {r["labels"]["modality"]: r for r in rules["MmalignModalityUnavailable"]}
    assert "audio" not in mods and mods["sensor"]["for"] == "2m"
    assert mods["sensor"]["expr"].endswith("< 0.75")
    assert rules["MmalignDeadLetterRatioHigh"][0]["expr"].endswith("> 0.2")
    table = slo_table(slo)
    assert "| availability, sensor streams | >= 75% of ticks with a value | 2m |" in table
    assert "| availability, audio streams | none" in table
    assert observe.rules_yaml(slo) != ALERTS.read_text()


@pytest.mark.parametrize("change, field", [
    ({"availability": {"smell": {"target": 0.9}}}, "availability"),
    ({"availability": {"video": {"target": 1.5}}}, "availability.video.target"),
    ({"window": "5 minutes"}, "window"),
    ({"drift": {"permutations": 3}}, "drift.permutations"),
    ({"bogus": 1}, "bogus"),
])
def test_a_bad_slo_file_names_the_field(tmp_path, change, field) -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "slo.yaml").read_text())
    doc.update(change)
    p = tmp_path / "slo.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ManifestError, match=re.escape(f"field '{field}")):
        load_slo(p)


def test_durations() -> None:
    assert seconds("5m") == 300 and seconds("1h30m") == 5400 and seconds("250ms") == 0.25
    for bad in ("5", "m5", "5 m", "1x"):
        with pytest.raises(ValueError):
            seconds(bad)
