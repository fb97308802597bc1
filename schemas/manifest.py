"""The recording manifest: a session, its streams and their clocks, and how to align them.

A manifest is YAML or JSON a person can read (documented in the README). Loading it either
returns a validated ``Manifest`` or raises ``ManifestError`` with one sentence naming the
file, the field and the fix. Relative paths resolve against the manifest's folder, and no
path may leave the allowed roots (the manifest's folder by default). Files, roots and the
manifest itself may be object-store URIs (``s3://bucket/recordings/cam0.mp4``; a URI root is
a prefix: ``allowed_roots: ["s3://bucket/recordings/"]``; ``schemas/fs.py``).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mmalign.schemas import aligned
from mmalign.schemas.chunk import MODALITIES
from mmalign.schemas.clock import MAX_ABS_TIME_NS, MAX_DRIFT
from mmalign.schemas.decode_options import FORMATS, DecodeOptions, decoder_key, format_name
from mmalign.schemas.encoders import EncodersConfig
from mmalign.schemas.errors import ManifestError
from mmalign.schemas.fs import UriPath, as_path, is_remote
from mmalign.schemas.names import Name
from mmalign.schemas.registration_spec import RegistrationSpec

ID = Name            # session and stream ids: file and folder names (schemas/names.py)
MAX_MARGIN_MS = 3_600_000.0     # tolerances, gaps and windows: at most an hour


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _time_ns(v: Any) -> Any:
    """A time or offset in whole ns within +-MAX_ABS_TIME_NS (``TimeNs`` fields)."""
    shown = v
    if isinstance(v, bool):
        raise ValueError("must be a whole number of nanoseconds, not true/false")
    if isinstance(v, str):                 # YAML reads 1e30 (no dot) as a string
        try:
            d = Decimal(v.replace("_", "").strip())
        except InvalidOperation:
            raise ValueError(f"{v!r} is not a whole number of nanoseconds") from None
        if not d.is_finite() or d != d.to_integral_value():
            raise ValueError(f"must be a finite whole number of nanoseconds, got {v!r}")
        v = int(d)
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"must be a finite whole number of nanoseconds, got {v}")
        if v != int(v):
            raise ValueError(f"must be a whole number of nanoseconds, got {v}")
        v = int(v)
    if isinstance(v, int) and abs(v) > MAX_ABS_TIME_NS:
        raise ValueError(f"{shown} is outside +-2**62 ns (about +-146 years), the times the "
                         f"pipeline accepts")
    return v


TimeNs = Annotated[int, BeforeValidator(_time_ns)]


class AlignPolicy(_Strict):
    """How one stream is joined to the reference ticks (see transforms/align_policies.py)."""
    policy: Literal["nearest", "one_to_one", "interpolate", "audio_window", "text_overlap"]
    tolerance_ms: float = Field(50.0, gt=0, le=MAX_MARGIN_MS,
                                description="max |t - tick| for nearest/one_to_one")
    max_gap_ms: float = Field(50.0, gt=0, le=MAX_MARGIN_MS,
                              description="interpolate only across gaps this short")
    window_ms: float = Field(200.0, gt=0, le=MAX_MARGIN_MS,
                             description="audio window around each tick")


class ApproxSets(_Strict):
    """Approximate-time sets across N streams (the ROS message_filters algorithm)."""
    streams: list[ID] = Field(min_length=2)
    max_span_ms: float = Field(50.0, gt=0, le=MAX_MARGIN_MS)
    queue_size: int = Field(64, ge=1, le=1_000_000)
    age_penalty: float = Field(0.1, ge=0, le=100, description="ROS setAgePenalty")
    flush: bool = Field(False, description="batch: at the end of the recording publish the "
                        "sets still pending (ROS never does; the streaming job does at a stop)")


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
    features: str | None = Field(None, description="events | activity | signals; default: "
                                 "signals (chosen by modality pair) where defined")
    channels: list[str] = Field(default_factory=list, description="sensor channels for magnitude")
    engine: Literal["banded", "fastdtw"] = "banded"
    rate_hz: float = Field(100.0, gt=0, le=2000, description="common feature rate")
    band_s: float = Field(1.0, gt=0, le=3600, description="Sakoe-Chiba half-width after coarse "
                          "offset")
    max_offset_s: float = Field(10.0, gt=0, le=86400,
                                description="coarse cross-correlation search range")
    min_confidence: float = Field(0.5, ge=0, le=1, description="below: keep the declared clock")
    max_drift_ppm: float = Field(50_000.0, gt=0, le=MAX_DRIFT * 1e6,
                                 description="clock-rate range searched (+-); an estimate at "
                                 "its edge is not used")


def _decimal_seconds(v: Any) -> Any:
    """``start_s`` exactly as written: a number read from YAML/JSON keeps its text
    (``_Float``), so 1700000000.123456789 s is 1700000000123456789 ns, not a float's."""
    if isinstance(v, bool):
        raise ValueError("must be a number of seconds, not true/false")
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        try:
            d = Decimal((getattr(v, "text", "") or repr(v)).replace("_", ""))
        except InvalidOperation:        # YAML spellings such as .inf or 1:30.5
            d = Decimal(repr(v))
    elif isinstance(v, str):
        try:
            d = Decimal(v.replace("_", "").strip())
        except InvalidOperation:
            raise ValueError(f"{v!r} is not a decimal number of seconds") from None
    else:
        return v
    if not d.is_finite():
        raise ValueError(f"must be a finite number of seconds, got {v}")
    return d


