"""A pandera contract's column checks run on a chunk's Arrow columns with numpy: no pandas
DataFrame, no pandera dispatch, one vectorised pass per check over each column's buffer.

The contract stays pandera's (schemas/*.py) and so do the reasons a row fails: this only
decides quickly that a chunk *passes*. ``FastContract.passes`` is True only when every column
of the contract is present with the contract's dtype, holds no null and no NaN, and satisfies
every check it knows (pandera's built-in comparisons and range, ``isin``, and the sensor
contract's ``finite``); anything else -- a failed check, a null, a check or schema option it
does not know -- returns False and the caller runs pandera, whose failure cases name the rows.
A chunk that passes here is one pandera passes (tests/unit/validate/test_fast_contract.py
runs both on valid, hostile and randomly broken chunks). Most chunks are clean, so most skip
the ~2-3 ms of ``to_pandas`` + ``DataFrameSchema.validate`` a chunk costs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmalign.schemas import sensor as sensor_schema

Predicate = Callable[[np.ndarray], bool]

# pandera's built-in checks by name -> (statistic, comparison) pairs that all must hold
_COMPARISONS = {
    "greater_than": (("min_value", operator.gt),),
    "greater_than_or_equal_to": (("min_value", operator.ge),),
    "less_than": (("max_value", operator.lt),),
    "less_than_or_equal_to": (("max_value", operator.le),),
    "equal_to": (("value", operator.eq),),
    "not_equal_to": (("value", operator.ne),),
}
# custom checks of our own contracts, by function: what they require of every value
_CUSTOM: dict[Callable, Predicate] = {
    sensor_schema.finite: lambda v: bool(np.isfinite(v).all()),
}
_NUMERIC = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                      "uint64", "float32", "float64", "bool"})


def _builtin(check) -> bool:
    fn = getattr(check, "_check_fn", None)
    return (fn is not None and getattr(fn, "__module__", "").startswith("pandera.")
            and check.groupby is None and check.ignore_na and not check.element_wise)


def _predicate(check) -> Predicate | None:
    """A numpy predicate equivalent to ``check`` on a column without nulls, or None."""
    fn = getattr(check, "_check_fn", None)
    if fn in _CUSTOM and check.groupby is None and not check.element_wise:
        return _CUSTOM[fn]
    if not _builtin(check):
        return None
    stats = check.statistics or {}
    name = getattr(check._check_fn, "__name__", "")
    if name in _COMPARISONS:
        pairs = [(stats[k], op) for k, op in _COMPARISONS[name] if k in stats]
        if len(pairs) != len(_COMPARISONS[name]):
            return None
        return lambda v, pairs=pairs: all(bool(op(v, x).all()) for x, op in pairs)
    if name == "in_range" and {"min_value", "max_value"} <= set(stats):
        lo_op = operator.ge if stats.get("include_min", True) else operator.gt
        hi_op = operator.le if stats.get("include_max", True) else operator.lt
        lo, hi = stats["min_value"], stats["max_value"]
        return lambda v: bool(lo_op(v, lo).all() and hi_op(v, hi).all())
    if name == "isin" and "allowed_values" in stats:
        allowed = np.asarray(list(stats["allowed_values"]))
        if allowed.dtype.kind not in "iufb":
            return None
        return lambda v: bool(np.isin(v, allowed).all())
    return None


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: str                          # numpy dtype name pandera expects
    checks: tuple[Predicate, ...]


@dataclass(frozen=True)
class FastContract:
    columns: tuple[_Column, ...]

    @classmethod
    def of(cls, schema) -> FastContract | None:
        """The fast form of a pandera ``DataFrameSchema``, or None where it has something the
        fast form cannot evaluate exactly (then every chunk goes to pandera)."""
        if (schema.checks or schema.index is not None or schema.strict or schema.ordered
                or schema.unique or schema.coerce or getattr(schema, "parsers", None)
                or getattr(schema, "add_missing_columns", False)):
            return None
        cols = []
        for name, col in schema.columns.items():
            dtype = str(col.dtype)
            if (dtype not in _NUMERIC or col.regex or col.unique or col.coerce
                    or not col.required or getattr(col, "parsers", None)):
                return None
            preds = [_predicate(c) for c in col.checks]
            if any(p is None for p in preds):
                return None
            cols.append(_Column(name, dtype, tuple(preds)))
        return cls(tuple(cols))

    def passes(self, data: pa.Table | pa.RecordBatch) -> bool:
        """True if pandera would pass every row of ``data``; False means "ask pandera"."""
        names = set(data.schema.names)
        for col in self.columns:
            if col.name not in names:
                return False
            arr = data.column(col.name)
            if arr.null_count or not _same_dtype(arr.type, col.dtype):
                return False
            v = arr.to_numpy(zero_copy_only=False)
            if v.dtype.kind == "f" and pc.any(pc.is_nan(arr)).as_py():
                return False                 # pandas reads NaN as missing: pandera decides
            if not all(p(v) for p in col.checks):
                return False
        return True


def _same_dtype(t: pa.DataType, expected: str) -> bool:
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return False
    return np.dtype(t.to_pandas_dtype()).name == expected
