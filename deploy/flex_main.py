"""Dataflow flex-template entry point: the template launcher runs this file as
``python flex_main.py --manifest=a.yaml,b.yaml --out=OUT [--run_id=R] <Dataflow options>``.

The template's parameters (deploy/flex_template/metadata.json) are parsed here; everything
else (``--project``, ``--region``, ``--temp_location``, ``--sdk_container_image``,
``--encoder_accelerator``, ...) goes to Beam as pipeline options.
"""

from __future__ import annotations

import argparse
import sys


def parse(argv: list[str]) -> tuple[list[str], str, str | None, list[str]]:
    """(manifests, out, run_id, pipeline args) from the launcher's command line."""
    ap = argparse.ArgumentParser(prog="flex_main.py", allow_abbrev=False)
    ap.add_argument("--manifest", required=True, help="comma-separated manifest paths")
    ap.add_argument("--out", required=True)
    ap.add_argument("--run_id", default=None)
    ns, rest = ap.parse_known_args(argv)
    manifests = [m.strip() for m in ns.manifest.split(",") if m.strip()]
    return manifests, ns.out, ns.run_id, rest


def main(argv: list[str] | None = None) -> int:
    from mmalign.pipelines import backfill

    manifests, out, run_id, rest = parse(sys.argv[1:] if argv is None else argv)
    summary = backfill.run(manifests, out, runner="DataflowRunner", pipeline_args=rest,
                           run_id=run_id)
    balanced = all(a["balanced"] for a in summary["accounting"].values())
    return 0 if balanced else 1


if __name__ == "__main__":
    sys.exit(main())