class FileEntry(_Strict):
    """A stream file with the device-clock time of its first sample (``start_ns``, or
    ``start_s``: decimal seconds, read exactly)."""
    path: str = Field(min_length=1)
    start_ns: TimeNs | None = Field(None, description="device time of the first sample, ns")
    start_s: Annotated[Decimal, BeforeValidator(_decimal_seconds)] | None = Field(
        None, description="device time of the first sample, decimal seconds")

    @model_validator(mode="after")
    def _one_start(self):
        if self.start_ns is not None and self.start_s is not None:
            raise ValueError("give start_ns or start_s, not both")
        if self.start_s is not None:
            ns = self.start_s * 1_000_000_000
            if ns != ns.to_integral_value():
                raise ValueError(f"start_s {self.start_s} has more than 9 decimals (finer than "
                                 f"1 ns); round it to whole nanoseconds")
            if abs(ns) > MAX_ABS_TIME_NS:
                raise ValueError(f"start_s {self.start_s} is outside +-2**62 ns (about +-146 "
                                 f"years), the times the pipeline accepts")
        return self

    @property
    def start(self) -> int | None:
        """The file's start in ns on the device clock (None: not given)."""
        if self.start_ns is not None:
            return self.start_ns
        if self.start_s is not None:
            return int(self.start_s * 1_000_000_000)
        return None


def _file_kind(v: Any) -> str:
    return "entry" if isinstance(v, (dict, FileEntry)) else "path"


FileItem = Annotated[Annotated[str, Tag("path"), Field(min_length=1)]
                     | Annotated[FileEntry, Tag("entry")], Discriminator(_file_kind)]


