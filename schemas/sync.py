"""A DTW-sync result: the clock model estimated for one stream, and how much to trust it.

On disk, one JSON object per session, ``OUT/sync/<s>/sync.json`` (OUT local or an object-store
URI, ``schemas/fs.py``): stream id ->
``SyncResult.to_dict()`` (models as ``ClockModel.to_dict()``, NaN as null), e.g.

    {"mic": {"stream_id": "mic", "reference": "cam0", "confidence": 0.93,
             "fell_back": false, "reason": "", "model": {"offset_ns": ..., "drift_ppm": ...},
             "estimate": {...}, "engine": "banded", "warnings": [],
             "evidence": {"pair_dev_ns": [...], "pair_ref_ns": [...], "residual_ms": [...],
                          "inlier": [...], "path_dev_ns": [...], "path_ref_ns": [...]}, ...}}

``evidence`` is what the fit saw (``SyncEvidence``): the matched landmark pairs with their
residuals to the fitted line and a subsample of the DTW path; align-check ``--plot-sync`` and
``mmalign view`` draw it. A result without a fit (a fallback before any match) has none.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.fs import UriPath, as_path
from mmalign.schemas.layout import (
    SYNC,
    atomic_write_text,
    session_dir,
    session_dirs,
    session_of,
)

SYNC_FILE = "sync.json"
_FLOATS = ("confidence", "dtw_cost", "residual_rms_ms", "residual_max_ms")   # null = NaN
MAX_PATH_POINTS = 600         # the DTW path is kept as at most this many points


@dataclass(frozen=True)
class SyncEvidence:
    """The fit's evidence, in device times (int ns): the stream's clock and the *reference
    stream's* device clock (what ``SyncResult.estimate`` maps between).

    Landmark pair k: a stream landmark at ``pair_dev_ns[k]`` matched to a reference landmark
    at ``pair_ref_ns[k]``; ``residual_ms[k]`` = (ref - dev) - the fitted line at dev, in ms;
    ``inlier[k]``: used by the final least-squares fit (|residual| within the tolerance).
    The DTW path (after the coarse offset): point j links stream time ``path_dev_ns[j]`` to
    reference time ``path_ref_ns[j]`` (evenly subsampled to ``MAX_PATH_POINTS``)."""
    pair_dev_ns: tuple[int, ...] = ()
    pair_ref_ns: tuple[int, ...] = ()
    residual_ms: tuple[float, ...] = ()
    inlier: tuple[bool, ...] = ()
    path_dev_ns: tuple[int, ...] = ()
    path_ref_ns: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> SyncEvidence:
        conv = {"residual_ms": float, "inlier": bool}
        return cls(**{f.name: tuple(conv.get(f.name, int)(v) for v in d.get(f.name) or ())
                      for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class SyncResult:
    stream_id: str
    reference: str
    model: ClockModel             # what the clock stage uses for this stream
    confidence: float
    fell_back: bool
    reason: str = ""              # why it fell back ("" when it did not)
    engine: str = "banded"
    features: str = ""            # "<stream feature>~<reference feature>"
    coarse_offset_ns: int = 0     # device(ref) - device(stream) from cross-correlation
    dtw_cost: float = float("nan")  # mean local cost per warping-path step
    n_landmarks: int = 0          # matched landmark pairs
    n_inliers: int = 0
    residual_rms_ms: float = float("nan")
    residual_max_ms: float = float("nan")
    estimate: ClockModel | None = None   # the fitted model, also when it was not used
    warnings: tuple[str, ...] = ()       # input problems that were skipped (bad chunks)
    evidence: SyncEvidence | None = None  # landmark pairs, residuals, DTW path of the fit

    def to_dict(self) -> dict:
        """A plain JSON-ready dict (non-finite numbers as None): ``from_dict`` reads it."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.to_dict()
        d["estimate"] = self.estimate.to_dict() if self.estimate else None
        d["warnings"] = list(self.warnings)
        d["evidence"] = self.evidence.to_dict() if self.evidence else None
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


    @classmethod
    def from_dict(cls, d: dict) -> SyncResult:
        """The result of a ``to_dict`` dict (sync.json, the run summary); None floats are NaN."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["model"] = ClockModel.from_dict(d["model"])
        kw["estimate"] = ClockModel.from_dict(d["estimate"]) if d.get("estimate") else None
        kw["warnings"] = tuple(d.get("warnings") or ())
        kw["evidence"] = SyncEvidence.from_dict(d["evidence"]) if d.get("evidence") else None
        for k in _FLOATS:
            if k in kw:
                kw[k] = float("nan") if kw[k] is None else float(kw[k])
        return cls(**kw)


def write_session_sync(root: str | Path | UriPath, session_id: str,
                       results: dict[str, SyncResult]) -> Path | UriPath:
    """``<root>/<s>/sync.json`` of one session's results (stream id -> result)."""
    d = session_dir(root, session_id)
    d.mkdir(parents=True, exist_ok=True)
    body = {stream: r.to_dict() for stream, r in sorted(results.items())}
    return atomic_write_text(d / SYNC_FILE, json.dumps(body, indent=2, sort_keys=True))


def read_sync_results(out: str | Path | UriPath) -> dict[str, SyncResult]:
    """{"<session>/<stream>": SyncResult} of a run's output (or staging) folder ``out``."""
    found = {}
    for d in session_dirs(as_path(out) / SYNC):
        f = d / SYNC_FILE
        if not f.exists():
            continue
        session = session_of(d)
        for stream, r in json.loads(f.read_text()).items():
            found[f"{session}/{stream}"] = SyncResult.from_dict(r)
    return found
