"""The align-check report: plain measurements, the checks, the verdict and the rendering.

The report is a JSON-ready dict (documented by schemas/align_report.schema.json). The
measurements are plain functions over numpy/Arrow (``stream_stats``, ``alignment_stats``,
``registration_stats``, ``dead_letter_stats``, ``clock_error_ms``); ``*_checks`` turn them into
``Check`` records against ``Thresholds``; ``build_report`` adds the verdict and exit code;
``render`` prints it with rich (colours only on a terminal).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mmalign.pipelines.slo import load_slo
from mmalign.schemas import aligned
from mmalign.schemas.clock import ClockModel

SCHEMA_VERSION = "1"
PASS, FAIL, SKIP = "pass", "fail", "skip"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
MISSING_OK = aligned.VALUE_STATUSES     # statuses that carry a value
# the SLO file (deploy/slo.yaml) gives the defaults of the thresholds it defines: availability
# per modality (missing:<stream>), the dead-letter ratio and the drift test
SLO = load_slo()
_TARGETS = [a.target for a in SLO.availability.values() if a is not None]
NS = 1_000_000_000


@dataclass(frozen=True)
class Check:
    name: str                     # stable id, e.g. "clock:mic", "drops:cam1", "expectations"
    status: str                   # pass | fail | skip
    message: str                  # one sentence: what was measured against what
    value: float | None = None
    threshold: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def check(name: str, value: float | None, threshold: float, *, upper: bool = True,
          what: str, unit: str = "", skip_reason: str = "") -> Check:
    """pass when ``value`` <= threshold (``upper``) or >= threshold; skip when value is None."""
    if value is None:
        return Check(name, SKIP, skip_reason or f"{what}: not measurable", None, threshold)
    ok = value <= threshold if upper else value >= threshold
    rel = ("<=" if upper else ">=") if ok else (">" if upper else "<")
    return Check(name, PASS if ok else FAIL,
                 f"{what} {_num(value)}{unit} {rel} {_num(threshold)}{unit}",
                 float(value), float(threshold))


def finish(report: dict, checks: list[Check]) -> dict:
    """Attach the checks and the verdict: exit 0 when none fails, 1 otherwise."""
    report["checks"] = [c.as_dict() for c in checks]
    report["failed"] = [c.name for c in checks if c.status == FAIL]
    report["ok"] = not report["failed"]
    report["exit_code"] = EXIT_OK if report["ok"] else EXIT_FAILED
    return report


class Thresholds(BaseModel):
    """What "well aligned" means; each is an option (``--max-offset-ms``) and a config key."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_offset_ms: float = Field(40.0, gt=0, description="max |declared - estimated| clock, "
                                 "over the stream's extent")
    min_confidence: float = Field(0.5, ge=0, le=1, description="DTW confidence an estimate "
                                  "needs to be compared or used")
    max_drop_rate: float = Field(0.05, ge=0, le=1, description="max dropped / expected samples")
    max_missing: float = Field(round(1 - min(_TARGETS, default=0.9), 9), ge=0, le=1,
                               description="max share of ticks a stream misses (text excluded: "
                               "speech is sparse); unset: 1 - its modality's availability "
                               "target in deploy/slo.yaml")
    max_dead_rate: float = Field(SLO.dead_letters.max_ratio, ge=0, le=1,
                                 description="max dead letters / records in (deploy/slo.yaml)")
    max_lost_rate: float = Field(0.5, ge=0, le=1, description="max share of one stream's "
                                 "records lost to dead letters (output: per modality when it "
                                 "has several streams)")
    min_inlier_ratio: float = Field(0.3, ge=0, le=1, description="min median registration "
                                    "inlier ratio per camera")
    max_rmse_px: float = Field(3.0, gt=0, description="max median registration reprojection "
                               "error per camera, px")
    max_drift_mmd: float = Field(SLO.drift.max_mmd, gt=0, description="--baseline: a stream "
                                 "drifts when its MMD² exceeds this and ...")
    max_drift_p: float = Field(SLO.drift.max_p_value, gt=0, le=1, description="--baseline: "
                               "... its permutation-test p-value is below this")
    min_drift_samples: float = Field(SLO.drift.min_samples, ge=5, description="--baseline: "
                                     "fewer rows on either side: the stream is not judged")

    def missing_threshold(self, modality: str | None) -> float:
        """``max_missing`` when set, else 1 - the modality's availability target."""
        target = SLO.availability_target(modality) if modality else None
        if "max_missing" in self.model_fields_set or target is None:
            return self.max_missing
        return round(1 - target, 9)


