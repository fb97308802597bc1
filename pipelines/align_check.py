"""align-check: how well a recording or a backfill output is aligned, for a person or a CI gate.

    align-check PATH [--json] [--plot FILE.png] [--plot-sync DIR] [--config FILE] ...
    align-check OUT --baseline OTHER_OUT|STATS.json [--save-baseline STATS.json]

PATH is a recording manifest (every stream decoded and validated here without Beam, clocks
estimated with DTW-sync's plain functions, the alignment previewed with the align kernels on
the clocks the backfill would use) or a backfill output folder (aligned Parquet, dead letters,
sync results, and the great-expectations suite over the aligned rows). ``--baseline``
compares an output's embeddings and sensor values per stream with a baseline output or saved
baseline statistics (pipelines/drift.py); ``--save-baseline`` saves an output's statistics.

Exit codes: 0 every check holds; 1 a check failed (the failing checks are listed);
2 bad input (one sentence naming the file and the fix).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.deadletter.record import DeadLetter
from mmalign.pipelines import drift
from mmalign.pipelines.align_plot import Lane, plot_sync, plot_timeline
from mmalign.pipelines.align_report import (
    EXIT_BAD_INPUT,
    FAIL,
    PASS,
    SKIP,
    SLO,
    Check,
    Inspection,
    Thresholds,
    alignment_checks,
    alignment_stats,
    build_report,
    check,
    clock_checks,
    clock_dict,
    clock_error_ms,
    dead_letter_stats,
    lost_checks,
    missing_spans,
    registration_checks,
    registration_stats,
    render,
    stream_checks,
    stream_stats,
    ticks_check,
)
from mmalign.pipelines.placement import (
    StreamTimes,
    covered_spans,
    place_letters,
    stream_times,
)
from mmalign.pipelines.sync_evidence import sync_pictures
from mmalign.schemas.aligned import (
    CUES,
    DT_NS,
    POS,
    SAMPLE_END,
    SAMPLE_START,
    SRC,
    STATUS,
    TICK_NS,
    VALUE_STATUSES,
    column,
    split_column,
)
from mmalign.schemas.calibration import Calibration, load_calibration
from mmalign.schemas.camera_calibration import load_camera_calibration
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.expectations import validate_aligned
from mmalign.schemas.fs import as_path, read_schema
from mmalign.schemas.layout import (
    ALIGNED,
    DEADLETTER,
    METADATA_KEY,
    SUMMARY,
    session_dirs,
    session_of,
)
from mmalign.schemas.manifest import ManifestError, SyncSpec, _read_mapping, load_manifest
from mmalign.schemas.sync import SyncResult, read_sync_results
from mmalign.transforms.align.join import fixed_rate_ticks, join_stream, plan_from_manifest
from mmalign.transforms.clock.features import FeatureError
from mmalign.transforms.clock.sync import chunk_partial, plan_sync, stream_features, sync_session
from mmalign.transforms.decode.stage import decode_file, manifest_requests
from mmalign.transforms.io.commit import recover
from mmalign.transforms.io.parquet import read_aligned
from mmalign.transforms.validate.stage import validate_chunk

PAYLOAD_COLUMNS = ("image", "pcm")        # dropped from the in-memory copy of each stream


class BadInput(ValueError):
    """PATH or the config cannot be checked; the message is the one sentence shown."""


@contextmanager
def _progress(enabled: bool):
    """A rich progress display on stderr (transient), or nothing."""
    # rich: lazy, a display dependency only for people at a terminal (--json needs none)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), console=Console(stderr=True),
                  transient=True, disable=not enabled) as p:
        yield p


# ---------------------------------------------------------------- a recording (manifest)


def _reference_domain(m) -> str:
    t = m.alignment.ticks
    sid = t.anchor or (t.sets.streams[0] if t.sets else m.streams[0].id)
    return m.stream(sid).clock_domain


def _check_reference(m, stream, ref_domain: str) -> str | None:
    """The stream on the reference clock to estimate ``stream`` against: same modality first,
    then audio (the sharpest events), then video, then any."""
    cands = [s for s in m.streams if s.clock_domain == ref_domain and s.id != stream.id]
    for want in (stream.modality, "audio", "video"):
        for s in cands:
            if s.modality == want:
                return s.id
    return cands[0].id if cands else None


def _sync_plan(m, declared: dict, ref_domain: str, estimate: bool):
    """The manifest's sync specs plus, for the check, one per stream off the reference clock."""
    streams, check_only = [], set()
    for s in m.streams:
        if s.sync is None and estimate and s.clock_domain != ref_domain:
            ref = _check_reference(m, s, ref_domain)
            if ref is not None:
                s = s.model_copy(update={"sync": SyncSpec(reference=ref)})
                check_only.add(s.id)
        streams.append(s)
    plan = plan_sync(m.model_copy(update={"streams": streams}), declared)
    return plan, check_only


def _slim(chunk) -> pa.Table:
    """The chunk's scalar columns (payloads dropped) + ``src``, as a table."""
    d = chunk.data
    keep = [n for n in d.schema.names if n not in PAYLOAD_COLUMNS]
    t = pa.Table.from_batches([d.select(keep)])
    return t.append_column("src", pa.array([chunk.source_uri] * t.num_rows, pa.string()))


