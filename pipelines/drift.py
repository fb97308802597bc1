"""Embedding and feature drift against a baseline: plain numpy, used by align-check
(``--baseline``, ``--save-baseline``) and by the jobs' drift gauges (pipelines/observe.py).

Per stream, the features are its embeddings (``<stream>__emb`` of rows whose ``__emb_status``
is ok) or, for a sensor stream, its channel values at the ticks (rows with a value). A
baseline keeps, per stream, an evenly spaced sample of at most ``max_samples`` rows plus what
the tests need to stay comparable across runs: the per-feature mean and scale (features are
standardised with the *baseline's* statistics), the RBF bandwidth (median pairwise distance of
the standardised baseline sample: fixed, so scores of different runs compare), the top
principal directions and their decile bin edges and fractions.

``compare`` reports

- ``mmd2``: the unbiased squared maximum mean discrepancy between the baseline sample and an
  evenly spaced sample of the current rows, RBF kernel ``exp(-|x-y|^2 / (2 bw^2))``;
- ``p_value``: a permutation test of it (``permutations`` shuffles of the pooled rows, seeded:
  ``(1 + #{shuffled >= observed}) / (1 + permutations)``);
- ``psi`` / ``kl``: the population stability index and KL(current || baseline) of the
  projections on the baseline's principal directions, over its decile bins (max over the
  directions);
- ``n_baseline`` / ``n``: the sample sizes. Below ``min_samples`` on either side the stream is
  ``too_few`` (reported, never judged). A stream drifts when ``mmd2 > max_mmd`` *and*
  ``p_value < max_p_value``: the p-value alone says only that a difference is detectable (any
  difference is, with enough rows), the MMD alone is noisy on small samples.

Rows are time series: consecutive ticks are not independent, so the permutation test is
optimistic (too small p-values) when a sample is a short stretch of time; evenly spaced rows
over the whole output and the MMD threshold guard against that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmalign.schemas.aligned import (
    COVERAGE,
    DT_NS,
    EMB,
    EMB_STATUS,
    OK,
    SAMPLE_RATE,
    STATUS,
    VALUE_STATUSES,
    column,
    split_column,
    stream_ids,
)

BASELINE_FORMAT = "mmalign-drift-baseline/1"
EMBEDDING, VALUES = "embedding", "values"
N_COMPONENTS = 5              # principal directions for PSI / KL
N_BINS = 10                   # decile bins per direction
_EPS = 1e-4                   # bin fraction floor (an empty bin is not log(0))
OK_DRIFT, DRIFTED, TOO_FEW = "ok", "drift", "too_few"


@dataclass
class StreamBaseline:
    stream: str
    modality: str
    source: str                       # "embedding" | "values"
    columns: list[str]                # the features (an embedding column, or sensor channels)
    n_rows: int                       # rows the baseline had
    sample: np.ndarray                # (n, d) evenly spaced baseline rows (raw features)
    mean: np.ndarray                  # (d,)
    scale: np.ndarray                 # (d,)
    bandwidth: float
    components: np.ndarray            # (k, d) principal directions of the standardised sample
    edges: np.ndarray                 # (k, N_BINS - 1) inner decile edges per direction
    fractions: np.ndarray             # (k, N_BINS) baseline share per bin

    def to_dict(self) -> dict:
        def arr(a):
            return np.round(np.asarray(a, np.float64), 7).tolist()
        return {"stream": self.stream, "modality": self.modality, "source": self.source,
                "columns": self.columns, "n_rows": self.n_rows, "sample": arr(self.sample),
                "mean": arr(self.mean), "scale": arr(self.scale),
                "bandwidth": float(self.bandwidth), "components": arr(self.components),
                "edges": arr(self.edges), "fractions": arr(self.fractions)}

    @classmethod
    def from_dict(cls, d: dict) -> StreamBaseline:
        def arr(k, ndim):
            a = np.asarray(d[k], np.float64)
            return a.reshape((0,) * ndim) if a.size == 0 else a
        return cls(d["stream"], d["modality"], d["source"], list(d["columns"]),
                   int(d["n_rows"]), arr("sample", 2), arr("mean", 1), arr("scale", 1),
                   float(d["bandwidth"]), arr("components", 2), arr("edges", 2),
                   arr("fractions", 2))


@dataclass
class DriftResult:
    stream: str
    modality: str
    source: str
    n_baseline: int
    n: int
    mmd2: float | None = None
    p_value: float | None = None
    psi: float | None = None
    kl: float | None = None
    status: str = TOO_FEW
    message: str = ""
    thresholds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("stream", "modality", "source", "n_baseline", "n",
                                               "mmd2", "p_value", "psi", "kl", "status",
                                               "message")}


# ---------------------------------------------------------------- features of aligned rows

_NOT_CHANNELS = {STATUS, DT_NS, "t_ns", "pos", "pos_right", "src", "file", COVERAGE,
                 SAMPLE_RATE, "sample_start", "sample_end", EMB, EMB_STATUS, "model_id"}


def stream_features(table: pa.Table, stream: str, modality: str
                    ) -> tuple[str, list[str], np.ndarray] | None:
    """(source, feature names, rows x features) of one stream of aligned rows, or None when
    the stream has no features here (no embedding, not a sensor stream)."""
    names = table.column_names
    emb = column(stream, EMB)
    if emb in names:
        col = table.column(emb)
        ok = pc.is_valid(col)
        st = column(stream, EMB_STATUS)
        if st in names:
            ok = pc.and_(ok, pc.equal(table.column(st).cast(pa.string()), OK))
        vals = col.filter(ok.fill_null(False)).to_pylist()
        dims = {len(v) for v in vals}
        if len(dims) > 1:
            raise ValueError(f"{emb}: embeddings of different sizes {sorted(dims)}")
        x = np.asarray(vals, np.float64).reshape(len(vals), dims.pop() if dims else 0)
        return EMBEDDING, [emb], x
    if modality != "sensor":
        return None
    chans = [n for n in names if (p := split_column(n)) and p[0] == stream
             and p[1] not in _NOT_CHANNELS and pa.types.is_floating(table.schema.field(n).type)]
    if not chans:
        return None
    status = table.column(column(stream, STATUS)).cast(pa.string()).to_numpy(
        zero_copy_only=False)
    keep = np.isin(status.astype(object), VALUE_STATUSES)
    x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                         for c in chans])[keep]
    x = x[np.all(np.isfinite(x), axis=1)]
    return VALUES, chans, x


def table_features(table: pa.Table, modalities: dict[str, str]
                   ) -> dict[str, tuple[str, str, list[str], np.ndarray]]:
    """stream -> (modality, source, names, rows) for every stream of ``table`` with features
    (``modalities``: stream -> modality)."""
    out = {}
    for s in stream_ids(table.column_names):
        mod = modalities.get(s)
        if mod is None:
            continue
        f = stream_features(table, s, mod)
        if f is not None and f[2].shape[1]:
            out[s] = (mod, *f)
    return out


# ---------------------------------------------------------------- statistics

def spaced(x: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` rows of ``x``, evenly spaced (deterministic; time order kept)."""
    if len(x) <= n:
        return x
    return x[np.unique(np.round(np.linspace(0, len(x) - 1, n)).astype(int))]


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def fit(stream: str, modality: str, source: str, columns: list[str], x: np.ndarray,
        max_samples: int = 300) -> StreamBaseline:
    """A stream's baseline from its rows ``x`` (rows x features)."""
    x = np.asarray(x, np.float64)
    sample = spaced(x, max_samples)
    d = x.shape[1]
    mean = x.mean(0) if len(x) else np.zeros(d)
    std = x.std(0) if len(x) else np.ones(d)
    scale = np.where(std > 1e-9, std, 1.0)
    z = (sample - mean) / scale
    if len(z) >= 2:
        dist = np.sqrt(_sqdist(z, z)[np.triu_indices(len(z), 1)])
        bw = float(np.median(dist[dist > 0])) if np.any(dist > 0) else 1.0
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        comps = vt[:min(N_COMPONENTS, d)]
    else:
        bw, comps = 1.0, np.eye(d)[:min(N_COMPONENTS, d)]
    proj = z @ comps.T if len(z) else np.zeros((0, len(comps)))
    qs = np.linspace(0, 1, N_BINS + 1)[1:-1]
    edges = (np.quantile(proj, qs, axis=0).T if len(proj)
             else np.zeros((len(comps), N_BINS - 1)))
    fractions = np.array([_bin_fractions(proj[:, i], edges[i]) for i in range(len(comps))])
    return StreamBaseline(stream, modality, source, list(columns), int(len(x)), sample, mean,
                          scale, bw, comps, edges, fractions.reshape(len(comps), N_BINS))


