"""The service-level objectives (deploy/slo.yaml, packaged with mmalign): one file whose
targets align-check, the Prometheus alert rules (pipelines/observe.py ``alert_rules``) and
README's table (``slo_table``) all read, so the three never disagree.

    slo = load_slo()                       # the packaged file, or load_slo("my-slo.yaml")
    slo.availability_target("video")       # 0.9; None for a modality without one (text)
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmalign.schemas.chunk import MODALITIES
from mmalign.schemas.manifest import ManifestError

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "deploy" / "slo.yaml"
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``, ``10s``) in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a duration like 30s, 5m or 1h")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


class _Duration(BaseModel):
    model_config = _STRICT

    @field_validator("for_", "window", check_fields=False)
    @classmethod
    def _is_duration(cls, v: str) -> str:
        seconds(v)
        return v


class Availability(_Duration):
    target: float = Field(gt=0, le=1)
    for_: str = Field("5m", alias="for")


class DeadLetters(_Duration):
    max_ratio: float = Field(0.05, ge=0, le=1)
    for_: str = Field("5m", alias="for")
    spike_factor: float = Field(5.0, gt=1)
    spike_min_per_s: float = Field(1.0, ge=0)


class WatermarkLag(_Duration):
    max_seconds: float = Field(60.0, gt=0)
    for_: str = Field("5m", alias="for")


class ConsumerLag(_Duration):
    min_messages: int = Field(1000, ge=0)
    for_: str = Field("10m", alias="for")


class Drift(_Duration):
    max_mmd: float = Field(0.05, gt=0)
    max_p_value: float = Field(0.01, gt=0, le=1)
    min_samples: int = Field(30, ge=5)
    max_samples: int = Field(300, ge=10)
    permutations: int = Field(200, ge=20)
    for_: str = Field("15m", alias="for")


class Slo(_Duration):
    version: int = 1
    window: str = "5m"
    availability: dict[str, Availability | None]
    dead_letters: DeadLetters = DeadLetters()
    watermark_lag: WatermarkLag = WatermarkLag()
    consumer_lag: ConsumerLag = ConsumerLag()
    drift: Drift = Drift()

    @field_validator("availability")
    @classmethod
    def _modalities(cls, v: dict) -> dict:
        unknown = set(v) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use {list(MODALITIES)}")
        return v

    def availability_target(self, modality: str) -> float | None:
        a = self.availability.get(modality)
        return a.target if a is not None else None


def load_slo(path: str | Path | None = None) -> Slo:
    """The SLO file (default: the packaged deploy/slo.yaml); a bad file is a ManifestError
    (exit 2) naming the field."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ManifestError(f"SLO file {p}: cannot be read ({type(e).__name__}: {e}); give a "
                            "YAML file like deploy/slo.yaml") from None
    try:
        return Slo.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as e:
        err = e.errors()[0]
        raise ManifestError(f"SLO file {p}: field '{'.'.join(map(str, err['loc']))}': "
                            f"{err['msg']}; see deploy/slo.yaml for the fields") from None


def slo_table(slo: Slo) -> str:
    """README's SLO table (Markdown), made from the file."""
    d = slo.dead_letters
    rows = ["| SLI | objective | alert after |", "|---|---|---|"]
    for m in MODALITIES:
        a = slo.availability.get(m)
        rows.append(f"| availability, {m} streams | "
                    + (f">= {a.target:.0%} of ticks with a value | {a.for_} |" if a else
                       "none (sparse by nature) | - |"))
    rows += [
        f"| dead-letter ratio per modality | <= {d.max_ratio:.0%} of records in | {d.for_} |",
        f"| dead-letter rate spike | < {d.spike_factor:g}x the past hour's rate (and "
        f"{d.spike_min_per_s:g}/s) | {slo.window} |",
        f"| watermark lag (streaming) | <= {slo.watermark_lag.max_seconds:g} s | "
        f"{slo.watermark_lag.for_} |",
        f"| Kafka consumer lag (streaming) | not growing above "
        f"{slo.consumer_lag.min_messages} messages | {slo.consumer_lag.for_} |",
        f"| embedding/feature drift per stream | not (MMD² > {slo.drift.max_mmd:g} and p < "
        f"{slo.drift.max_p_value:g}), >= {slo.drift.min_samples} rows | {slo.drift.for_} |",
    ]
    return "\n".join(rows) + "\n"