def inspect_recording(path: Path, th: Thresholds, *, estimate: bool = True,
                      progress: bool = False) -> Inspection:
    """Decode + validate every stream (no Beam), estimate clocks, preview the alignment."""
    try:
        m = load_manifest(path)
    except ManifestError as e:
        raise BadInput(str(e)) from None
    ins = Inspection("recording", str(path), [m.session])
    cal = Calibration()
    if m.calibration:
        cal_path = m.resolve(m.calibration, "calibration")
        try:    # the clocks every number below depends on: a bad entry is bad input (exit 2)
            cal = load_calibration(cal_path)
        except ManifestError as e:
            raise BadInput(str(e)) from None
        try:    # the camera geometry only matters to registration: a failed check
            rig = load_camera_calibration(cal_path)
            ins.checks.append(Check("calibration", PASS, f"{cal_path.name}: {len(cal.clocks)} "
                                    f"clock(s), {len(rig.cameras)} camera(s) valid"))
        except ManifestError as e:
            ins.checks.append(Check("calibration", FAIL, str(e)))
    declared = {s.id: cal.clock(s.clock_domain) for s in m.streams}
    ref_domain = _reference_domain(m)
    plan, check_only = _sync_plan(m, declared, ref_domain, estimate)

    tables: dict[str, list[pa.Table]] = defaultdict(list)
    metas: dict[str, dict] = {}
    parts: dict[tuple[str, float], list] = defaultdict(list)
    dead: list[DeadLetter] = []
    with _progress(progress) as bar:
        task = bar.add_task("decoding", total=sum(len(s.paths) for s in m.streams), note="")
        for req in manifest_requests(m):
            s = req.stream
            need = plan.needs.get(s.id)
            for i, out in enumerate(decode_file(s, req.path, session_id=m.session,
                                                roots=req.roots,
                                                time_offset_ns=req.time_offset_ns)):
                bar.update(task, note=f"{s.id}: chunk {i + 1}")
                if isinstance(out, DeadLetter):
                    dead.append(out)
                    continue
                good, letters = validate_chunk(out, s.options)
                dead += letters
                if good is None:
                    continue
                for rate in (need.families if need else ()):
                    try:
                        part = chunk_partial(good, need, rate)
                    except FeatureError as e:
                        part = ("error", f"chunk {good.seq} of {good.source_uri}: {e}")
                    if part is not None:
                        parts[(s.id, rate)].append(part)
                tables[s.id].append(_slim(good))
                metas.setdefault(s.id, good.meta)
            bar.advance(task)

    results = {}
    if plan.specs:
        feats, warns = {}, {}
        for (sid, rate), ps in parts.items():
            need = plan.needs[sid]
            feats[(sid, rate)], warns[(sid, rate)] = stream_features(
                need.modality, rate, need.families[rate], ps)
        results = {r.stream_id: r for r in sync_session(plan, feats, warns)}
    ins.sync = {"results": {f"{m.session}/{k}": r for k, r in results.items()},
                "manifests": {m.session: m}}

    used: dict[str, ClockModel] = {}
    whole: dict[str, pa.Table] = {}
    dead_by_stream = defaultdict(list)
    for d in dead:
        dead_by_stream[d.stream_id].append(d)
    for s in m.streams:
        t = (pa.concat_tables(tables[s.id]).sort_by("t_ns") if tables[s.id] else None)
        whole[s.id] = t
        t_dev = t.column("t_ns").to_numpy() if t is not None else np.zeros(0, np.int64)
        meta = metas.get(s.id, {})
        st = stream_stats(t_dev, s.modality,
                          n_samples=t.column("n_samples").to_numpy()
                          if t is not None and "n_samples" in t.column_names else None,
                          sample_rate=meta.get("sample_rate"))
        reasons = [d.reason for d in dead_by_stream[s.id]]
        lost = sum(d.records for d in dead_by_stream[s.id])
        decl = declared[s.id]
        r = results.get(s.id)
        model = r.model if (r is not None and s.id not in check_only) else decl
        used[s.id] = model
        ins.streams.append({"session": m.session, "stream": s.id, "modality": s.modality,
                            **{k: v for k, v in st.items() if k != "gap_spans"},
                            "duplicates": reasons.count("duplicate_timestamp"),
                            "out_of_order": reasons.count("out_of_order"),
                            "dead": len(reasons),
                            "records_in": (t.num_rows if t is not None else 0) + lost,
                            "lost": lost})
        ins.clocks.append(_clock_row(m.session, s, decl, r, s.id in check_only,
                                     s.clock_domain == ref_domain, cal, t_dev, th, estimate))
        spans = [(int(model.to_ref([a])[0]), int(model.to_ref([b])[0]))
                 for a, b in st["gap_spans"]]
        covered = None
        if s.modality == "text":    # cues cover [start, end]; time between cues is no gap
            ends = (t.column("t_end_ns").to_numpy() if t is not None and "t_end_ns" in
                    t.column_names else t_dev)
            covered = [(int(a), int(b)) for a, b in zip(model.to_ref(t_dev),
                                                        model.to_ref(ends))]
            spans = []
        pos = (t.column("pos").to_numpy() if t is not None and "pos" in t.column_names
               else np.zeros(0, np.int64))
        where = StreamTimes(pos.astype(np.int64), model.to_ref(t_dev),
                            np.asarray(t.column("src").to_pylist() if t is not None
                                       else [], object))
        letters = [{"event_time_ns": d.event_time_ns, "position": d.position,
                    "source_uri": d.source_uri} for d in dead_by_stream[s.id]]
        ins.lanes.append(Lane(m.session, s.id, s.modality, model.to_ref(t_dev), spans,
                              dead_ns=place_letters(letters, where, model, 0),
                              clock_note=_clock_note(ins.clocks[-1]), spans=covered,
                              marks=s.modality != "audio"))
    records_in = sum(r["records_in"] for r in ins.streams)
    ins.dead = dead_letter_stats([d.stage for d in dead], [d.reason for d in dead],
                                 [d.stream_id for d in dead], records_in,
                                 [d.records for d in dead])

    # alignment preview: the align kernels over whole streams on the clocks the backfill uses
    splan = plan_from_manifest(m)
    clocked = {sid: _to_ref(t, used[sid]) for sid, t in whole.items()}
    ticks = None
    if splan.anchor and splan.anchor in clocked:
        a = clocked[splan.anchor]
        ticks = np.unique(a.column("t_ns").to_numpy()) if a is not None else np.zeros(0, np.int64)
    elif splan.rate_hz:
        ext = [(int(pa.compute.min(t.column("t_ns")).as_py()),
                int(pa.compute.max(t.column("t_ns")).as_py()))
               for t in clocked.values() if t is not None and t.num_rows]
        lo, hi = (min(e[0] for e in ext), max(e[1] for e in ext)) if ext else (0, -1)
        ticks = fixed_rate_ticks(lo, hi + 1, splan.rate_hz, lo, hi)
    if ticks is None:
        ins.alignment_note = ("approximate-time set ticks are not previewed; check the backfill "
                              "output")
    else:
        ins.checks.append(ticks_check({m.session: int(ticks.size)},
                                      {m.session: _no_ticks_reason(splan, dead_by_stream)}))
        if not ticks.size:
            ins.alignment_note = "no ticks: nothing to align"
    if ticks is not None and ticks.size:
        ins.alignment_note = "preview on the recording"
        cols: dict[str, pa.Array] = {"tick_ns": pa.array(ticks, pa.int64())}
        for sp in splan.streams:
            cols.update(join_stream(sp, ticks, clocked.get(sp.stream_id),
                                    metas.get(sp.stream_id)))
        aligned = pa.table({k: v for k, v in cols.items()
                            if k == TICK_NS or (split_column(k) or ("", ""))[1] in (STATUS,
                                                                                     DT_NS)})
        ins.alignment = alignment_stats(aligned, splan.params["policies"], m.session)
        for lane in ins.lanes:
            st_col = aligned.column(column(lane.stream, STATUS)).cast(pa.string()).to_pylist()
            ok = np.isin(np.asarray(st_col, object), VALUE_STATUSES)
            lane.missing_ns = ticks[~ok]
    ins.registration = {"state": "not run", "reason": "registration runs in the backfill; "
                        "check its output folder", "cameras": []}
    ins.expectations = {"state": "not run", "reason": "the suite runs on an output folder"}
    ins.checks += (stream_checks(ins.streams, th) + lost_checks(ins.streams, th)
                   + clock_checks(ins.clocks, th)
                   + alignment_checks(ins.alignment, th, _modalities(ins)))
    return ins