# ---------------------------------------------------------------- plain measurements


def stream_stats(t_ns: np.ndarray, modality: str, *, n_samples: np.ndarray | None = None,
                 sample_rate: float | None = None) -> dict:
    """Samples, duration, rate, gaps and drops of one stream's valid sample times (sorted ns).

    Video/sensor: the period is the median interval; an interval over 1.5 periods is a gap
    that lost ``round(dt / period) - 1`` samples. Audio (blocks of ``n_samples`` at
    ``sample_rate``): a gap is a hole of more than 2 samples (and 1 ms) between a block's end
    and the next block's start. Text cues are sparse: no gaps or drops."""
    t = np.asarray(t_ns, np.int64)
    out = {"samples": int(t.size), "duration_s": None, "rate_hz": None, "gaps": None,
           "dropped": None, "drop_rate": None, "gap_spans": []}
    if t.size == 0:
        return out
    if modality == "audio" and n_samples is not None and sample_rate:
        n = np.asarray(n_samples, np.int64)
        end = t + np.rint(n * (NS / sample_rate)).astype(np.int64)
        hole = t[1:] - end[:-1]
        gap = hole > max(2 * NS / sample_rate, 1_000_000)
        dropped = int(np.rint(hole[gap] * sample_rate / NS).sum())
        total = int(n.sum())
        out.update(samples=total, duration_s=(int(end[-1]) - int(t[0])) / NS,
                   rate_hz=float(sample_rate), gaps=int(gap.sum()), dropped=dropped,
                   drop_rate=dropped / (total + dropped) if total + dropped else 0.0,
                   gap_spans=[(int(a), int(b)) for a, b in zip(end[:-1][gap], t[1:][gap])])
        return out
    duration = (int(t[-1]) - int(t[0])) / NS
    out["duration_s"] = duration
    if modality == "text" or t.size < 3:
        out["rate_hz"] = t.size / duration if duration > 0 else None
        return out
    dt = np.diff(t)
    period = float(np.median(dt))
    if period <= 0:
        return out
    gap = dt > 1.5 * period
    dropped = int((np.rint(dt[gap] / period) - 1).sum())
    out.update(rate_hz=NS / period, gaps=int(gap.sum()), dropped=dropped,
               drop_rate=dropped / (t.size + dropped),
               gap_spans=[(int(a), int(b)) for a, b in zip(t[:-1][gap], t[1:][gap])])
    return out


def offset_at(model: ClockModel, t_dev_ns) -> np.ndarray:
    """The model's offset (t_ref - t_dev) at these device times, ns."""
    t = np.asarray(t_dev_ns, np.int64)
    return model.to_ref(t) - t


def clock_error_ms(declared: ClockModel, estimated: ClockModel, t_dev_ns) -> float:
    """Max |declared - estimated| mapping over these device times, ms."""
    t = np.asarray(t_dev_ns, np.int64)
    return float(np.max(np.abs(declared.to_ref(t) - estimated.to_ref(t)))) / 1e6


def _quantiles_ms(dt_ns: np.ndarray) -> dict | None:
    a = np.abs(dt_ns.astype(np.float64))
    if a.size == 0:
        return None
    p50, p95 = np.percentile(a, [50, 95])
    return {"p50": round(p50 / 1e6, 3), "p95": round(p95 / 1e6, 3),
            "max": round(float(a.max()) / 1e6, 3)}


def _tolerance_ms(pol: dict) -> float | None:
    if pol.get("policy") in ("nearest", "one_to_one"):
        return float(pol.get("tolerance_ms", 0))
    if pol.get("policy") == "interpolate":
        return float(pol.get("max_gap_ms", 0))
    return None