def _bin_fractions(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=N_BINS)
    f = counts / max(1, counts.sum())
    f = np.maximum(f, _EPS)
    return f / f.sum()


def mmd2_permutation(zx: np.ndarray, zy: np.ndarray, bandwidth: float, permutations: int,
                     seed: int = 0) -> tuple[float, float]:
    """(unbiased MMD², permutation p-value) of two standardised samples."""
    m, n = len(zx), len(zy)
    z = np.vstack([zx, zy])
    k = np.exp(-_sqdist(z, z) / (2.0 * bandwidth * bandwidth)).astype(np.float32)
    rows = k.sum(1, dtype=np.float64)
    total = float(rows.sum())

    def stat(a: np.ndarray) -> np.ndarray:       # a: (P, m+n) 0/1, m ones per row
        # with b = 1 - a: aKb = aK1 - aKa and bKb = total - 2 aK1 + aKa (K symmetric)
        aka = ((a @ k) * a).sum(1, dtype=np.float64)
        ak1 = a.astype(np.float64) @ rows
        kxx = aka - m                            # diagonal of k is 1
        kyy = total - 2.0 * ak1 + aka - n
        kxy = ak1 - aka
        return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2.0 * kxy / (m * n)

    first = np.zeros((1, m + n), np.float32)
    first[0, :m] = 1.0
    observed = float(stat(first)[0])
    rng = np.random.default_rng(seed)
    perms = np.zeros((permutations, m + n), np.float32)
    for i in range(permutations):
        perms[i, rng.permutation(m + n)[:m]] = 1.0
    null = np.concatenate([stat(perms[i:i + 50]) for i in range(0, permutations, 50)])
    p = (1.0 + float(np.sum(null >= observed))) / (1.0 + permutations)
    return observed, p