def _modalities(ins: Inspection) -> dict[tuple[str, str], str]:
    """(session, stream) -> modality of the streams an inspection found."""
    return {(r["session"], r["stream"]): r["modality"] for r in ins.streams}


def _letters(letters) -> str:
    """``decode/corrupt_media x1, ...`` of dead letters (objects or rows)."""
    def get(d, k):
        return d[k] if isinstance(d, dict) else getattr(d, k)
    c = Counter(f"{get(d, 'stage')}/{get(d, 'reason')}" for d in letters)
    return ", ".join(f"{k} x{n}" for k, n in c.most_common(3)) or "none"


def _no_ticks_reason(splan, dead_by_stream: dict) -> str:
    """Why a session has no ticks: its tick source had no valid records (and its letters)."""
    if splan.anchor:
        return (f"its tick source {splan.anchor} has no valid records (dead letters: "
                f"{_letters(dead_by_stream.get(splan.anchor, []))})")
    return "no stream has valid records to span fixed-rate ticks"


def _to_ref(t: pa.Table | None, model: ClockModel) -> pa.Table | None:
    if t is None or t.num_rows == 0:
        return None
    for name in ("t_ns", "t_end_ns"):
        if name in t.column_names:
            i = t.column_names.index(name)
            t = t.set_column(i, name, pa.array(model.to_ref(t.column(name).to_numpy()),
                                               pa.int64()))
    return t.sort_by("t_ns")


