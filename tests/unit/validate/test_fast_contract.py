"""The vectorised pre-check against pandera itself: a chunk the pre-check passes must be one
pandera passes, on clean, hostile and randomly broken chunks of every contract; and validation
gives the same good rows and dead letters with the pre-check as with pandera alone."""

import numpy as np
import pandera.pandas as pa_pd
import pyarrow as pa
import pytest

from mmalign.schemas import audio, sensor, text, video
from mmalign.schemas.chunk import Chunk
from mmalign.transforms.validate import stage
from mmalign.transforms.validate.fast_contract import FastContract

RNG = np.random.default_rng(17)
CHANNELS = ["ax", "ay", "az"]


def _clean(modality: str, n: int) -> dict[str, pa.Array]:
    t = np.cumsum(RNG.integers(1, 10**7, n)).astype(np.int64)
    cols = {"t_ns": pa.array(t), "pos": pa.array(np.arange(n, dtype=np.int64))}
    if modality == "video":
        cols["width"] = pa.array(np.full(n, 320, np.int32))
        cols["height"] = pa.array(np.full(n, 240, np.int32))
    elif modality == "audio":
        cols["n_samples"] = pa.array(np.full(n, 1024, np.int32))
    elif modality == "text":
        cols["t_end_ns"] = pa.array(t + RNG.integers(0, 10**9, n))
        cols["text"] = pa.array([f"cue {i} \u00e9\u6f22" for i in range(n)])
        cols["kind"] = pa.array(RNG.choice(["segment", "word"], n).tolist())
    else:
        for c in CHANNELS:
            cols[c] = pa.array(RNG.normal(0, 9.8, n))
    return cols


def _schema(modality: str):
    return {"video": video.VideoFrames, "audio": audio.AudioBlocks,
            "text": text.TextSegments,
            "sensor": sensor.pandera_schema(CHANNELS, 100.0)}[modality]


def _pandera_passes(schema, table: pa.Table) -> bool:
    try:
        schema.validate(table.to_pandas(), lazy=True)
    except pa_pd.errors.SchemaErrors:
        return False
    return True


def _broken(cols: dict[str, pa.Array], n: int) -> list[tuple[str, dict[str, pa.Array]]]:
    """Hostile variants: each column with a null, NaN, inf, extremes, a wrong type; missing."""
    out = []
    for name, arr in cols.items():
        v = arr.to_numpy(zero_copy_only=False)
        i = int(RNG.integers(0, n))
        if pa.types.is_string(arr.type):
            for bad in ("", "x" * text.MAX_TEXT_CHARS, "x" * (text.MAX_TEXT_CHARS + 1),
                        "bogus", "Segment", None):
                w = v.tolist()
                w[i] = bad
                out.append((f"{name}={bad!r:.20}", {**cols, name: pa.array(w, pa.string())}))
            out.append((f"{name}: large_string", {**cols, name: arr.cast(pa.large_string())}))
            out.append((f"{name}: missing", {k: a for k, a in cols.items() if k != name}))
            continue
        as_list = v.tolist()
        as_list[i] = None
        out.append((f"{name}: null", {**cols, name: pa.array(as_list, arr.type)}))
        for bad in (-1, 0, 7, 8, 16384, 16385, -(2**31), 2**31 - 1, 1e9, -1e9, 100.0, 100.5,
                    -100.0, -100.5, np.nan, np.inf, -np.inf):
            w = v.astype(np.float64)
            w[i] = bad
            if arr.type != pa.float64():
                if not np.isfinite(bad) or bad != int(bad):
                    continue
                info = np.iinfo(v.dtype)
                if not info.min <= bad <= info.max:
                    continue
            out.append((f"{name}={bad}", {**cols, name: pa.array(w.astype(v.dtype), arr.type)}))
        out.append((f"{name}: float", {**cols, name: pa.array(v.astype(np.float64))}))
        out.append((f"{name}: int32", {**cols, name: pa.array(v.astype(np.int32))}))
        out.append((f"{name}: str", {**cols, name: pa.array(v.astype(str))}))
        out.append((f"{name}: missing", {k: a for k, a in cols.items() if k != name}))
    out.append(("extra column", {**cols, "extra": pa.array(np.zeros(n))}))
    if "t_end_ns" in cols:                     # a cue that ends before it starts
        w = cols["t_end_ns"].to_numpy().copy()
        w[i] = cols["t_ns"].to_numpy()[i] - 1
        out.append(("t_end_ns < t_ns", {**cols, "t_end_ns": pa.array(w)}))
    return out