class Stream(_Strict):
    id: ID
    modality: Literal["video", "audio", "text", "sensor"]
    files: list[FileItem] = Field(min_length=1, description="paths, or {path, start_ns|start_s}")
    format: str | None = Field(None, description="decoder; guessed from the extension if absent")
    clock: ID | None = Field(None, description="clock domain in the calibration; default: id")
    options: dict = Field(default_factory=dict, description="decoder options")
    sync: SyncSpec | None = Field(None, description="estimate the clock by DTW against a stream")

    @field_validator("id")
    @classmethod
    def _column_prefix(cls, v: str) -> str:
        # a stream id prefixes its aligned columns (schemas/aligned.py): <id>__<field>
        if aligned.SEP in v:
            raise ValueError(f"stream id {v!r} contains {aligned.SEP!r}, which separates a "
                             f"stream from its fields in the aligned columns; use single '_'")
        if v == aligned.FUSED:
            raise ValueError(f"stream id {v!r} is reserved for the fused embedding columns")
        return v

    @property
    def clock_domain(self) -> str:
        return self.clock or self.id

    @property
    def paths(self) -> list[str]:
        """The stream's file paths, as written in the manifest (``Manifest.resolve`` them)."""
        return [f if isinstance(f, str) else f.path for f in self.files]

    @property
    def starts(self) -> list[int | None]:
        """Per file, the device-clock time of its first sample in ns (None: not given)."""
        return [None if isinstance(f, str) else f.start for f in self.files]


class Validation(_Strict):
    """The session's timestamp plausibility rule (transforms/validate/timestamps.py): a record
    whose time is beyond ``max_abs_time_s`` of 0 or more than ``max_time_span_s`` from its
    stream's median time is the dead letter ``validate/implausible_timestamp``."""
    max_time_span_s: float = Field(86400.0, gt=0, le=MAX_ABS_TIME_NS / 1e9,
                                   description="largest distance from the stream's median")
    max_abs_time_s: float = Field(MAX_ABS_TIME_NS / 1e9, gt=0, le=MAX_ABS_TIME_NS / 1e9,
                                  description="largest |time| in seconds (2**62 ns at most)")

    def bounds_ns(self) -> tuple[int, int]:
        """(max |t|, max span) in whole nanoseconds."""
        return (min(MAX_ABS_TIME_NS, round(self.max_abs_time_s * 1e9)),
                round(self.max_time_span_s * 1e9))


START_TIME_SOURCES = ("container", "file_mtime")


def parse_utc_ns(text: str) -> int:
    """An ISO 8601 time with a zone -> ns since the Unix epoch, exactly (to the microsecond
    Python parses, plus up to 3 more fractional digits)."""
    m = re.fullmatch(r"(.*?T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)", text.strip())
    if m is None:
        raise ValueError(f"start_time {text!r} is not an ISO 8601 time with a zone; write e.g. "
                         "2026-12-03T10:00:00Z or 2026-12-03T11:00:00+01:00, or 'container' "
                         "or 'file_mtime'")
    base, frac, zone = m.groups()
    zone = "+00:00" if zone == "Z" else zone
    try:
        dt = datetime.fromisoformat(base + zone)
    except ValueError as e:
        raise ValueError(f"start_time {text!r}: {e}") from None
    ns = int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
    if abs(ns) > MAX_ABS_TIME_NS:
        raise ValueError(f"start_time {text!r} is outside +-2**62 ns of 1970")
    return ns


