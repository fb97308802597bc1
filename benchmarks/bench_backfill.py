"""Whole-backfill throughput: the Beam pipeline (local runner) against the same kernels called
in a plain Python loop without Beam, on the same generated recording, side by side.

    python benchmarks/bench_backfill.py [--duration 60] [--quick]

Prints records/s for both and the ratio (Beam time / plain time; goal < 1.5x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmalign.deadletter.file_sink import write_session_letters
from mmalign.pipelines import backfill, core
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.chunk import Chunk
from mmalign.transforms.align.buckets import chunk_pieces
from mmalign.transforms.align.join import align_bucket
from mmalign.transforms.clock.apply import apply_clock
from mmalign.transforms.decode.stage import decode_file
from mmalign.transforms.io.parquet import write_bucket
from mmalign.transforms.validate.stage import validate_chunk


def plain_loop(manifest: Path, out: Path) -> tuple[int, int]:
    """The backfill's work without Beam: decode, validate, clock, bucket, align, and the same
    sinks (one Parquet file per bucket, the session's dead letters)."""
    job = core.prepare([manifest], out)
    session = job.manifests[0].session
    plan = job.plans[session]
    margins = plan.margins()
    buckets = defaultdict(list)
    records = 0
    dead = []
    for req in job.sources:
        session_id, stream = req.session_id, req.stream
        for item in decode_file(stream, req.path, session_id=session_id, roots=req.roots,
                                time_offset_ns=req.time_offset_ns):
            if not isinstance(item, Chunk):
                records += 1
                dead.append(item)
                continue
            records += item.num_records
            good, bad = validate_chunk(item, stream.options)
            dead += bad
            if good is None:
                continue
            clocked = apply_clock(good, job.declared[(session_id, stream.id)])
            for b, piece in chunk_pieces(clocked, bucket_ns=plan.bucket_ns,
                                         margin_ns=margins[stream.id],
                                         is_anchor=stream.id == plan.anchor,
                                         tick_margin_ns=plan.tick_margin_ns()):
                buckets[b].append(piece)
    rows = 0
    for b, pieces in sorted(buckets.items()):
        table = align_bucket(plan, b, pieces)
        write_bucket(table, out / "aligned", session, b, job.metadata())
        rows += table.num_rows
    write_session_letters(out / "deadletter", session, dead)
    return records, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="a 12 s recording, one run each")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, alternating (best kept)")
    ns = ap.parse_args()
    duration = 12.0 if ns.quick else ns.duration
    repeat = 1 if ns.quick else ns.repeat
    t_plain = t_beam = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_recording(Path(tmp) / "rec", duration_s=duration)
        for i in range(repeat):     # alternate, so machine noise hits both alike
            t0 = time.perf_counter()
            records, rows = plain_loop(manifest, Path(tmp) / f"plain{i}")
            t_plain = min(t_plain, time.perf_counter() - t0)
            t0 = time.perf_counter()
            summary = backfill.run([manifest], Path(tmp) / f"out{i}")
            t_beam = min(t_beam, time.perf_counter() - t0)
    assert summary["aligned_rows"] == rows, (summary["aligned_rows"], rows)
    print(f"recording: {duration:.0f} s, {records} records in, {rows} aligned rows; "
          f"best of {repeat} run(s) each; both write the aligned Parquet and the dead letters")
    print(f"{'':24s}{'seconds':>10s}{'records/s':>12s}")
    print(f"{'plain loop (no Beam)':24s}{t_plain:10.2f}{records / t_plain:12.0f}")
    print(f"{'Beam DirectRunner':24s}{t_beam:10.2f}{records / t_beam:12.0f}")
    print(f"Beam overhead: {t_beam / t_plain:.2f}x the plain loop (goal < 1.5x)")


if __name__ == "__main__":
    main()
