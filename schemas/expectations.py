"""The great-expectations suite over the aligned output: types, ranges, null rates, ticks.

``aligned_expectations`` is plain data (expectation name + kwargs per column) derived from the
aligned table's columns and the alignment params stored with it; ``validate_aligned`` runs it
with GX (ephemeral context, pandas datasource, offline, no progress bars), one batch per
session, and returns a JSON-ready summary.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from mmalign.schemas import aligned
from mmalign.schemas.sensor import MAX_ABS_VALUE

INT_TYPES = ["int64", "Int64Dtype"]       # numpy int64, pandas nullable Int64
STR_TYPES = ["str", "string", "object"]
FLOAT_TYPES = ["float64", "Float64"]


@dataclass(frozen=True)
class Expectation:
    name: str                 # GX class name, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")


def aligned_expectations(columns: list[str], policies: dict[str, dict],
                         max_missing: float) -> list[Expectation]:
    """The suite for an aligned table with these ``columns``; ``policies`` maps stream id to its
    AlignPolicy dict (policy, tolerance_ms, max_gap_ms, ...) from the Parquet metadata."""
    e: list[Expectation] = [
        Expectation("ExpectTableRowCountToBeBetween", {"min_value": 1}),
        Expectation("ExpectColumnValuesToNotBeNull", {"column": "session_id"}),
        Expectation("ExpectColumnValuesToNotBeNull", {"column": "tick_ns"}),
        Expectation("ExpectColumnValuesToBeInTypeList", {"column": "tick_ns",
                                                         "type_list": INT_TYPES}),
        Expectation("ExpectColumnValuesToBeIncreasing", {"column": "tick_ns", "strictly": True}),
    ]
    cols = set(columns)
    keep = 1.0 - max_missing
    for s in aligned.stream_ids(columns):
        col = partial(aligned.column, s)
        pol = policies.get(s, {})
        e.append(Expectation("ExpectColumnValuesToNotBeNull", {"column": col(aligned.STATUS)}))
        e.append(Expectation("ExpectColumnValuesToBeInSet", {
            "column": col(aligned.STATUS), "value_set": list(aligned.STATUS_NAMES)}))
        e.append(Expectation("ExpectColumnValuesToBeInTypeList", {"column": col(aligned.STATUS),
                                                                  "type_list": STR_TYPES}))
        if pol.get("policy") != "text_overlap":   # speech is sparse: no-overlap is not missing
            e.append(Expectation("ExpectColumnValuesToBeInSet", {
                "column": col(aligned.STATUS), "value_set": list(aligned.VALUE_STATUSES),
                "mostly": keep}))
        if col(aligned.DT_NS) in cols:
            e.append(Expectation("ExpectColumnValuesToBeInTypeList", {"column": col(aligned.DT_NS),
                                                                      "type_list": INT_TYPES}))
            if pol.get("policy") in ("nearest", "one_to_one"):
                tol = round(float(pol.get("tolerance_ms", 0)) * 1e6)
                e.append(Expectation("ExpectColumnValuesToBeBetween", {
                    "column": col(aligned.DT_NS), "min_value": -tol, "max_value": tol}))
            elif pol.get("policy") == "interpolate":
                gap = round(float(pol.get("max_gap_ms", 0)) * 1e6)
                e.append(Expectation("ExpectColumnValuesToBeBetween", {
                    "column": col(aligned.DT_NS), "min_value": -gap, "max_value": gap}))
        if col(aligned.POS) in cols:
            e.append(Expectation("ExpectColumnValuesToBeBetween", {"column": col(aligned.POS),
                                                                   "min_value": 0}))
        if col(aligned.COVERAGE) in cols:
            e.append(Expectation("ExpectColumnValuesToBeBetween", {
                "column": col(aligned.COVERAGE), "min_value": 0.0, "max_value": 1.0}))
        if col(aligned.SAMPLE_START) in cols:
            e.append(Expectation("ExpectColumnValuesToNotBeNull", {
                "column": col(aligned.SAMPLE_START), "mostly": keep}))
        if pol.get("policy") == "interpolate":
            non_channels = {aligned.STATUS, aligned.DT_NS, aligned.POS, aligned.POS_RIGHT,
                            aligned.SRC}
            for c in columns:
                parts = aligned.split_column(c)
                if parts and parts[0] == s and parts[1] not in non_channels \
                        and not parts[1].startswith("reg_"):
                    e.append(Expectation("ExpectColumnValuesToBeBetween", {
                        "column": c, "min_value": -MAX_ABS_VALUE, "max_value": MAX_ABS_VALUE}))
    for c in columns:
        field = (aligned.split_column(c) or ("", ""))[1]
        if field == aligned.REG_INLIER_RATIO:
            e.append(Expectation("ExpectColumnValuesToBeBetween", {
                "column": c, "min_value": 0.0, "max_value": 1.0}))
        elif field == aligned.REG_RMSE_PX:
            e.append(Expectation("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0.0}))
    return e


def _frame(table: pa.Table):
    """Pandas view with nullable integers (so an int column with nulls stays integer)."""
    import pandas as pd

    keep = [f.name for f in table.schema
            if not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                    or pa.types.is_binary(f.type))]
    mapping = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
    return table.select(keep).to_pandas(types_mapper=mapping.get)


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    for name in ("great_expectations", "posthog"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, ctx


def validate_aligned(table: pa.Table, policies_by_session: dict[str, dict[str, dict]],
                     max_missing: float) -> dict:
    """Run the suite on every session of ``table``; a JSON-ready summary with the GX start-up
    time, counts and one row per evaluated expectation."""
    t0 = time.perf_counter()
    gx, ctx = _context()
    import great_expectations.expectations as gxe
    startup = time.perf_counter() - t0
    source = ctx.data_sources.add_pandas("aligned")
    results = []
    sessions = sorted(set(table.column("session_id").to_pylist())) if table.num_rows else []
    for i, session in enumerate(sessions):
        part = table.filter(pc.equal(table.column("session_id"), session))
        part = part.sort_by([("tick_ns", "ascending")])
        spec = aligned_expectations(part.column_names, policies_by_session.get(session, {}),
                                    max_missing)
        suite = gx.ExpectationSuite(name=f"aligned-{i}")
        for x in spec:
            suite.add_expectation(getattr(gxe, x.name)(**x.kwargs))
        asset = source.add_dataframe_asset(f"session-{i}")
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": _frame(part)})
        res = batch.validate(suite)
        for r in res.results:
            kw = r.expectation_config.kwargs
            pct = r.result.get("unexpected_percent")
            results.append({"session": session, "expectation": r.expectation_config.type,
                            "column": kw.get("column"), "success": bool(r.success),
                            "unexpected_percent": None if pct is None else round(float(pct), 4),
                            "mostly": kw.get("mostly")})
    failed = [r for r in results if not r["success"]]
    return {"state": "run", "reason": "", "success": not failed and bool(results),
            "evaluated": len(results), "failed": len(failed),
            "startup_s": round(startup, 3),
            "elapsed_s": round(time.perf_counter() - t0, 3), "results": results}
