"""The run summary: what came in, what was aligned, what went to the dead letters and why.

It proves the accounting per modality from the pipeline's own counters:

    decoded records + decode dead letters = records in
    records in = aligned samples + dead letters (decode + validate)

and that the sinks kept what the stages sent them (``written``): the rows in OUT/aligned
equal the ticks the align stage emitted, the letters in OUT/deadletter those the dead-letter
sink received -- counted from the files, so a write lost anywhere after the stages shows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pyarrow.compute as pc

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.schemas.aligned import STATUS, column
from mmalign.schemas.chunk import MODALITIES
from mmalign.schemas.fs import read_schema, read_table
from mmalign.schemas.layout import ALIGNED, DEADLETTER
from mmalign.schemas.metrics import (
    ALIGN,
    DEAD,
    DECODE,
    RECORDS,
    SAMPLES,
    TICKS,
    VALIDATE,
)
from mmalign.schemas.metrics import DEADLETTER as LETTER_SINK
from mmalign.schemas.sync import SyncResult, read_sync_results
from mmalign.transforms.io.parquet import part_files


def counters(result) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        res = result.metrics().query()
    except Exception:  # a runner without metrics support: the summary says so
        return out
    for c in res["counters"]:
        name = f"{c.key.metric.namespace}.{c.key.metric.name}"
        value = c.committed if c.committed is not None else c.attempted
        out[name] = out.get(name, 0) + int(value or 0)
    return out


def accounting(cnt: dict[str, int]) -> dict[str, dict]:
    by_mod: dict[str, dict] = {}
    mods = {k.split(".")[1] for k in cnt if k.count(".") == 2} & set(MODALITIES)
    for m in sorted(mods):
        decoded = cnt.get(DECODE.key(RECORDS, m), 0)
        dead_decode = cnt.get(DECODE.key(DEAD, m), 0)
        dead_validate = cnt.get(VALIDATE.key(DEAD, m), 0)
        aligned = cnt.get(ALIGN.key(SAMPLES, m), 0)
        records_in = decoded + dead_decode
        by_mod[m] = {"records_in": records_in, "aligned": aligned,
                     "dead": dead_decode + dead_validate,
                     "balanced": records_in == aligned + dead_decode + dead_validate}
    return by_mod


def written(cnt: dict[str, int], aligned_rows: int, dead_rows: int) -> dict[str, dict]:
    """What the stages emitted (counters) against what the output folders hold (files);
    empty when the runner reports no counters."""
    out = {}
    ticks = cnt.get(ALIGN.key(TICKS))
    if ticks is not None:
        out["aligned_rows"] = {"emitted": ticks, "on_disk": aligned_rows,
                               "balanced": ticks == aligned_rows}
    sent = [v for k, v in cnt.items() if k.startswith(f"{LETTER_SINK.stage}.")]
    if sent or ticks is not None:
        out["dead_letters"] = {"emitted": sum(sent), "on_disk": dead_rows,
                               "balanced": sum(sent) == dead_rows}
    return out


def aligned_counts(root, streams: list[str]) -> tuple[int, dict[str, dict[str, int]]]:
    """The aligned dataset's rows, and per stream the count of each status, read only the
    status columns, a few files at a time on threads (the summary's memory does not grow with
    the run; Parquet reads release the GIL)."""
    def read(f):
        names = set(read_schema(f).names)
        cols = {s: column(s, STATUS) for s in streams if column(s, STATUS) in names}
        return cols, read_table(f, columns=list(cols.values()) or ["tick_ns"])

    rows = 0
    status: dict[str, Counter] = {}
    files = part_files(root)
    with ThreadPoolExecutor(4) as ex:
        for at in range(0, len(files), 16):
            for cols, t in ex.map(read, files[at:at + 16]):
                rows += t.num_rows
                for s, col in cols.items():
                    # null: the row's session has no such stream (several sessions)
                    counts = status.setdefault(s, Counter())
                    for vc in pc.value_counts(t.column(col)).to_pylist():
                        if vc["values"] is not None:
                            counts[vc["values"]] += vc["counts"]
    return rows, {s: dict(c) for s, c in status.items()} if rows else {}


def summarize(job, result, elapsed_s: float, root=None) -> dict:
    """The run's summary, read from its outputs under ``root`` (its staging folder before the
    commit; default OUT), reporting the final folders under OUT. ``result``: the Beam
    pipeline result, or the stage counters already read (``counters``; summed over worker
    processes)."""
    root = job.out if root is None else root
    streams = sorted({s.id for m in job.manifests for s in m.streams})
    rows, status = aligned_counts(root / ALIGNED, streams)
    dead = read_dead_letters(root / DEADLETTER)
    cnt = dict(result) if isinstance(result, dict) else counters(result)
    reasons = Counter(zip(dead.column("stage").to_pylist(), dead.column("reason").to_pylist()))
    per_stream = defaultdict(int)
    for s in dead.column("stream_id").to_pylist():
        per_stream[s or "-"] += 1
    return {
        "run_id": job.run_id,
        "elapsed_s": round(elapsed_s, 3),
        "sessions": sorted(job.plans),
        "manifests": list(job.manifest_paths),
        "streams": streams,
        "aligned_dir": str(job.out / ALIGNED),
        "deadletter_dir": str(job.out / DEADLETTER),
        "aligned_rows": rows,
        "dead_letters": dead.num_rows,
        "dead_letters_by_reason": {f"{st}/{r}": n for (st, r), n in sorted(reasons.items())},
        "dead_letters_by_stream": dict(sorted(per_stream.items())),
        "status_by_stream": status,
        "accounting": accounting(cnt),
        "written": written(cnt, rows, dead.num_rows),
        "counters": dict(sorted(cnt.items())),
        "clocks": {f"{k[0]}/{k[1]}": m.to_dict() for k, m in job.declared.items()},
        "sync": {k: r.to_dict() for k, r in read_sync_results(root).items()},
    }


def render(summary: dict) -> str:
    """The summary as a few lines a person reads."""
    lines = [
        f"run {summary['run_id']}: {summary['aligned_rows']} aligned rows "
        f"({len(summary['sessions'])} session(s), {len(summary['streams'])} streams: "
        f"{', '.join(summary['streams'])}) in {summary['elapsed_s']:.1f} s",
        f"  aligned Parquet : {summary['aligned_dir']}",
        f"  dead letters    : {summary['deadletter_dir']} ({summary['dead_letters']} letters)",
    ]
    for reason, n in summary["dead_letters_by_reason"].items():
        lines.append(f"    {n:6d}  {reason}")
    for m, a in summary["accounting"].items():
        mark = "ok" if a["balanced"] else "MISMATCH"
        lines.append(f"  {m:7s} in {a['records_in']:8d} = aligned {a['aligned']:8d} + dead "
                     f"{a['dead']:5d}  [{mark}]")
    for what, w in summary.get("written", {}).items():
        if not w["balanced"]:
            lines.append(f"  {what.replace('_', ' ')}: {w['emitted']} emitted, {w['on_disk']} "
                         f"written  [MISMATCH]")
    for key, d in summary.get("sync", {}).items():
        r = SyncResult.from_dict(d)
        state = f"FELL BACK ({r.reason})" if r.fell_back else "estimated"
        lines.append(f"  clock {key}: offset {r.model.offset_ns / 1e6:+.1f} ms, drift "
                     f"{r.model.drift_ppm:+.1f} ppm, confidence {r.confidence:.2f} [{state}]")
    for s, st in summary["status_by_stream"].items():
        parts = ", ".join(f"{k} {v}" for k, v in sorted(st.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {s:12s} {parts}")
    return "\n".join(lines)