class Manifest(_Strict):
    session: ID
    streams: list[Stream] = Field(min_length=1)
    calibration: str | None = None
    alignment: Alignment
    allowed_roots: list[str] = Field(default_factory=list)
    registration: RegistrationSpec | None = Field(None, description="camera registration")
    encoders: EncodersConfig | None = Field(None, description="encoders + feature store")
    validation: Validation = Field(default_factory=Validation,
                                   description="timestamp plausibility rule")
    start_time: str | None = Field(
        None, description="wall-clock (UTC) time of reference time 0: an ISO 8601 time with "
        "a zone (2026-12-03T10:00:00Z), 'container' (the reference stream's MP4/MOV "
        "creation_time) or 'file_mtime'; absent: the container's creation_time if it has one")
    # the manifest's folder: set by load_manifest (or the validation context's "base_dir"),
    # never by the manifest itself (a base_dir key is an unknown field)
    _base_dir: str = PrivateAttr("")

    @field_validator("start_time")
    @classmethod
    def _start_time(cls, v: str | None) -> str | None:
        if v is None or v in START_TIME_SOURCES:
            return v
        parse_utc_ns(v)                      # raises ValueError with the fix
        return v

    @model_validator(mode="after")
    def _folder_from_context(self, info: ValidationInfo):
        ctx = info.context or {}
        if ctx.get("base_dir"):
            self._base_dir = str(ctx["base_dir"])
        return self

    @property
    def base_dir(self) -> str:
        """The manifest's folder (relative paths resolve against it)."""
        return self._base_dir

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

    def roots(self) -> list[Path | UriPath]:
        """The allowed roots, resolved (default: the manifest's folder). A URI root
        (``s3://bucket/recordings/``, or any root of a remote manifest) is an object prefix:
        remote files must lie under one, at a ``/`` boundary."""
        return [_root(r, self.base_dir) for r in (self.allowed_roots or ["."])]

    def resolve(self, rel: str, field: str = "files") -> Path | UriPath:
        """A manifest path made absolute (symlinks followed; a remote URI normalised, ``..``
        collapsed); it must stay inside the allowed roots (else ``PathOutsideRoots``)."""
        if is_remote(rel) or (is_remote(self.base_dir) and not Path(rel).is_absolute()):
            try:
                p = UriPath(rel) if is_remote(rel) else UriPath(self.base_dir) / rel
            except (ValueError, OSError) as e:
                raise PathOutsideRoots(f"field '{field}': path {rel!r} cannot be resolved "
                                       f"({e}); give a plain file path or URI") from None
            self.check_inside(p, field, rel)
            return p
        try:
            p = Path(rel)
            p = (p if p.is_absolute() else Path(self.base_dir) / p).resolve()
        except (ValueError, OSError, RuntimeError) as e:   # NUL byte, symlink loop, ...
            raise PathOutsideRoots(f"field '{field}': path {rel!r} cannot be resolved ({e}); "
                                   f"give a plain file path") from None
        self.check_inside(p, field, rel)
        return p

    def check_inside(self, p: Path | UriPath, field: str, rel: str | None = None) -> None:
        """``PathOutsideRoots`` unless the resolved path ``p`` is inside an allowed root."""
        roots = self.roots()
        if not any(_inside_root(p, r) for r in roots):
            shown = f"path {rel!r} resolves to {p}" if rel is not None else f"path {p}"
            raise PathOutsideRoots(
                f"field '{field}': {shown}, outside the allowed roots "
                f"{[str(r) for r in roots]}; move the file under a root or add its folder to "
                f"allowed_roots")

    def policy_for(self, stream: Stream) -> AlignPolicy:
        if stream.id in self.alignment.policies:
            return self.alignment.policies[stream.id]
        return AlignPolicy(policy=DEFAULT_POLICY[stream.modality])


DEFAULT_POLICY = {"video": "nearest", "audio": "audio_window", "text": "text_overlap",
                  "sensor": "interpolate"}
assert set(DEFAULT_POLICY) == set(MODALITIES)


class PathOutsideRoots(ManifestError):
    pass


def _root(r: str, base_dir: str) -> Path | UriPath:
    """An allowed root: a URI prefix, or a folder (relative ones to the manifest's folder)."""
    if is_remote(r):
        return UriPath(r)
    if Path(r).is_absolute():
        return Path(r).resolve()
    if is_remote(base_dir):
        return UriPath(base_dir) / r
    return (Path(base_dir) / r).resolve()


def _inside_root(p: Path | UriPath, root: Path | UriPath) -> bool:
    """A remote path inside a URI prefix, or a local path inside a folder (never across)."""
    if isinstance(p, UriPath) or isinstance(root, UriPath):
        return isinstance(p, UriPath) and p.is_relative_to(root)
    return p == root or root in p.parents


# ---------------------------------------------------------------- reading YAML/JSON

MAX_FILE_BYTES = 16 * 1024 * 1024      # manifests, calibrations and configs are small text
MAX_VALUES = 1_000_000                 # values after YAML aliases are expanded


class _Float(float):
    """A float read from YAML/JSON that remembers its text (``start_s`` is read exactly)."""
    text: str = ""


