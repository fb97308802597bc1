"""The recording manifest: a session, its streams and their clocks, and how to align them.

A manifest is YAML or JSON a person can read (documented in the README). Loading it either
returns a validated ``Manifest`` or raises ``ManifestError`` with one sentence naming the
file, the field and the fix. Relative paths resolve against the manifest's folder, and no
path may leave the allowed roots (the manifest's folder by default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmalign.encoders.config import EncodersConfig
from mmalign.schemas.chunk import MODALITIES
from mmalign.schemas.registration_spec import RegistrationSpec

ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ManifestError(ValueError):
    """A manifest, calibration or config that cannot be used; the message says how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlignPolicy(_Strict):
    """How one stream is joined to the reference ticks (see transforms/align_policies.py)."""
    policy: Literal["nearest", "one_to_one", "interpolate", "audio_window", "text_overlap"]
    tolerance_ms: float = Field(50.0, gt=0, description="max |t - tick| for nearest/one_to_one")
    max_gap_ms: float = Field(50.0, gt=0, description="interpolate only across gaps this short")
    window_ms: float = Field(200.0, gt=0, description="audio window around each tick")


class ApproxSets(_Strict):
    """Approximate-time sets across N streams (the ROS message_filters algorithm)."""
    streams: list[ID] = Field(min_length=2)
    max_span_ms: float = Field(50.0, gt=0)
    queue_size: int = Field(64, ge=1)


class Ticks(_Strict):
    anchor: ID | None = Field(None, description="stream whose samples are the ticks")
    rate_hz: float | None = Field(None, gt=0, le=10000, description="fixed-rate ticks")
    sets: ApproxSets | None = Field(None, description="ticks = approximate-time sets")

    @model_validator(mode="after")
    def _one_source(self):
        given = [n for n in ("anchor", "rate_hz", "sets") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of anchor, rate_hz or sets")
        return self


class Alignment(_Strict):
    ticks: Ticks
    bucket_s: float = Field(10.0, gt=0, le=3600, description="time bucket width for the join")
    policies: dict[ID, AlignPolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _whole_ms_buckets(self):
        if abs(self.bucket_s * 1000 - round(self.bucket_s * 1000)) > 1e-6 or self.bucket_s < 1e-3:
            raise ValueError("bucket_s must be a whole number of milliseconds (e.g. 10 or 2.5)")
        return self


class SyncSpec(_Strict):
    """Estimate this stream's clock against a reference stream from the signals (DTW-sync)."""
    method: Literal["dtw"] = "dtw"
    reference: ID
    features: str | None = Field(None, description="feature kind; default by modality pair")
    channels: list[str] = Field(default_factory=list, description="sensor channels for magnitude")
    engine: Literal["banded", "fastdtw"] = "banded"
    rate_hz: float = Field(100.0, gt=0, le=2000, description="common feature rate")
    band_s: float = Field(1.0, gt=0, description="Sakoe-Chiba half-width after coarse offset")
    max_offset_s: float = Field(10.0, gt=0, description="coarse cross-correlation search range")
    min_confidence: float = Field(0.5, ge=0, le=1, description="below: keep the declared clock")


class Stream(_Strict):
    id: ID
    modality: Literal["video", "audio", "text", "sensor"]
    files: list[str] = Field(min_length=1)
    format: str | None = Field(None, description="decoder; guessed from the extension if absent")
    clock: ID | None = Field(None, description="clock domain in the calibration; default: id")
    options: dict = Field(default_factory=dict, description="decoder options")
    sync: SyncSpec | None = Field(None, description="estimate the clock by DTW against a stream")

    @property
    def clock_domain(self) -> str:
        return self.clock or self.id


class Manifest(_Strict):
    session: ID
    streams: list[Stream] = Field(min_length=1)
    calibration: str | None = None
    alignment: Alignment
    allowed_roots: list[str] = Field(default_factory=list)
    registration: RegistrationSpec | None = Field(None, description="camera registration")
    encoders: EncodersConfig | None = Field(None, description="encoders + feature store")
    # filled in by load_manifest, not by the user
    base_dir: str = ""

    @model_validator(mode="after")
    def _references(self):
        ids = [s.id for s in self.streams]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"stream ids must be unique, {dup} repeat")
        t = self.alignment.ticks
        named = [("alignment.ticks.anchor", t.anchor)] if t.anchor else []
        named += [("alignment.ticks.sets.streams", s) for s in (t.sets.streams if t.sets else [])]
        named += [("alignment.policies", s) for s in self.alignment.policies]
        named += [(f"streams[{s.id}].sync.reference", s.sync.reference)
                  for s in self.streams if s.sync]
        for where, sid in named:
            if sid not in ids:
                raise ValueError(f"{where} names stream {sid!r}, which is not in streams {ids}")
        return self

    def stream(self, stream_id: str) -> Stream:
        return next(s for s in self.streams if s.id == stream_id)

    def resolve(self, rel: str, field: str = "files") -> Path:
        """A manifest path made absolute; it must stay inside the allowed roots."""
        p = Path(rel)
        p = (p if p.is_absolute() else Path(self.base_dir) / p).resolve()
        roots = [Path(r) if Path(r).is_absolute() else Path(self.base_dir) / r
                 for r in (self.allowed_roots or ["."])]
        roots = [r.resolve() for r in roots]
        if not any(p == r or r in p.parents for r in roots):
            raise PathOutsideRoots(
                f"{field}: path {rel!r} resolves to {p}, outside the allowed roots "
                f"{[str(r) for r in roots]}; move the file under a root or add its folder to "
                f"allowed_roots")
        return p

    def policy_for(self, stream: Stream) -> AlignPolicy:
        if stream.id in self.alignment.policies:
            return self.alignment.policies[stream.id]
        return AlignPolicy(policy=DEFAULT_POLICY[stream.modality])


DEFAULT_POLICY = {"video": "nearest", "audio": "audio_window", "text": "text_overlap",
                  "sensor": "interpolate"}
assert set(DEFAULT_POLICY) == set(MODALITIES)


class PathOutsideRoots(ManifestError):
    pass


def _read_mapping(path: Path, what: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{what} {path} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{what} {path} is not UTF-8 text; save it as UTF-8") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ManifestError(f"{what} {path} is not valid YAML/JSON ({first}); fix its syntax") \
            from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} {path} must be a mapping at the top level, "
                            f"got {type(data).__name__}")
    return data


def explain(path: Path, err: ValidationError) -> str:
    """One sentence per pydantic error: file, field, problem, fix."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    msg = e["msg"]
    fix = {
        "missing": "add it",
        "extra_forbidden": "remove it or check its spelling",
    }.get(e["type"], "correct its value")
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{path}: field '{loc}': {msg}; {fix}{more}"


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path).resolve()
    data = _read_mapping(path, "manifest")
    data.setdefault("base_dir", str(path.parent))
    try:
        m = Manifest.model_validate(data)
    except ValidationError as e:
        raise ManifestError(explain(path, e)) from None
    for s in m.streams:
        for i, f in enumerate(s.files):
            try:
                m.resolve(f, field=f"streams[{s.id}].files[{i}]")
            except PathOutsideRoots as e:
                raise ManifestError(f"{path}: {e}") from None
    if m.calibration:
        try:
            m.resolve(m.calibration, field="calibration")
        except PathOutsideRoots as e:
            raise ManifestError(f"{path}: {e}") from None
    return m