def alignment_stats(table: pa.Table, policies: dict[str, dict], session: str) -> list[dict]:
    """Per stream of one session's aligned rows: |dt| to the ticks (p50/p95/max, ms) against
    the tolerance, the statuses and the missing-modality rate."""
    rows = []
    for s in aligned.stream_ids(table.column_names):
        status = table.column(aligned.column(s, aligned.STATUS)).cast(pa.string()).to_pylist()
        counts = Counter("null" if x is None else x for x in status)
        n = len(status)
        dt = None
        if aligned.column(s, aligned.DT_NS) in table.column_names:
            col = table.column(aligned.column(s, aligned.DT_NS)).drop_null()
            dt = _quantiles_ms(col.to_numpy().astype(np.int64)) if len(col) else None
        pol = policies.get(s, {})
        missing = sum(v for k, v in counts.items() if k not in MISSING_OK)
        rows.append({"session": session, "stream": s, "policy": pol.get("policy", "?"),
                     "ticks": n, "dt_ms": dt, "tolerance_ms": _tolerance_ms(pol),
                     "missing_rate": missing / n if n else None,
                     "status": dict(sorted(counts.items()))})
    return rows


def registration_stats(table: pa.Table, session: str) -> list[dict]:
    """Per camera with ``<cam>__reg_status``: outcome counts, inlier ratio and RMSE (px)."""
    out = []
    for cam in aligned.registered_cameras(table.column_names):
        c = aligned.column(cam, aligned.REG_STATUS)
        st = Counter(x for x in table.column(c).cast(pa.string()).to_pylist() if x is not None)

        def summary(name: str, cam: str = cam) -> dict:
            col = aligned.column(cam, name)
            v = (table.column(col).drop_null().to_numpy().astype(np.float64)
                 if col in table.column_names else np.zeros(0))
            v = v[np.isfinite(v)]
            if not v.size:
                return {"median": None, "min": None, "max": None}
            return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}

        # transforms/register_stage.py statuses: ok; stale_transform / no_good_transform are
        # flagged (the tick kept the last good or no transform); failed:<reason> failed;
        # no_frame is missing data (the camera had no frame at the tick), not a failure
        ok = st.get("ok", 0)
        flagged = st.get("stale_transform", 0) + st.get("no_good_transform", 0)
        ref = st.get("reference", 0)
        no_frame = st.get("no_frame", 0)
        failed = sum(n for s, n in st.items() if s.startswith("failed"))
        out.append({"session": session, "camera": cam,
                    "reference": ref > 0 and ref == sum(st.values()),
                    "pairs": sum(st.values()) - ref - no_frame, "ok": ok, "flagged": flagged,
                    "failed": failed, "no_frame": no_frame, "status": dict(st),
                    "inlier_ratio": summary("reg_inlier_ratio"),
                    "rmse_px": summary("reg_rmse_px")})
    return out


def dead_letter_stats(stages: list[str], reasons: list[str], streams: list[str | None],
                      records_in: int | None, records: list[int | None] | None = None) -> dict:
    """Counts by (stage, reason) and by stream; the rate over the records that came in counts
    the input records each letter stands for (``records``, default 1: a truncated file's
    letter stands for the records it lost, an unreadable file's for at least one)."""
    pairs = Counter(zip(stages, reasons))
    total = len(stages)
    lost = sum(1 if r is None else int(r) for r in records) if records is not None else total
    return {"total": total, "records": lost, "records_in": records_in,
            "rate": (lost / records_in) if records_in else None,
            "by_stage_reason": [{"stage": s, "reason": r, "count": n}
                                for (s, r), n in sorted(pairs.items(), key=lambda kv: -kv[1])],
            "by_stream": dict(sorted(Counter(s or "-" for s in streams).items()))}


def missing_spans(ticks: np.ndarray, ok: np.ndarray) -> list[tuple[int, int]]:
    """Runs of ticks without a value, as (last good tick, next good tick) spans."""
    spans = []
    bad = np.flatnonzero(~ok)
    if not bad.size:
        return spans
    breaks = np.flatnonzero(np.diff(bad) > 1)
    for a, b in zip(np.r_[bad[0], bad[breaks + 1]], np.r_[bad[breaks], bad[-1]]):
        if a > 0 and b < len(ticks) - 1:
            spans.append((int(ticks[a - 1]), int(ticks[b + 1])))
    return spans


# ---------------------------------------------------------------- checks


def stream_checks(streams: list[dict], th: Thresholds) -> list[Check]:
    out = []
    for s in streams:
        if s["modality"] == "text" or s.get("drop_rate") is None:
            continue
        out.append(check(f"drops:{s['stream']}", s["drop_rate"], th.max_drop_rate,
                         what=f"{s['stream']} dropped {s['dropped']} of "
                              f"{s['samples'] + s['dropped']} samples, rate", unit=""))
    return out