def _float_with_text(text: str) -> _Float:
    f = _Float(text)
    f.text = text
    return f


class _Loader(yaml.SafeLoader):
    pass


def _yaml_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    f = _Float(loader.construct_yaml_float(node))
    f.text = str(node.value)
    return f


_Loader.add_constructor("tag:yaml.org,2002:float", _yaml_float)


def _too_big(data: Any) -> bool:
    """True when ``data`` holds more than MAX_VALUES values counted through YAML aliases
    (a "billion laughs" file); the walk stops at the limit."""
    count, todo = 0, [data]
    while todo:
        v = todo.pop()
        count += 1
        if count > MAX_VALUES:
            return True
        if isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return False


def _read_mapping(path: Path | UriPath, what: str) -> dict:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ManifestError(f"{what} {path} does not exist; check the path") from None
    except OSError as e:
        raise ManifestError(f"{what} {path} cannot be read ({e.strerror or e}); check the path "
                            f"and its permissions") from None
    if not path.is_file():
        raise ManifestError(f"{what} {path} is not a regular file; give the path of a "
                            f"YAML/JSON file")
    if st.st_size > MAX_FILE_BYTES:
        raise ManifestError(f"{what} {path} is {st.st_size} bytes, more than the "
                            f"{MAX_FILE_BYTES} a {what} may have; check it is the right file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{what} {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise ManifestError(f"{what} {path} cannot be read ({e.strerror}); check the path and "
                            f"its permissions") from None
    try:
        data = (json.loads(text, parse_float=_float_with_text) if path.suffix == ".json"
                else yaml.load(text, Loader=_Loader))  # noqa: S506 -- a SafeLoader subclass
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ManifestError(f"{what} {path} is not valid YAML/JSON ({first}); fix its syntax") \
            from None
    except RecursionError:
        raise ManifestError(f"{what} {path} is nested too deeply to read; write it with fewer "
                            f"levels") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} {path} must be a mapping at the top level, "
                            f"got {type(data).__name__}")
    if _too_big(data):
        raise ManifestError(f"{what} {path} expands to more than {MAX_VALUES} values (YAML "
                            f"aliases?); write it out without alias chains")
    return data


def _where(loc: tuple, data: Any) -> str:
    """A pydantic error location as the user reads it: ``streams[cam0].files[1].start_s``."""
    out, cur = "", data
    for i, x in enumerate(loc):
        if x in ("path", "entry") and i and isinstance(loc[i - 1], int) and \
                loc[:i][-2:-1] == ("files",):
            continue          # FileItem's union tags
        if isinstance(x, int):
            sid = None
            if isinstance(cur, list) and 0 <= x < len(cur) and isinstance(cur[x], dict):
                sid = cur[x].get("id") if out.endswith("streams") else None
            out += f"[{sid}]" if isinstance(sid, str) else f"[{x}]"
        else:
            out += ("." if out else "") + str(x)
        if isinstance(cur, dict):
            cur = cur.get(x)
        elif isinstance(cur, list) and isinstance(x, int) and 0 <= x < len(cur):
            cur = cur[x]
        else:
            cur = None
    return out


def explain(path: Path, err: ValidationError, data: Any = None) -> str:
    """One sentence per pydantic error: file, field, problem, fix."""
    e = err.errors()[0]
    loc = _where(tuple(e["loc"]), data) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    fix = {
        "missing": "add it",
        "extra_forbidden": "remove it or check its spelling",
    }.get(e["type"], "correct its value")
    fix = "" if ";" in msg else f"; {fix}"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{path}: field '{loc}': {msg}{fix}{more}"


# ---------------------------------------------------------------- loading a manifest