def compare(base: StreamBaseline, x: np.ndarray, *, max_mmd: float, max_p_value: float,
            min_samples: int, max_samples: int, permutations: int, seed: int = 0
            ) -> DriftResult:
    """The drift of rows ``x`` of ``base``'s stream against it (module docstring)."""
    x = np.asarray(x, np.float64)
    th = {"max_mmd": max_mmd, "max_p_value": max_p_value, "min_samples": min_samples}
    r = DriftResult(base.stream, base.modality, base.source, len(base.sample), len(x),
                    thresholds=th)
    if x.ndim != 2 or x.shape[1] != base.sample.shape[1]:
        r.status, r.message = TOO_FEW, (f"{base.stream}: {x.shape[-1] if x.ndim == 2 else 0} "
                                        f"features, the baseline has {base.sample.shape[1]}")
        return r
    cur = spaced(x, max_samples)
    r.n = len(cur)
    if min(len(cur), len(base.sample)) < min_samples:
        r.message = (f"{base.stream}: {len(cur)} rows vs {len(base.sample)} in the baseline, "
                     f"fewer than {min_samples}: not judged")
        return r
    zx = (base.sample - base.mean) / base.scale
    zy = (cur - base.mean) / base.scale
    r.mmd2, r.p_value = mmd2_permutation(zx, zy, base.bandwidth, permutations, seed)
    proj = zy @ base.components.T
    psi, kl = [], []
    for i in range(len(base.components)):
        p = base.fractions[i]
        q = _bin_fractions(proj[:, i], base.edges[i])
        psi.append(float(np.sum((q - p) * np.log(q / p))))
        kl.append(float(np.sum(q * np.log(q / p))))
    r.psi, r.kl = (max(psi), max(kl)) if psi else (None, None)
    drifted = r.mmd2 > max_mmd and r.p_value < max_p_value
    r.status = DRIFTED if drifted else OK_DRIFT
    r.message = (f"{base.stream} ({base.source}) MMD² {r.mmd2:.4f} "
                 f"{'>' if r.mmd2 > max_mmd else '<='} {max_mmd:g}, p {r.p_value:.3f} "
                 f"{'<' if r.p_value < max_p_value else '>='} {max_p_value:g}, "
                 f"n {r.n} vs {r.n_baseline}")
    return r


# ---------------------------------------------------------------- baseline files

def save_baselines(path: str | Path, baselines: dict[str, StreamBaseline], source: str
                   ) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": BASELINE_FORMAT, "source": source,
           "streams": {s: b.to_dict() for s, b in sorted(baselines.items())}}
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def is_baseline_file(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with p.open(encoding="utf-8") as f:
            head = f.read(200)
    except (OSError, UnicodeDecodeError):
        return False
    return BASELINE_FORMAT in head


def load_baselines(path: str | Path) -> dict[str, StreamBaseline]:
    """Baseline statistics written by ``save_baselines``; ValueError for anything else."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p} is not a drift baseline ({type(e).__name__}); make one with "
                         "align-check OUT --save-baseline FILE") from None
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{p} is not a drift baseline (format {BASELINE_FORMAT!r}); make one "
                         "with align-check OUT --save-baseline FILE")
    try:
        return {s: StreamBaseline.from_dict(d) for s, d in doc["streams"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: a damaged drift baseline ({type(e).__name__}: {e}); make it "
                         "again with align-check OUT --save-baseline FILE") from None