def lost_checks(streams: list[dict], th: Thresholds) -> list[Check]:
    """``lost:<stream>``: the share of a stream's records that became dead letters (rows with
    ``records_in`` and ``lost``; rows without them are not measured)."""
    out = []
    for s in streams:
        n, lost = s.get("records_in"), s.get("lost")
        if n is None or lost is None:
            continue
        name = f"lost:{s['stream']}"
        if n == 0:
            out.append(Check(name, SKIP, f"{s['stream']} has no records", None,
                             th.max_lost_rate))
            continue
        out.append(check(name, lost / n, th.max_lost_rate,
                         what=f"{s['stream']} lost {lost} of its {n} records to dead letters, "
                              f"rate"))
    return out


def ticks_check(ticks: dict[str, int], reasons: dict[str, str]) -> Check:
    """``ticks``: every session has ticks to align to (``ticks`` {session: count}); a session
    without any fails with its reason from ``reasons``."""
    empty = [s for s, n in ticks.items() if n == 0]
    if not ticks:
        return Check("ticks", FAIL, "no session has ticks: nothing was aligned", 0.0, 1.0)
    if empty:
        why = "; ".join(f"session {s}: {reasons.get(s) or 'no ticks'}" for s in empty)
        return Check("ticks", FAIL, f"{len(empty)} of {len(ticks)} session(s) have 0 ticks "
                     f"({why})", 0.0, 1.0)
    return Check("ticks", PASS, ", ".join(f"session {s}: {n} ticks" for s, n in ticks.items()),
                 float(min(ticks.values())), 1.0)


def clock_checks(clocks: list[dict], th: Thresholds) -> list[Check]:
    out = []
    for c in clocks:
        name = f"clock:{c['stream']}"
        if c["state"] == "compared":
            out.append(check(name, c["error_ms"], th.max_offset_ms, unit=" ms",
                             what=f"{c['stream']} declared vs estimated clock differ by"))
        elif c["state"] == "unsynchronised":
            out.append(Check(name, FAIL, f"{c['stream']} has no declared clock and its "
                             f"estimate failed ({c['reason']}); it is aligned on its raw "
                             "device clock", None, th.min_confidence))
    return out


def alignment_checks(alignment: list[dict], th: Thresholds,
                     modalities: dict[tuple[str, str], str] | None = None) -> list[Check]:
    """dt and missing checks per stream; ``modalities`` ((session, stream) -> modality) picks
    each stream's missing threshold from the SLO file (``Thresholds.missing_threshold``)."""
    out = []
    modalities = modalities or {}
    for a in alignment:
        s = a["stream"]
        if a["dt_ms"] and a["tolerance_ms"]:
            out.append(check(f"dt:{s}", a["dt_ms"]["p95"], a["tolerance_ms"], unit=" ms",
                             what=f"{s} p95 |dt| to the ticks"))
        if a["policy"] != "text_overlap" and a["missing_rate"] is not None:
            out.append(check(f"missing:{s}", a["missing_rate"],
                             th.missing_threshold(modalities.get((a["session"], s))),
                             what=f"{s} misses a share of ticks"))
    return out


def registration_checks(reg: dict, th: Thresholds) -> list[Check]:
    out = []
    for c in reg.get("cameras", []):
        if c["reference"]:
            continue
        cam = c["camera"]
        out.append(check(f"reg_inliers:{cam}", c["inlier_ratio"]["median"], th.min_inlier_ratio,
                         upper=False, what=f"{cam} median inlier ratio",
                         skip_reason=f"{cam}: no registration succeeded"))
        out.append(check(f"reg_rmse:{cam}", c["rmse_px"]["median"], th.max_rmse_px,
                         unit=" px", what=f"{cam} median reprojection error",
                         skip_reason=f"{cam}: no registration succeeded"))
    return out



@dataclass
class Inspection:
    """What a PATH gave: the JSON-ready report parts, the checks and the plot lanes."""
    kind: str                       # "recording" | "output"
    path: str
    sessions: list[str] = field(default_factory=list)
    streams: list[dict] = field(default_factory=list)
    clocks: list[dict] = field(default_factory=list)
    alignment: list[dict] = field(default_factory=list)
    alignment_note: str = ""
    registration: dict = field(default_factory=dict)
    dead: dict = field(default_factory=dict)
    expectations: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    lanes: list = field(default_factory=list)
    sync: dict = field(default_factory=dict)      # "results" ("<session>/<stream>" ->
    #                                               SyncResult), "manifests": for --plot-sync
    drift: dict | None = None                     # --baseline / --save-baseline