def _input_file(m: Manifest, path: Path, field: str, rel: str, what: str) -> Path:
    """The resolved input file ``rel`` of ``field``: inside the roots, existing, regular."""
    try:
        p = m.resolve(rel, field)
    except PathOutsideRoots as e:
        raise ManifestError(f"{path}: {e}") from None
    if not p.exists():
        raise ManifestError(f"{path}: field '{field}': {what} {rel!r} resolves to {p}, which "
                            f"does not exist; fix the path (relative to {m.base_dir}) or put "
                            f"the file there")
    if not p.is_file():
        raise ManifestError(f"{path}: field '{field}': {what} {rel!r} resolves to {p}, which is "
                            f"not a regular file; give the path of the file itself")
    return p


def _inside(m: Manifest, path: Path, field: str, rel: str) -> Path:
    try:
        return m.resolve(rel, field)
    except PathOutsideRoots as e:
        raise ManifestError(f"{path}: {e}") from None


def _check_stream(m: Manifest, path: Path, s: Stream) -> None:
    """A stream's options, formats and files: everything the decoders will read."""
    try:
        opts = DecodeOptions.of(s.options)
    except ValueError as e:
        raise ManifestError(f"{path}: stream {s.id!r}: {e}") from None
    if opts.start_ns is not None and abs(opts.start_ns) > MAX_ABS_TIME_NS:
        raise ManifestError(f"{path}: field 'streams[{s.id}].options.start_ns': "
                            f"{opts.start_ns} is outside +-2**62 ns (about +-146 years); give "
                            f"the device time of sample 0 in ns")
    for i, rel in enumerate(s.paths):
        field = f"streams[{s.id}].files[{i}]"
        _inside(m, path, field, rel)
        key = decoder_key(s.modality, s.format, rel)
        if key is None:
            fmt = format_name(s.format, rel)
            where = f"streams[{s.id}].format" if s.format else field
            raise ManifestError(f"{path}: field '{where}': no {s.modality} decoder reads "
                                f"format {fmt!r} ({rel!r}); set the stream's format to one of "
                                f"{sorted(FORMATS[s.modality])}")
        p = _input_file(m, path, field, rel, "file")
        if key == "image_sequence":
            # the image folder, as transforms/decode/video.py reads it: relative to the index
            img = (p.parent / (opts.image_dir or ".")).resolve()
            where = f"streams[{s.id}].options.image_dir" if opts.image_dir else field
            try:
                m.check_inside(img, where, opts.image_dir or str(p.parent))
            except PathOutsideRoots as e:
                raise ManifestError(f"{path}: {e}") from None
            if not img.is_dir():
                raise ManifestError(f"{path}: field '{where}': the image folder "
                                    f"{opts.image_dir!r} (relative to {p.parent}) resolves to "
                                    f"{img}, which is not a folder; give the folder of the "
                                    f"images")


def _check_encoders(m: Manifest, path: Path) -> None:
    enc = m.encoders
    if enc is None:
        return
    specs = [(f"encoders.{k}", getattr(enc, k)) for k in ("video", "audio", "text", "sensor")]
    specs += [(f"encoders.streams.{k}", v) for k, v in enc.streams.items()]
    for field, spec in specs:
        if spec and spec.path:
            _input_file(m, path, f"{field}.path", spec.path, "weights file")
    if enc.feature_store.repo:
        _inside(m, path, "encoders.feature_store.repo", enc.feature_store.repo)


def load_manifest(path: str | Path) -> Manifest:
    """The validated manifest at ``path``: its fields, and every file it names resolved
    (symlinks followed), inside the allowed roots, existing and readable by a decoder.
    Raises ManifestError with one sentence naming the file, the field and the fix."""
    path = as_path(path).resolve()          # a local file or an object-store URI
    data = _read_mapping(path, "manifest")
    try:
        m = Manifest.model_validate(data, context={"base_dir": str(path.resolve().parent)})
    except ValidationError as e:
        raise ManifestError(explain(path, e, data)) from None
    for s in m.streams:
        _check_stream(m, path, s)
    if m.calibration:
        _input_file(m, path, "calibration", m.calibration, "calibration file")
    _check_encoders(m, path)
    return m
