"""The backfill: recordings on disk -> aligned Parquet + dead letters, on any Beam runner.

    manifests -> decode -> AlignCore (pipelines/core.py) -> Parquet (+ feature store)
                    \\__________\\_________________________-> dead letters

Outputs go to a staging folder and are committed in one step when the run succeeds
(transforms/io/commit.py), so a rerun replaces its sessions' outputs whole and never duplicates
them, and a failed or killed run leaves the previous output. OUT and the recordings may be
local or on an object store (``s3://``, ``gs://``: ``schemas/fs.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from mmalign.deadletter.file_sink import WriteDeadLetters
from mmalign.pipelines import time_slices
from mmalign.pipelines.core import AlignCore, Job, online_store_sink, prepare
from mmalign.pipelines.observe import ObserveOptions, attach
from mmalign.pipelines.observe import session as observe_session
from mmalign.pipelines.progress import Progress, backfill_line
from mmalign.pipelines.runners import pipeline
from mmalign.pipelines.session_workers import SessionWorkers, resolve_workers, spread
from mmalign.pipelines.summary import summarize
from mmalign.schemas.fs import UriPath, rmtree
from mmalign.transforms.clock.sync import WriteSyncResults
from mmalign.transforms.decode.stage import DecodeStreams
from mmalign.transforms.io.commit import SUMMARY, commit, recover, staging_dir
from mmalign.transforms.io.parquet import WriteAlignedFn, unify_for_commit
from mmalign.transforms.tags import DEAD, MAIN


def build(p: beam.Pipeline, job: Job, staging: Path | UriPath,
          observe: ObserveOptions | None = None) -> dict:
    """Wire the backfill into pipeline ``p``; returns the named PCollections."""
    decoded = (p | "Sources" >> beam.Create(job.sources, reshuffle=True)
               | "Decode" >> DecodeStreams())
    core = decoded[MAIN] | "Core" >> AlignCore(job)
    if core["sync"] is not None:
        core["sync"] | "WriteSync" >> WriteSyncResults(str(staging / "sync"))
    written = core["aligned"] | "WriteAligned" >> beam.ParDo(
        WriteAlignedFn(str(staging / "aligned"), job.metadata()))
    dead = [decoded[DEAD], core["dead"]]
    sink = online_store_sink(job)
    if sink is not None:                    # Feast online store, after the Parquet write
        dead.append((written | "WriteOnline" >> sink)[DEAD])
    all_dead = tuple(dead) | "AllDead" >> beam.Flatten()
    letters = all_dead | "WriteDead" >> WriteDeadLetters(str(staging / "deadletter"), job.run_id)
    attach(observe, job, core["aligned"], all_dead, core["sync"])   # SLIs (observe.py)
    return {"aligned": core["aligned"], "written": written, "dead": letters}


def run(manifest_paths: list[str | Path], out: str | Path, *, runner: str = "DirectRunner",
        pipeline_args: list[str] | None = None, run_id: str | None = None,
        progress: bool = False, progress_every_s: float = 10.0,
        observe: ObserveOptions | None = None, workers: int | None = 1,
        slice_s: float | None = 0) -> dict:
    """Run the backfill to completion; returns the run summary (also OUT/summary.json).

    Everything is written under OUT/.staging/<run> and committed at the end in one step
    (transforms/io/commit.py): a run that fails or is killed leaves the previous output.
    ``progress``: show per-stage progress on stderr (pipelines/progress.py); ``observe``:
    metrics endpoint/textfile/Pushgateway, traces, drift (pipelines/observe.py); ``workers``:
    with several sessions on the local runner, run them in up to that many processes
    (pipelines/session_workers.py; None: one per core where that applies); ``slice_s``: run
    the sessions in time slices of about that many seconds, in flat memory and over all the
    workers (pipelines/time_slices.py; None: where it applies, for recordings over twice the
    default slice; 0: whole sessions)."""
    job = prepare(manifest_paths, out, run_id)
    workers = resolve_workers(workers, runner, observe, job)
    slice_s = time_slices.resolve_slices(slice_s, job, runner, observe)
    recover(job.out)                         # finish or clear what an interrupted run left
    staging = staging_dir(job.out, job.run_id)
    opts = PipelineOptions([f"--runner={runner}", *(pipeline_args or [])])
    groups = None if slice_s else spread(job, workers)
    slices = None
    t0 = time.perf_counter()
    try:
        with observe_session(observe, job.run_id, "backfill") as obs:
            if slice_s:                      # both phases over forked workers
                with time_slices.pool(job, staging, runner, pipeline_args, workers,
                                      min(progress_every_s, 1.0) if progress else None) as tasks, \
                        Progress(backfill_line, progress_every_s, enabled=progress,
                                 counts=tasks.counts, lock=tasks.fork_lock):
                    result, slices = time_slices.run(job, staging, tasks, slice_s)
            elif groups is None:
                with Progress(backfill_line, progress_every_s, enabled=progress), \
                        pipeline(runner, opts) as p:
                    build(p, job, staging, observe)
                result = p.result
            else:                            # sessions over forked processes
                pool = SessionWorkers(job, groups, staging, runner, pipeline_args, build,
                                      min(progress_every_s, 1.0) if progress else None).start()
                try:
                    with Progress(backfill_line, progress_every_s, enabled=progress,
                                  counts=pool.counts):
                        result = pool.wait()
                finally:
                    pool.stop()
            summary = summarize(job, result, time.perf_counter() - t0, staging)
        if obs.drift:
            summary["drift"] = obs.drift
        if groups is not None:
            summary["workers"] = groups      # the sessions each process ran
        if slices is not None:
            summary["slices"] = slices | {"workers": workers}
        staging.mkdir(parents=True, exist_ok=True)
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
        # every file of OUT/aligned shares one schema after the commit (readers read it whole)
        also = unify_for_commit(job.out, staging, list(job.plans))
    except BaseException:
        rmtree(staging)
        raise
    commit(job.out, job.run_id, list(job.plans) + also)
    return summary