def clock_dict(model: ClockModel | None, t_mid: int) -> dict | None:
    if model is None:
        return None
    return {"offset_ms": float(offset_at(model, [t_mid])[0]) / 1e6,
            "drift_ppm": float(model.drift_ppm), "source": model.source}


def build_report(ins: Inspection, th: Thresholds, elapsed_s: float) -> dict:
    report = {"schema_version": SCHEMA_VERSION, "kind": ins.kind, "path": ins.path,
              "sessions": ins.sessions, "elapsed_s": round(elapsed_s, 3),
              "thresholds": th.model_dump(), "streams": ins.streams, "clocks": ins.clocks,
              "alignment": ins.alignment, "alignment_note": ins.alignment_note,
              "registration": ins.registration, "dead_letters": ins.dead,
              "expectations": ins.expectations}
    if ins.drift is not None:
        report["drift"] = ins.drift
    checks = list(ins.checks)
    dead = ins.dead
    if dead.get("rate") is not None:
        lost = dead.get("records", dead["total"])
        what = (f"{dead['total']} dead letters" if lost == dead["total"] else
                f"{dead['total']} dead letters ({lost} records)")
        checks.append(check("dead_letters", dead["rate"], th.max_dead_rate,
                            what=f"{what} of {dead['records_in']} records in, rate"))
    return finish(report, checks)




# ---------------------------------------------------------------- rendering


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "-"
        a = abs(v)
        if a and (a >= 1e6 or a < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}g}" if a >= 1000 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


_STATUS_STYLE = {PASS: "bold green", FAIL: "bold red", SKIP: "yellow"}


