"""A pandera contract's checks run on a chunk's Arrow columns (numpy and pyarrow.compute): no
pandas DataFrame, no pandera dispatch, one vectorised pass per check over a column's buffer.

The contract stays pandera's (schemas/*.py) and so do the reasons a row fails: this only
decides quickly that a chunk *passes*. ``FastContract.passes`` is True only when every column
of the contract is present with the contract's dtype, holds no null and no NaN, and satisfies
every check it knows (pandera's built-in comparisons, ranges, ``isin`` and ``str_length``,
and the custom checks of our own contracts: a sensor channel's ``finite``, a text cue's
``ends_after_start``); anything else -- a failed check, a null, a check or schema option it
does not know -- returns False and the caller runs pandera, whose failure cases name the rows.
A chunk that passes here is one pandera passes (tests/unit/validate/test_fast_contract.py
runs both on valid, hostile and randomly broken chunks). Most chunks are clean, so most skip
the 2-9 ms of ``to_pandas`` + ``DataFrameSchema.validate`` a chunk costs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Predicate = Callable[[pa.Array | pa.ChunkedArray], bool]

# pandera's built-in checks by name -> (statistic, comparison) pairs that all must hold
_COMPARISONS = {
    "greater_than": (("min_value", operator.gt),),
    "greater_than_or_equal_to": (("min_value", operator.ge),),
    "less_than": (("max_value", operator.lt),),
    "less_than_or_equal_to": (("max_value", operator.le),),
    "equal_to": (("value", operator.eq),),
    "not_equal_to": (("value", operator.ne),),
}
# the custom checks of our own contracts, by (contract name, check name): what they require
# of a column (sensor channels) or of the frame's columns (a text cue ends after it starts)
_CUSTOM_COLUMN: dict[tuple[str, str], Predicate] = {
    ("SensorSamples", "finite"): lambda a: bool(np.isfinite(_np(a)).all()),
}
_CUSTOM_FRAME: dict[tuple[str, str], Callable[[pa.Table | pa.RecordBatch], bool]] = {
    ("TextSegments", "ends_after_start"):
        lambda d: bool((_np(d.column("t_end_ns")) >= _np(d.column("t_ns"))).all()),
}
_NUMERIC = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                      "uint64", "float32", "float64", "bool"})


def _np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return a.to_numpy(zero_copy_only=False)


def _builtin(check) -> bool:
    fn = getattr(check, "_check_fn", None)
    return (fn is not None and getattr(fn, "__module__", "").startswith("pandera.")
            and check.groupby is None and check.ignore_na and not check.element_wise)


def _predicate(contract: str, check, dtype: str) -> Predicate | None:
    """A predicate equivalent to ``check`` on a column of ``dtype`` without nulls, or None."""
    if (contract, check.name) in _CUSTOM_COLUMN and check.groupby is None:
        return _CUSTOM_COLUMN[(contract, check.name)]
    if not _builtin(check):
        return None
    stats = check.statistics or {}
    name = getattr(check._check_fn, "__name__", "")
    if dtype == "str":
        if name == "str_length" and stats.get("exact_value") is None:
            lo, hi = stats.get("min_value"), stats.get("max_value")
            return lambda a: _within(_np(pc.utf8_length(a)), lo, hi)
        if name == "isin" and "allowed_values" in stats:
            allowed = pa.array([str(x) for x in stats["allowed_values"]], pa.string())
            if not all(isinstance(x, str) for x in stats["allowed_values"]):
                return None
            return lambda a: bool(pc.all(pc.is_in(a, value_set=allowed),
                                         min_count=0).as_py())
        return None
    if name in _COMPARISONS:
        pairs = [(stats[k], op) for k, op in _COMPARISONS[name] if k in stats]
        if len(pairs) != len(_COMPARISONS[name]):
            return None
        return lambda a, pairs=pairs: all(bool(op(_np(a), x).all()) for x, op in pairs)
    if name == "in_range" and {"min_value", "max_value"} <= set(stats):
        lo_op = operator.ge if stats.get("include_min", True) else operator.gt
        hi_op = operator.le if stats.get("include_max", True) else operator.lt
        lo, hi = stats["min_value"], stats["max_value"]
        return lambda a: bool(lo_op(_np(a), lo).all() and hi_op(_np(a), hi).all())
    if name == "isin" and "allowed_values" in stats:
        allowed = np.asarray(list(stats["allowed_values"]))
        if allowed.dtype.kind not in "iufb":
            return None
        return lambda a: bool(np.isin(_np(a), allowed).all())
    return None


def _within(v: np.ndarray, lo, hi) -> bool:
    return bool((lo is None or (v >= lo).all()) and (hi is None or (v <= hi).all()))


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: str                          # the dtype pandera expects: numpy's name, or "str"
    checks: tuple[Predicate, ...]


@dataclass(frozen=True)
class FastContract:
    columns: tuple[_Column, ...]
    frame_checks: tuple[Callable[[pa.Table | pa.RecordBatch], bool], ...] = ()

    @classmethod
    def of(cls, schema) -> FastContract | None:
        """The fast form of a pandera ``DataFrameSchema``, or None where it has something the
        fast form cannot evaluate exactly (then every chunk goes to pandera)."""
        if (schema.index is not None or schema.strict or schema.ordered or schema.unique
                or schema.coerce or getattr(schema, "parsers", None)
                or getattr(schema, "add_missing_columns", False)):
            return None
        frame = []
        for check in schema.checks:
            fn = _CUSTOM_FRAME.get((schema.name, check.name))
            if fn is None or check.groupby is not None:
                return None
            frame.append(fn)
        cols = []
        for name, col in schema.columns.items():
            dtype = str(col.dtype)
            if (dtype not in _NUMERIC and dtype != "str") or col.regex or col.unique \
                    or col.coerce or not col.required or getattr(col, "parsers", None):
                return None
            preds = [_predicate(schema.name, c, dtype) for c in col.checks]
            if any(p is None for p in preds):
                return None
            cols.append(_Column(name, dtype, tuple(preds)))
        return cls(tuple(cols), tuple(frame))

    def passes(self, data: pa.Table | pa.RecordBatch) -> bool:
        """True if pandera would pass every row of ``data``; False means "ask pandera"."""
        names = set(data.schema.names)
        for col in self.columns:
            if col.name not in names:
                return False
            arr = data.column(col.name)
            if arr.null_count or not _same_dtype(arr.type, col.dtype):
                return False
            if pa.types.is_floating(arr.type) and pc.any(pc.is_nan(arr)).as_py():
                return False                 # pandas reads NaN as missing: pandera decides
            if not all(p(arr) for p in col.checks):
                return False
        return all(f(data) for f in self.frame_checks)


def _same_dtype(t: pa.DataType, expected: str) -> bool:
    if expected == "str":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return False
    return np.dtype(t.to_pandas_dtype()).name == expected