@pytest.mark.parametrize("modality", ["video", "audio", "sensor", "text"])
def test_what_the_precheck_passes_pandera_passes(modality) -> None:
    schema = _schema(modality)
    fast = FastContract.of(schema)
    assert fast is not None
    n = 50
    clean = _clean(modality, n)
    cases = [("clean", clean), ("empty", {k: v.slice(0, 0) for k, v in clean.items()}),
             *_broken(clean, n)]
    for _ in range(200):              # random rows broken with random values
        cols = dict(clean)
        name = list(cols)[int(RNG.integers(0, len(cols)))]
        v = cols[name].to_numpy(zero_copy_only=False).copy()
        rows = RNG.integers(0, n, int(RNG.integers(1, 4)))
        if v.dtype.kind == "O":
            v[rows] = RNG.choice(["", "word", "segment", "x" * 10_001, "ok"], rows.size)
        elif v.dtype.kind == "f":
            v[rows] = RNG.choice([np.nan, np.inf, 99.0, 101.0, -101.0, 0.0], rows.size)
        else:
            v[rows] = RNG.integers(-20, 20000, rows.size)
        cols[name] = pa.array(v)
        cases.append((f"random {name}", cols))
    passed = failed = 0
    for label, cols in cases:
        table = pa.table(cols)
        ok = _pandera_passes(schema, table)
        if fast.passes(table):
            assert ok, f"{modality} {label}: the pre-check passed what pandera fails"
            passed += 1
        failed += not ok
    assert passed >= 3 and failed >= 20   # both outcomes were exercised


def test_contracts_the_precheck_cannot_evaluate_go_to_pandera() -> None:
    frame = pa_pd.DataFrameSchema({"x": pa_pd.Column("int64")},
                                  checks=[pa_pd.Check(lambda df: df["x"] > 0)])
    assert FastContract.of(frame) is None          # a frame-level check it does not know
    custom = pa_pd.DataFrameSchema({"x": pa_pd.Column("int64", pa_pd.Check(lambda s: s > 0))})
    assert FastContract.of(custom) is None
    strict = pa_pd.DataFrameSchema({"x": pa_pd.Column("int64")}, strict=True)
    assert FastContract.of(strict) is None
    assert FastContract.of(pa_pd.DataFrameSchema({"x": pa_pd.Column("datetime64[ns]")})) is None
    regex = pa_pd.DataFrameSchema({"x": pa_pd.Column(str, pa_pd.Check.str_matches("a+"))})
    assert FastContract.of(regex) is None


def _chunk(modality: str, cols: dict[str, pa.Array]) -> Chunk:
    n = len(next(iter(cols.values())))
    if modality == "audio":
        cols = {**cols, "pcm": pa.array([np.zeros(1024, np.float32)] * n,
                                        pa.list_(pa.float32()))}
    meta = {"sample_rate": 16000} if modality == "audio" else \
        {"width": 320, "height": 240} if modality == "video" else {}
    return Chunk("s", "st", modality, 0, "f", pa.RecordBatch.from_pydict(cols), meta=meta)


@pytest.mark.parametrize("modality", ["video", "audio", "sensor", "text"])
def test_validation_is_the_same_with_and_without_the_precheck(modality, monkeypatch) -> None:
    n = 40
    clean = _clean(modality, n)
    chunks = [_chunk(modality, cols) for _, cols in [("clean", clean), *_broken(clean, n)]]

    def run():
        out = []
        for c in chunks:
            try:
                good, dead = stage.validate_chunk(c, run_id="r")
            except Exception as e:  # noqa: BLE001 -- compared, not raised
                out.append(("raised", type(e).__name__))
                continue
            out.append((None if good is None else good.data.to_pydict(),
                        [(d.position, d.reason, d.message) for d in dead]))
        return out

    with_precheck = run()
    monkeypatch.setattr(FastContract, "passes", lambda self, data: False)
    assert run() == with_precheck


def test_nan_is_missing_to_pandera_so_the_precheck_defers() -> None:
    """pandas reads NaN as a missing value: a float column without checks still fails a
    non-nullable contract on NaN, which no comparison would catch."""
    schema = pa_pd.DataFrameSchema({"x": pa_pd.Column("float64")})
    fast = FastContract.of(schema)
    for values, ok in (([0.5, 1.0], True), ([0.5, np.nan], False), ([np.inf], True)):
        table = pa.table({"x": pa.array(values)})
        assert _pandera_passes(schema, table) is ok
        assert fast.passes(table) is ok