def render(report: dict, console) -> None:
    """Print the report as tables on a rich ``Console`` (colours only when it is a terminal)."""
    from rich.table import Table  # lazy: rich only for the tables a person reads
    from rich.text import Text

    def table(title: str, headers: list[str], rows: list[list], right: set[int]) -> None:
        t = Table(title=title, title_justify="left", title_style="bold cyan",
                  header_style="bold", box=None, pad_edge=False)
        for i, h in enumerate(headers):
            t.add_column(h, justify="right" if i in right else "left", no_wrap=i == 0)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        console.print()

    def note(title: str, text: str) -> None:
        console.print(Text(title, style="bold cyan"))
        console.print(f"  {text}", markup=False)
        console.print()

    console.print(Text(f"align-check {report['kind']} {report['path']}", style="bold"))
    console.print(f"  sessions: {', '.join(report['sessions']) or '-'}   "
                  f"({report['elapsed_s']:.1f} s)", markup=False)
    console.print()

    table("Streams", ["stream", "modality", "samples", "dur s", "rate Hz", "gaps", "dropped",
                      "drop", "dups", "out-of-order", "dead", "lost"],
          [[f"{s['session']}/{s['stream']}", s["modality"], _num(s["samples"]),
            _num(s["duration_s"]), _num(s["rate_hz"]), _num(s["gaps"]), _num(s["dropped"]),
            _pct(s["drop_rate"]), _num(s["duplicates"]), _num(s["out_of_order"]),
            _num(s["dead"]),
            "-" if s.get("records_in") is None else f"{s['lost']}/{s['records_in']}"]
           for s in report["streams"]], set(range(2, 12)))

    rows = []
    for c in report["clocks"]:
        d, e = c["declared"], c["estimated"]
        rows.append([f"{c['session']}/{c['stream']}", c["reference"] or "-",
                     "-" if d is None else f"{d['offset_ms']:+.1f} / {d['drift_ppm']:+.1f}",
                     "-" if e is None else f"{e['offset_ms']:+.1f} / {e['drift_ppm']:+.1f}",
                     _num(c["confidence"]), _num(c["error_ms"]), c["used"],
                     c["state"] + (f" ({c['reason']})" if c["reason"] else "")])
    if rows:
        table("Clocks (offset ms at mid-stream / drift ppm, onto the reference clock)",
              ["stream", "vs", "declared", "estimated", "conf", "|err| ms", "used", "state"],
              rows, {4, 5})
    else:
        note("Clocks", "no streams")

    rows = []
    for a in report["alignment"]:
        dt = a["dt_ms"] or {}
        rows.append([f"{a['session']}/{a['stream']}", a["policy"], _num(a["ticks"]),
                     _num(dt.get("p50")), _num(dt.get("p95")), _num(dt.get("max")),
                     _num(a["tolerance_ms"]), _pct(a["missing_rate"]),
                     ", ".join(f"{k} {v}" for k, v in sorted(a["status"].items(),
                                                           key=lambda kv: -kv[1]))])
    title = "Alignment (|dt| to ticks, missing-modality rate)"
    if report.get("alignment_note"):
        title += f" - {report['alignment_note']}"
    if rows:
        table(title, ["stream", "policy", "ticks", "p50 ms", "p95 ms", "max ms", "tol ms",
                      "missing", "statuses"], rows, set(range(2, 8)))
    else:
        note("Alignment", "not run" + (f" ({report['alignment_note']})"
                                       if report.get("alignment_note") else ""))

    reg = report["registration"]
    if reg["state"] != "run":
        note("Registration", f"not run ({reg['reason']})")
    else:
        table("Registration", ["camera", "pairs", "ok", "flagged", "failed", "inl med",
                               "inl min", "rmse med px", "rmse max px"],
              [[f"{c['session']}/{c['camera']}" + (" (reference)" if c["reference"] else ""),
                _num(c["pairs"]), _num(c["ok"]), _num(c["flagged"]), _num(c["failed"]),
                _num(c["inlier_ratio"]["median"]), _num(c["inlier_ratio"]["min"]),
                _num(c["rmse_px"]["median"]), _num(c["rmse_px"]["max"])]
               for c in reg["cameras"]], set(range(1, 9)))

    dl = report["dead_letters"]
    if not dl["total"]:
        note("Dead letters", "none")
    else:
        lost = dl.get("records", dl["total"])
        what = f"{dl['total']}" if lost == dl["total"] else f"{dl['total']} for {lost} records"
        table(f"Dead letters ({what} of {_num(dl['records_in'])} records in, "
              f"{_pct(dl['rate'])})", ["stage", "reason", "count"],
              [[r["stage"], r["reason"], str(r["count"])] for r in dl["by_stage_reason"]], {2})

    ex = report["expectations"]
    if ex["state"] != "run":
        note("Expectations (great-expectations)", f"not run ({ex['reason']})")
    else:
        verdict = Text("PASS", "bold green") if ex["success"] else Text("FAIL", "bold red")
        console.print(Text("Expectations (great-expectations)", style="bold cyan"))
        console.print(Text("  ").append(verdict).append(
            f"  {ex['evaluated'] - ex['failed']}/{ex['evaluated']} expectations hold "
            f"(GX start-up {ex['startup_s']:.1f} s)"))
        for r in ex["results"]:
            if not r["success"]:
                console.print(Text("    x ", "red").append(
                    f"{r['session']}: {r['expectation']} {r['column'] or ''} "
                    f"(unexpected {_num(r['unexpected_percent'])}%)"))
        console.print()

    dr = report.get("drift")
    if dr is not None:
        src = (f"against {dr['baseline']} ({dr['baseline_kind']})" if dr["baseline"]
               else "no baseline given")
        if dr["streams"]:
            table(f"Drift {src}, MMD² (RBF) with a {dr['permutations']}-permutation test",
                  ["stream", "features", "n base", "n", "MMD²", "p", "PSI", "KL", "state"],
                  [[r["stream"], r["source"], _num(r["n_baseline"]), _num(r["n"]),
                    _num(r["mmd2"]), _num(r["p_value"]), _num(r["psi"]), _num(r["kl"]),
                    r["status"]] for r in dr["streams"]], set(range(2, 8)))
        else:
            note("Drift", f"{src}: no stream with features in both")
        for r in dr["not_compared"]:
            console.print(f"  {r['stream']}: not compared ({r['reason']})", markup=False)
        if dr.get("saved"):
            console.print(f"  baseline statistics saved to {dr['saved']}", markup=False)
        console.print()

    table("Checks", ["check", "result", "detail"],
          [[c["name"], Text(c["status"].upper(), _STATUS_STYLE[c["status"]]), c["message"]]
           for c in report["checks"]], set())
    if report["ok"]:
        console.print(Text("OK: all checks hold", "bold green"))
    else:
        console.print(Text(f"FAILED: {len(report['failed'])} check(s): "
                           f"{', '.join(report['failed'])}", "bold red"))