def _clock_row(session: str, s, decl: ClockModel, r, check_only: bool, on_ref: bool, cal,
               t_dev: np.ndarray, th: Thresholds, estimate: bool) -> dict:
    """Declared vs estimated clock of one stream, and what the backfill uses."""
    t_mid = int(t_dev[len(t_dev) // 2]) if t_dev.size else 0
    has_decl = s.clock_domain in cal.clocks
    row = {"session": session, "stream": s.id, "reference": None,
           "declared": clock_dict(decl, t_mid) if has_decl else None, "estimated": None,
           "confidence": None, "error_ms": None, "used": "declared" if has_decl else "identity",
           "state": "not estimated", "reason": ""}
    if on_ref:
        row.update(state="reference", used="reference")
        return row
    if r is None:
        row["reason"] = ("--no-estimate" if not estimate else
                         "no stream on the reference clock to estimate against")
        return row
    row.update(reference=r.reference, confidence=round(float(r.confidence), 3))
    confident = not r.fell_back and r.confidence >= th.min_confidence
    if confident:
        row["estimated"] = clock_dict(r.model, t_mid)
        ends = t_dev[[0, len(t_dev) // 2, -1]] if t_dev.size else np.zeros(1, np.int64)
        row["error_ms"] = round(clock_error_ms(decl, r.model, ends), 3)
    if check_only:
        if confident:
            row["state"] = "compared"
        else:
            row["reason"] = r.reason or f"confidence {r.confidence:.2f} < {th.min_confidence}"
        return row
    if not r.fell_back:
        row.update(state="estimated", used="estimated")
    elif has_decl:
        row.update(state="fallback", used="declared", reason=r.reason)
    else:
        row.update(state="unsynchronised", used="identity", reason=r.reason)
    return row


def _clock_note(c: dict) -> str:
    if c["state"] == "reference":
        return "reference clock"
    parts = []
    if c["declared"]:
        parts.append(f"decl {c['declared']['offset_ms']:+.1f} ms")
    if c["estimated"]:
        parts.append(f"est {c['estimated']['offset_ms']:+.1f} ms (conf {c['confidence']:.2f})")
    return ", ".join(parts) or c["state"]


# ---------------------------------------------------------------- an output folder


def _session_params(aligned_dir: Path) -> dict[str, dict]:
    """The ``mmalign`` Parquet metadata of each session's first part file."""
    out = {}
    for d in session_dirs(aligned_dir):
        files = sorted(d.glob("part-*.parquet"))
        if files:
            meta = read_schema(files[0]).metadata or {}
            out[session_of(d)] = json.loads(meta.get(METADATA_KEY, b"{}"))
    return out


_MODALITY_OF_POLICY = {"audio_window": "audio", "text_overlap": "text", "interpolate": "sensor"}


def inspect_output(out: Path, th: Thresholds, *, expectations: bool = True,
                   progress: bool = False) -> Inspection:
    """Aligned Parquet, dead letters, sync results and the GX suite of a backfill output."""
    recover(out)          # finish an interrupted commit first: the output is then whole
    try:
        aligned = read_aligned(out / ALIGNED)
        dead = read_dead_letters(out / DEADLETTER)
        params = _session_params(out / ALIGNED)
        summary = (json.loads((out / SUMMARY).read_text())
                   if (out / SUMMARY).is_file() else {})
        if not isinstance(summary, dict):
            raise BadInput(f"{out / SUMMARY} is not a run summary (a JSON object); "
                           "rerun the backfill into it")
        sync = summary.get("sync")
        sync = ({k: SyncResult.from_dict(r) for k, r in sync.items()}
                if isinstance(sync, dict) and sync else read_sync_results(out))
    except (pa.ArrowException, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{out} is not a readable backfill output ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); rerun the backfill into it") from None
    has_rows = aligned.num_rows > 0 and "session_id" in aligned.column_names
    ran = [s for s in _listed(summary, "sessions") if isinstance(s, str)]
    if not has_rows and not ran:
        raise BadInput(f"{out / 'aligned'} holds no aligned rows and no summary.json in {out} "
                       "names a session; rerun the backfill or check its dead letters")
    if not has_rows:
        aligned = pa.table({"session_id": pa.array([], pa.string()),
                            "tick_ns": pa.array([], pa.int64())})
    found = set(aligned.column("session_id").to_pylist())
    ins = Inspection("output", str(out), sorted(found | set(ran)))
    cols = ["session_id", "stream_id", "modality", "stage", "reason", "event_time_ns",
            "position", "source_uri"]
    dead_rows = dead.select(cols + (["records"] if "records" in dead.column_names else [])
                            ).to_pylist()
    accounting = _accounting(summary)
    records_in = (sum(a["records_in"] for a in accounting.values()) if accounting else None)
    ins.dead = dead_letter_stats([d["stage"] for d in dead_rows], [d["reason"] for d in dead_rows],
                                 [d["stream_id"] for d in dead_rows], records_in,
                                 [d.get("records") for d in dead_rows])
    counts = Counter(aligned.column("session_id").to_pylist())
    manifests = _run_manifests(summary)
    ins.checks.append(ticks_check({s: counts.get(s, 0) for s in ins.sessions},
                                  _no_ticks_reasons(manifests, dead_rows)))
    cams = []
    policies_by_session = {}
    for session in ins.sessions:
        part = aligned.filter(pc.equal(aligned.column("session_id"), session))
        meta = params.get(session, {})
        policies = meta.get("sessions", {}).get(session, {}).get("policies", {})
        policies_by_session[session] = policies
        clocks = meta.get("clocks", {})
        ticks = part.column("tick_ns").to_numpy()
        t_mid = int(ticks[len(ticks) // 2]) if ticks.size else 0
        mine = [d for d in dead_rows if d["session_id"] == session]
        rows = alignment_stats(part, policies, session)
        ins.alignment += rows
        for a in rows:
            s = a["stream"]
            reasons = [d["reason"] for d in mine if d["stream_id"] == s]
            mods = {d["modality"] for d in mine if d["stream_id"] == s and d["modality"]}
            used = _distinct_used(part, s)
            ins.streams.append({
                "session": session, "stream": s,
                "modality": mods.pop() if len(mods) == 1 else
                _MODALITY_OF_POLICY.get(a["policy"], "-"),
                "samples": used, "duration_s": None, "rate_hz": None, "gaps": None,
                "dropped": None, "drop_rate": None,
                "duplicates": reasons.count("duplicate_timestamp"),
                "out_of_order": reasons.count("out_of_order"), "dead": len(reasons)})
            c = _output_clock(session, s, clocks.get(f"{session}/{s}"),
                              sync.get(f"{session}/{s}"), t_mid)
            ins.clocks.append(c)
            st = part.column(column(s, STATUS)).cast(pa.string()).to_pylist()
            ok = np.isin(np.asarray(st, object), VALUE_STATUSES)
            r = sync.get(f"{session}/{s}")      # the model the stream's times went through
            model = r.model if r is not None else ClockModel.from_dict(
                clocks.get(f"{session}/{s}") or {})
            mod = ins.streams[-1]["modality"]
            own = stream_times(part, s).sorted_unique()
            first = int(ticks.min()) if ticks.size else 0
            ins.lanes.append(Lane(
                session, s, mod, own.t_ns,
                [] if mod == "text" else missing_spans(ticks, ok), ticks[~ok],
                place_letters([d for d in mine if d["stream_id"] == s], own, model, first),
                _clock_note(c), spans=covered_spans(part, s), marks=mod != "audio"))
        cams += registration_stats(part, session)
    recorded = _merge_recording_stats(ins, _listed(summary, "manifests"), th, progress)
    modality_of = {(d["stream_id"], d["modality"]) for d in dead_rows if d["stream_id"]}
    modality_of |= {(r["stream"], r["modality"]) for r in ins.streams + recorded}
    modality_of |= {(st.id, st.modality) for m in manifests for st in m.streams}
    ins.checks += _lost_by_modality(accounting, modality_of, th)
    # a modality with several streams: each stream's own share, measured on its recording
    per_mod = Counter(mod for _, mod in modality_of)
    ins.checks += lost_checks([r for r in recorded if per_mod[r["modality"]] > 1], th)
    ins.alignment_note = "from the aligned Parquet" if has_rows else "no aligned rows"
    ins.sync = {"results": sync, "manifests": {m.session: m for m in manifests}}
    ins.registration = ({"state": "run", "reason": "", "cameras": cams} if cams else
                        {"state": "not run", "reason": "no <camera>__reg_status columns in the "
                         "aligned rows: the registration stage did not run", "cameras": []})
    ins.checks += (clock_checks(ins.clocks, th)
                   + alignment_checks(ins.alignment, th, _modalities(ins))
                   + registration_checks(ins.registration, th))
    if expectations and not has_rows:
        ins.expectations = {"state": "not run", "reason": "no aligned rows"}
    elif expectations and not _has_gx():
        ins.expectations = {"state": "not run", "reason": "great-expectations is not installed "
                            "(pip install 'mmalign[gx]'), or run with --no-expectations"}
        ins.checks.append(Check("expectations", FAIL, ins.expectations["reason"]))
    elif expectations:
        with _progress(progress) as bar:
            bar.add_task("great-expectations suite", total=None, note="")
            ins.expectations = validate_aligned(aligned, policies_by_session, th.max_missing)
        ex = ins.expectations
        ins.checks.append(Check("expectations", PASS if ex["success"] else FAIL,
                                f"{ex['evaluated'] - ex['failed']} of {ex['evaluated']} "
                                "expectations hold on the aligned rows"))
    else:
        ins.expectations = {"state": "not run", "reason": "--no-expectations"}
    return ins


def _has_gx() -> bool:
    """Whether the great-expectations suite can run (the ``gx`` extra)."""
    return importlib.util.find_spec("great_expectations") is not None


def _listed(summary: dict, key: str) -> list:
    """``summary[key]`` when it is a list, else []: a hand-edited summary never crashes."""
    v = summary.get(key)
    return v if isinstance(v, list) else []


def _accounting(summary: dict) -> dict[str, dict]:
    """The summary's per-modality accounting, entries with integer counts only."""
    acc = summary.get("accounting")
    if not isinstance(acc, dict):
        return {}
    return {m: a for m, a in acc.items() if isinstance(a, dict)
            and isinstance(a.get("records_in"), int) and isinstance(a.get("dead"), int)}


def _lost_by_modality(accounting: dict[str, dict], streams: set[tuple[str, str]],
                      th: Thresholds) -> list[Check]:
    """From the run's accounting (decode + validate dead letters / records in, per
    modality): ``lost:<stream>`` when the stream is its modality's only one, else
    ``lost:<modality>*`` over the modality's streams; ``streams`` holds (stream, modality)."""
    by_mod: dict[str, set[str]] = defaultdict(set)
    for sid, mod in streams:
        by_mod[mod].add(sid)
    out = []
    for mod, a in sorted(accounting.items()):
        names = sorted(by_mod.get(mod, ()))
        name, who = ((f"lost:{names[0]}", names[0]) if len(names) == 1 else
                     (f"lost:{mod}*", f"the {mod} streams"))
        n, lost = a["records_in"], a["dead"]
        if n <= 0:
            out.append(Check(name, SKIP, f"{who}: no records came in", None, th.max_lost_rate))
            continue
        out.append(check(name, lost / n, th.max_lost_rate,
                         what=f"{who} lost {lost} of {n} records to dead letters, rate"))
    return out


def _run_manifests(summary: dict) -> list:
    """The run's manifests that still load (the summary names them)."""
    out = []
    for path in _listed(summary, "manifests"):
        try:
            out.append(load_manifest(path))
        except (ManifestError, TypeError, ValueError):
            continue
    return out


def _no_ticks_reasons(manifests: list, dead_rows: list[dict]) -> dict[str, str]:
    """Why each session of the run may have no ticks: its tick source and its letters."""
    out = {}
    for m in manifests:
        t = m.alignment.ticks
        mine = [d for d in dead_rows if d["session_id"] == m.session]
        if t.anchor:
            out[m.session] = (f"its tick source {t.anchor} has no valid records (dead letters: "
                              f"{_letters([d for d in mine if d['stream_id'] == t.anchor])})")
        else:
            out[m.session] = f"no aligned rows (dead letters: {_letters(mine)})"
    for s in {d["session_id"] for d in dead_rows} - set(out):
        out[s] = (f"no aligned rows (dead letters: "
                  f"{_letters([d for d in dead_rows if d['session_id'] == s])})")
    return out


_RECORDING_FIELDS = ("duration_s", "rate_hz", "gaps", "dropped", "drop_rate", "records_in",
                     "lost")


def _merge_recording_stats(ins: Inspection, manifests: list[str], th: Thresholds,
                           progress: bool) -> list[dict]:
    """Per-stream duration, rate, gaps, drops and lost records from the recordings the
    summary names (when they are still on disk), and their drop checks; clocks stay the
    output's own. Returns every stream row of those recordings."""
    rows = {(r["session"], r["stream"]): r for r in ins.streams}
    measured, recorded = [], []
    for m in manifests:
        if not isinstance(m, str) or not as_path(m).is_file():
            continue
        try:
            rec = inspect_recording(as_path(m), th, estimate=False, progress=progress)
        except (BadInput, ManifestError):
            continue
        recorded += rec.streams
        for r in rec.streams:
            mine = rows.get((r["session"], r["stream"]))
            if mine is not None:
                mine.update({k: r.get(k) for k in _RECORDING_FIELDS})
                if mine.get("modality") in (None, "-"):
                    mine["modality"] = r["modality"]
                measured.append(r)
    ins.checks += stream_checks(measured, th)
    return recorded


def _distinct_used(part: pa.Table, s: str) -> int | None:
    """How many distinct source samples the stream's ticks used (``__src``, ``__pos``): frames
    or rows; for audio the PCM samples its windows cover (as a recording counts them); for
    text the distinct cues."""
    names = [c for c in (column(s, POS), column(s, SAMPLE_START)) if c in part.column_names]
    if column(s, SAMPLE_END) in part.column_names and names == [column(s, SAMPLE_START)]:
        return _audio_samples_used(part, s)
    if column(s, CUES) in part.column_names:
        src = (part.column(column(s, SRC)).cast(pa.string()).to_pylist()
               if column(s, SRC) in part.column_names else [None] * part.num_rows)
        return len({(f, c) for f, cs in zip(src, part.column(column(s, CUES)).to_pylist())
                    for c in cs or ()})
    if not names:
        return None
    keys = [part.column(names[0])]
    if column(s, SRC) in part.column_names:
        keys.append(part.column(column(s, SRC)).cast(pa.string()))
    t = pa.table({f"k{i}": k for i, k in enumerate(keys)}).drop_null()
    return t.group_by([f"k{i}" for i in range(len(keys))]).aggregate([]).num_rows


def _audio_samples_used(part: pa.Table, s: str) -> int:
    """PCM samples covered by the union of a stream's windows [start, end), per file."""
    t = pa.table({"src": part.column(column(s, SRC)).cast(pa.string())
                  if column(s, SRC) in part.column_names else pa.nulls(part.num_rows,
                                                                       pa.string()),
                  "a": part.column(column(s, SAMPLE_START)),
                  "b": part.column(column(s, SAMPLE_END))}).drop_null()
    total = 0
    for f in set(t.column("src").to_pylist()):
        sel = t.filter(pc.equal(t.column("src"), f))
        a, b = sel.column("a").to_numpy(), sel.column("b").to_numpy()
        order = np.argsort(a, kind="stable")
        hi = None
        for x, y in zip(a[order], b[order]):
            if hi is None or x > hi:
                total += int(y - x)
                hi = y
            elif y > hi:
                total += int(y - hi)
                hi = y
    return total


def _output_clock(session: str, s: str, decl: dict | None, r: SyncResult | None,
                  t_mid: int) -> dict:
    """Declared (``decl``: a ``ClockModel.to_dict()`` of the output's metadata) vs estimated
    clock of one stream of an output folder."""
    declared = (ClockModel.from_dict({"source": "declared", **decl})
                if decl and decl.get("source") != "identity" else None)
    row = {"session": session, "stream": s, "reference": None,
           "declared": clock_dict(declared, t_mid) if declared else None, "estimated": None,
           "confidence": None, "error_ms": None,
           "used": "declared" if declared else "identity", "state": "not estimated",
           "reason": "no sync spec for the stream"}
    if r is None:
        return row
    row.update(reference=r.reference, reason=r.reason,
               confidence=None if math.isnan(r.confidence) else r.confidence)
    if not r.fell_back:
        est = r.model
        row.update(estimated=clock_dict(est, t_mid), state="estimated", used="estimated")
        if declared:
            row["error_ms"] = round(clock_error_ms(declared, est, [t_mid]), 3)
    elif declared:
        row.update(state="fallback", used="declared")
    else:
        row.update(state="unsynchronised", used="identity")
    return row


# ---------------------------------------------------------------- config + CLI


def load_thresholds(config: str | None, overrides: dict) -> Thresholds:
    """Defaults, then the config file (top level or under ``align_check:``), then options."""
    data: dict = {}
    if config:
        try:
            raw = _read_mapping(Path(config), "config file")
        except ManifestError as e:
            raise BadInput(str(e)) from None
        data = dict(raw.get("align_check", raw))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Thresholds.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = f"config file {config}" if config else "the options"
        raise BadInput(f"{where}: threshold '{'.'.join(map(str, err['loc']))}': {err['msg']}; "
                       f"use one of {sorted(Thresholds.model_fields)} with a valid value") \
            from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="align-check",
        description="How well a recording (manifest) or a backfill output folder is aligned. "
                    "Exit 0: all checks hold; 1: a check failed; 2: bad input.")
    p.add_argument("path", help="a recording manifest (.yaml/.json) or a backfill --out folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON "
                   "(schemas/align_report.schema.json) instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="write a timeline picture of the streams")
    p.add_argument("--plot-sync", metavar="DIR", help="write the evidence behind each DTW-sync "
                   "estimate, one PNG per synced stream: the feature curves before and after "
                   "the fit, landmark pairs, fitted line, DTW path and residuals")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON thresholds (keys as the "
                   "options below, top level or under align_check:)")
    p.add_argument("--no-expectations", action="store_true",
                   help="skip the great-expectations suite on an output folder")
    p.add_argument("--no-estimate", action="store_true",
                   help="recording: do not estimate clocks by DTW (declared clocks only)")
    p.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    p.add_argument("--baseline", metavar="OUT_OR_STATS", help="output folder: drift of its "
                   "embeddings and sensor values per stream against a baseline output folder "
                   "or saved statistics (--save-baseline); MMD², permutation p-value, PSI/KL, "
                   "sample sizes; fails (exit 1) on a drifted stream")
    p.add_argument("--save-baseline", metavar="FILE", help="output folder: save its per-stream "
                   "drift statistics to FILE (JSON) for later --baseline runs and the jobs' "
                   "--drift-baseline")
    for name, f in Thresholds.model_fields.items():
        p.add_argument("--" + name.replace("_", "-"), type=float, default=None,
                       help=f"{f.description} (default {f.default})")
    return p


def run_check(path: str, th: Thresholds, *, expectations: bool = True, estimate: bool = True,
              progress: bool = False, plot: str | None = None,
              plot_sync_dir: str | None = None, baseline: str | None = None,
              save_baseline: str | None = None) -> dict:
    """The report for PATH (raises BadInput when PATH cannot be checked)."""
    t0 = time.perf_counter()
    p = as_path(path)            # a folder, a file, or an s3:// / gs:// URI
    if (baseline or save_baseline) and not p.is_dir():
        raise BadInput(f"--baseline/--save-baseline compare backfill outputs; {p} is not an "
                       "output folder (give the --out folder of `mmalign backfill`)")
    if p.is_dir():
        if not ((p / ALIGNED).is_dir() or (p / SUMMARY).is_file()):
            raise BadInput(f"{p} is a folder without aligned/ or summary.json; give a backfill "
                           "--out folder or a manifest file")
        ins = inspect_output(p, th, expectations=expectations, progress=progress)
    elif p.is_file():
        ins = inspect_recording(p, th, estimate=estimate, progress=progress)
    else:
        raise BadInput(f"{p} does not exist; give a manifest file or a backfill --out folder")
    if baseline or save_baseline:
        ins.drift = drift_section(p, ins, th, baseline, save_baseline)
        ins.checks += drift_checks(ins.drift)
    report = build_report(ins, th, time.perf_counter() - t0)
    if plot:
        failed = {n.split(":", 1)[1] for n in report["failed"] if ":" in n}
        for lane in ins.lanes:
            lane.failed = lane.stream in failed
        try:
            plot_timeline(ins.lanes, plot, title=f"align-check {ins.kind} {ins.path}")
        except OSError as e:
            raise BadInput(f"cannot write the plot {plot} ({e.strerror}); give a writable "
                           "path") from None
        report["plot"] = str(plot)
    if plot_sync_dir:
        report["plot_sync"] = write_sync_plots(ins, plot_sync_dir)
    return report


def _output_features(out, modalities: dict[str, str]) -> dict[str, tuple]:
    """stream -> (modality, source, names, rows) of an output's aligned rows, every session
    pooled (pipelines/drift.py ``table_features``)."""
    try:
        table = read_aligned(out / ALIGNED)
    except (pa.ArrowException, OSError) as e:
        raise BadInput(f"{out} is not a readable backfill output ({type(e).__name__}); give "
                       "an output folder or baseline statistics") from None
    if table.num_rows == 0:
        return {}
    try:
        return drift.table_features(table, modalities)
    except ValueError as e:
        raise BadInput(f"{out}: {e}") from None


def _stream_modalities(out, ins: Inspection) -> dict[str, str]:
    """stream -> modality, from the output's run summary (its manifests) and the inspection."""
    mods = {r["stream"]: r["modality"] for r in ins.streams if r["modality"] in
            ("video", "audio", "text", "sensor")}
    summary = out / SUMMARY
    if summary.is_file():
        try:
            for m in _run_manifests(json.loads(summary.read_text())):
                mods.update({s.id: s.modality for s in m.streams})
        except (ValueError, OSError):
            pass
    return mods


def drift_section(out, ins: Inspection, th: Thresholds, baseline: str | None,
                  save_baseline: str | None) -> dict:
    """The report's ``drift`` part: per stream with features (embeddings, sensor values), the
    drift of this output against ``baseline`` (an output folder or a statistics file), and/or
    this output's statistics saved to ``save_baseline``."""
    cfg = SLO.drift
    mods = _stream_modalities(out, ins)
    current = _output_features(out, mods)
    section: dict = {"baseline": baseline, "baseline_kind": None, "saved": None,
                     "thresholds": {"max_mmd": th.max_drift_mmd, "max_p_value": th.max_drift_p,
                                    "min_samples": int(th.min_drift_samples)},
                     "max_samples": cfg.max_samples, "permutations": cfg.permutations,
                     "streams": [], "not_compared": []}
    if save_baseline:
        fitted = {s: drift.fit(s, mod, src, cols, x, cfg.max_samples)
                  for s, (mod, src, cols, x) in current.items() if len(x)}
        try:
            section["saved"] = str(drift.save_baselines(save_baseline, fitted, str(out)))
        except OSError as e:
            raise BadInput(f"cannot write --save-baseline {save_baseline} ({e.strerror}); give "
                           "a writable path") from None
    if not baseline:
        return section
    b = as_path(baseline)
    if drift.is_baseline_file(b):
        section["baseline_kind"] = "statistics"
        try:
            bases = drift.load_baselines(b)
        except ValueError as e:
            raise BadInput(f"--baseline: {e}") from None
    elif b.is_dir() and ((b / ALIGNED).is_dir() or (b / SUMMARY).is_file()):
        section["baseline_kind"] = "output"
        recover(b)
        bmods = {**mods, **_stream_modalities(b, Inspection("output", str(b)))}
        bases = {s: drift.fit(s, mod, src, cols, x, cfg.max_samples)
                 for s, (mod, src, cols, x) in _output_features(b, bmods).items() if len(x)}
    else:
        raise BadInput(f"--baseline {b}: neither a backfill output folder nor baseline "
                       "statistics (align-check OUT --save-baseline FILE makes them)")
    for s in sorted(set(bases) | set(current)):
        if s not in bases or s not in current:
            section["not_compared"].append(
                {"stream": s, "reason": "not in the baseline" if s not in bases
                 else "no rows with features in this output"})
            continue
        r = drift.compare(bases[s], current[s][3], max_mmd=th.max_drift_mmd,
                          max_p_value=th.max_drift_p,
                          min_samples=int(th.min_drift_samples),
                          max_samples=cfg.max_samples, permutations=cfg.permutations)
        section["streams"].append(r.as_dict())
    return section


def drift_checks(section: dict) -> list[Check]:
    """``drift:<stream>``: fail when a stream drifted, skip when it had too few rows."""
    out = []
    for r in section.get("streams", []):
        name = f"drift:{r['stream']}"
        if r["status"] == drift.TOO_FEW:
            out.append(Check(name, SKIP, r["message"]))
        else:
            out.append(Check(name, FAIL if r["status"] == drift.DRIFTED else PASS,
                             r["message"], r["mmd2"], section["thresholds"]["max_mmd"]))
    return out


def write_sync_plots(ins: Inspection, folder: str) -> list[str]:
    """The sync-evidence PNGs of every DTW-sync result an inspection found (the curves made
    from its recording when the manifest loads)."""
    results = ins.sync.get("results", {})
    manifests = ins.sync.get("manifests", {})
    by_session: dict[str, dict[str, SyncResult]] = defaultdict(dict)
    for key, r in results.items():
        session, _, stream = key.partition("/")
        by_session[session][stream] = r
    pictures = []
    for session, rs in sorted(by_session.items()):
        pictures += sync_pictures(manifests.get(session), rs, session)
    try:
        return plot_sync(pictures, folder)
    except OSError as e:
        raise BadInput(f"cannot write the sync plots into {folder} ({e.strerror}); give a "
                       "writable folder") from None


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not math.isfinite(v) else float(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _clean(v):
    """NaN/inf -> None so the JSON is strict."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from rich.console import Console  # rich: lazy, a display dependency (see _progress)

    err = Console(stderr=True, highlight=False)
    overrides = {k: getattr(args, k) for k in Thresholds.model_fields}
    try:
        th = load_thresholds(args.config, overrides)
        report = run_check(args.path, th, expectations=not args.no_expectations,
                           estimate=not args.no_estimate,
                           progress=not args.json and err.is_terminal, plot=args.plot,
                           plot_sync_dir=args.plot_sync, baseline=args.baseline,
                           save_baseline=args.save_baseline)
    except (BadInput, ManifestError) as e:
        err.print(f"align-check: {e}", markup=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    report = _clean(report)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, default=_json_default) + "\n")
    else:
        out = Console(no_color=args.no_color, highlight=False)
        if not out.is_terminal:
            out = Console(no_color=args.no_color, highlight=False, width=150)
        render(report, out)
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
