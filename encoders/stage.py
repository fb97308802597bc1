"""The encode stage after alignment: ((session, bucket), aligned table) -> the same table with
per-stream embedding columns (+ fused), failures as DeadLetters of stage "encode".

Inputs per tick come from the aligned row's references, loaded once per bucket and stream:
video frames by ``<s>__pos`` from ``<s>__src`` (``iter_frames``, cropped as decoded; warped with the
registration's ``<s>__H`` when the spec says ``warp``), audio samples ``<s>__sample_start`` ..
``__sample_end`` (one ``load_audio`` per source file and bucket), text ``<s>__text``, sensor
windows re-read from the source file: the decoder's own rows (same ``pos`` numbering), the rows
whose device time lies within ``window_ms`` of the tick's neighbours ``<s>__pos`` /
``__pos_right`` (a file's rows are decoded once per worker and cached).

A tick without input keeps NaN + status ``no_input:<align status>``; a failed load,
preprocessing or inference keeps NaN + the failure's reason and emits a DeadLetter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils import shared

from mmalign.deadletter.record import DeadLetter
from mmalign.encoders.fusion import OK, fusion_columns, stream_columns
from mmalign.encoders.handlers import (
    EncodeFailure,
    EncodeRequest,
    load_runner,
    preprocess_request,
    preprocess_video,
    run_batch,
)
from mmalign.encoders.registry import preprocess_options
from mmalign.schemas.aligned import (
    EMB_STATUS,
    POS,
    POS_RIGHT,
    SAMPLE_END,
    SAMPLE_RATE,
    SAMPLE_START,
    SESSION_ID,
    SRC,
    STATUS,
    TEXT,
    TICK_NS,
    H,
    column,
)
from mmalign.schemas.encoders import EncoderConfig, EncodersConfig
from mmalign.schemas.manifest import Manifest, ManifestError, Stream
from mmalign.schemas.metrics import ENCODE
from mmalign.transforms.decode.sources import SensorRows, SourceRef
from mmalign.transforms.tags import DEAD, MAIN

SENSOR_CACHE_FILES = 4


@dataclass(frozen=True)
class StreamEncode:
    """How one stream of a session is encoded."""
    stream: Stream
    cfg: EncoderConfig
    warp: bool = False
    window_ns: int = 200_000_000
    channels: tuple[str, ...] = ()
    source: SourceRef | None = None     # how to reopen its files (validated data only)

    @property
    def stream_id(self) -> str:
        return self.stream.id

    @property
    def ref(self) -> SourceRef:
        return self.source or SourceRef("", self.stream)

    @property
    def key(self) -> str:
        """Streams with equal keys share one loaded model."""
        return self.cfg.model_dump_json()


@dataclass(frozen=True)
class SessionEncode:
    session_id: str
    streams: tuple[StreamEncode, ...]
    fusion: str | None


def _where(m: Manifest, field: str) -> str:
    return f"manifest in {m.base_dir}: field '{field}'"


def plan_encoders(m: Manifest) -> SessionEncode | None:
    """The session's encode plan from ``m.encoders`` (None when absent or nothing to encode).
    Raises ManifestError naming the field and the fix."""
    cfg: EncodersConfig | None = m.encoders
    if cfg is None:
        return None
    ids = [s.id for s in m.streams]
    for sid in cfg.streams:
        if sid not in ids:
            raise ManifestError(f"{_where(m, f'encoders.streams.{sid}')} names no stream of "
                                f"this manifest {ids}; use a stream id")
    out = []
    for s in m.streams:
        field = f"encoders.streams.{s.id}" if s.id in cfg.streams else f"encoders.{s.modality}"
        try:
            spec = cfg.spec_for(s.id, s.modality)
            if spec is None:
                continue
            if spec.modality not in (None, s.modality):
                raise ValueError(f"modality {spec.modality!r} is not the stream's "
                                 f"{s.modality!r}")
            enc = spec.for_modality(s.modality, m.base_dir)
        except ValueError as e:
            msg = str(e).splitlines()[-1] if "validation error" in str(e) else str(e)
            raise ManifestError(f"{_where(m, field)}: {msg}; correct it") from None
        if enc.path and not Path(enc.path).is_file():
            raise ManifestError(f"{_where(m, field + '.path')}: {enc.path} does not exist; "
                                "give the weights file's path (relative to the manifest)")
        channels: tuple[str, ...] = ()
        if s.modality == "sensor":
            channels = tuple(s.options.get("channels") or ())
            has = "channels" in enc.kwargs or "channels" in enc.preprocess
            if not channels and not has:
                raise ManifestError(f"{_where(m, f'streams[{s.id}].options.channels')}: the "
                                    "sensor encoder needs the channel list; list the channels "
                                    "to encode")
            if channels and not has:
                enc = enc.model_copy(update={"preprocess": {**enc.preprocess,
                                                            "channels": len(channels)}})
        out.append(StreamEncode(s, enc, spec.warp, round(spec.window_ms * 1e6), channels,
                                SourceRef.of(m, s.id)))
    if not out:
        return None
    fusion = None if cfg.fusion == "none" else cfg.fusion
    return SessionEncode(m.session, tuple(out), fusion)


# ---------------------------------------------------------------- inputs per tick

def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else \
        [None] * table.num_rows


def _homography(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    h = np.asarray(value, dtype=np.float64)
    if h.size != 9:
        raise ValueError(f"homography has {h.size} values, expected 9")
    return h.reshape(3, 3)


@dataclass(frozen=True)
class Prepared:
    """A row's model input, preprocessed while its source was read (video crops)."""
    x: Any


@dataclass(frozen=True)
class PrepareFailed:
    """Preprocessing a row's loaded input failed (a ``preprocess_failed`` dead letter)."""
    error: Exception


def video_inputs(table: pa.Table, se: StreamEncode, opts: dict[str, Any]) -> list:
    """Per row: a ``Prepared`` crop of its frame (``preprocess_video`` with ``opts``), a
    ``PrepareFailed``, an exception (the frame or its homography could not be loaded), or None
    (no frame).

    A source's frames come from one sequential decode (``iter_frames``: one seek, not one per
    batch) and each is cropped as it arrives, so only one full-size frame is held at a time: a
    10 s bucket of 1080p frames is 1.9 GB, its 112 px crops 11 MB. Rows that share a frame
    share its decode. After a frame that cannot be loaded, the rest are loaded one by one."""
    s = se.stream_id
    pos, src = _col(table, column(s, POS)), _col(table, column(s, SRC))
    hs = _col(table, column(s, H)) if se.warp else [None] * table.num_rows
    out: list = [None] * table.num_rows
    by_src: dict[str, dict[int, list[int]]] = {}
    for i, (p, u) in enumerate(zip(pos, src)):
        if p is not None and u is not None:
            by_src.setdefault(u, {}).setdefault(int(p), []).append(i)

    def take(frame: np.ndarray, rows: list[int]) -> None:
        for i in rows:
            try:
                h = _homography(hs[i])
            except ValueError as e:
                out[i] = e
                continue
            try:
                out[i] = Prepared(preprocess_video(frame, h, opts))
            except Exception as e:  # noqa: BLE001 - the row's dead letter
                out[i] = PrepareFailed(e)

    for uri, rows_at in by_src.items():
        try:
            for p, frame in se.ref.iter_frames(uri, list(rows_at)):
                take(frame, rows_at.pop(p))
        except Exception:  # noqa: BLE001 - find the bad frame(s) one by one
            for p in sorted(rows_at):
                try:
                    frame = se.ref.frames(uri, [p])[0]
                except Exception as e:  # noqa: BLE001
                    for i in rows_at[p]:
                        out[i] = e
                    continue
                take(frame, rows_at[p])
    return out


def audio_inputs(table: pa.Table, se: StreamEncode) -> list:
    """Per row: (samples float32, sample_rate), an exception, or None."""
    s = se.stream_id
    s0, s1 = _col(table, column(s, SAMPLE_START)), _col(table, column(s, SAMPLE_END))
    sr, src = _col(table, column(s, SAMPLE_RATE)), _col(table, column(s, SRC))
    out: list = [None] * table.num_rows
    by_src: dict[str, list[int]] = {}
    for i in range(table.num_rows):
        if s0[i] is not None and s1[i] is not None and src[i] is not None:
            by_src.setdefault(src[i], []).append(i)
    for uri, rows in by_src.items():
        lo, hi = min(s0[i] for i in rows), max(s1[i] for i in rows)
        try:
            pcm = se.ref.audio(uri, lo, hi)
        except Exception as e:  # noqa: BLE001 - every tick of this file fails alike
            for i in rows:
                out[i] = e
            continue
        for i in rows:
            out[i] = (pcm[s0[i] - lo:s1[i] - lo], sr[i])
    return out


def text_inputs(table: pa.Table, se: StreamEncode) -> list:
    return [None if t is None else t.split("\n") for t in _col(table, column(se.stream_id, TEXT))]


def sensor_inputs(table: pa.Table, se: StreamEncode, load) -> list:
    """Per row: a (w, c) window, an exception, or None. ``load(uri)`` gives SensorRows."""
    s = se.stream_id
    pos, src = _col(table, column(s, POS)), _col(table, column(s, SRC))
    right = _col(table, column(s, POS_RIGHT)) if column(s, POS_RIGHT) in table.column_names else pos
    out: list = [None] * table.num_rows
    for i in range(table.num_rows):
        if pos[i] is None or src[i] is None:
            continue
        try:
            rows = load(src[i])
            out[i] = rows.window(pos[i], right[i] if right[i] is not None else pos[i],
                                 se.window_ns // 2)
        except Exception as e:  # noqa: BLE001
            out[i] = e
    return out


# ---------------------------------------------------------------- encoding one stream

def _position(se: StreamEncode, table: pa.Table, i: int) -> str:
    s, m = se.stream_id, se.stream.modality
    if m == "audio":
        return (f"samples={table.column(column(s, SAMPLE_START))[i].as_py()}.."
                f"{table.column(column(s, SAMPLE_END))[i].as_py()}")
    if m in ("video", "sensor") and column(s, POS) in table.column_names:
        return f"{'frame' if m == 'video' else 'row'}={table.column(column(s, POS))[i].as_py()}"
    return f"tick={table.column(TICK_NS)[i].as_py()}"


def _request(se: StreamEncode, session_id: str, tick: int, value: Any) -> EncodeRequest:
    m = se.stream.modality
    if m == "audio":
        pcm, sr = value
        return EncodeRequest(session_id, se.stream_id, m, tick, pcm, sample_rate=sr)
    return EncodeRequest(session_id, se.stream_id, m, tick, value)


def encode_stream(table: pa.Table, se: StreamEncode, runner, inputs: list, opts: dict,
                  run_id: str = "") -> tuple[dict[str, pa.Array], np.ndarray, list[DeadLetter]]:
    """One stream's columns for the bucket: (columns, (N, D) matrix, dead letters)."""
    n, dim = table.num_rows, runner.encoder.dim
    session_id = table.column(SESSION_ID)[0].as_py() if n else ""
    ticks = table.column(TICK_NS).to_pylist()
    align_status = _col(table, column(se.stream_id, STATUS))
    mat = np.full((n, dim), np.nan, np.float32)
    ids: list[str | None] = [None] * n
    status: list[str] = [f"no_input:{align_status[i] or 'missing'}" for i in range(n)]
    dead: list[DeadLetter] = []

    def fail(i: int, exc_class: str, reason: str, message: str) -> None:
        status[i] = reason
        dead.append(DeadLetter(
            stage="encode", error_class=exc_class, reason=reason, message=message,
            run_id=run_id, session_id=session_id, stream_id=se.stream_id,
            modality=se.stream.modality, source_uri=_col(table, column(se.stream_id, SRC))[i],
            position=_position(se, table, i), event_time_ns=ticks[i]))

    todo: list[tuple[int, Any]] = []
    for i, value in enumerate(inputs):
        if value is None:
            continue
        if isinstance(value, Exception):
            fail(i, type(value).__name__, "load_failed", str(value))
            continue
        if isinstance(value, PrepareFailed):
            fail(i, type(value.error).__name__, "preprocess_failed", str(value.error))
            continue
        try:
            x = value.x if isinstance(value, Prepared) else preprocess_request(
                _request(se, session_id, ticks[i], value), opts)
        except Exception as e:  # noqa: BLE001
            fail(i, type(e).__name__, "preprocess_failed", str(e))
            continue
        if x is None:
            status[i] = "no_input:empty"
        else:
            todo.append((i, x))
    batch = se.cfg.max_batch_size
    for k in range(0, len(todo), batch):
        part = todo[k:k + batch]
        for (i, _), row in zip(part, run_batch(runner, [x for _, x in part])):
            if isinstance(row, EncodeFailure):
                fail(i, row.error_class, row.reason, row.message)
            else:
                mat[i], ids[i], status[i] = row, runner.model_id, OK
    return stream_columns(se.stream_id, mat, ids, status), mat, dead


def encode_table(table: pa.Table, plan: SessionEncode, runners: dict[str, Any],
                 sensor_rows, run_id: str = "") -> tuple[pa.Table, list[DeadLetter]]:
    """The aligned ``table`` with every planned stream's columns (+ fusion) appended."""
    cols: dict[str, pa.Array] = {}
    mats, dead = [], []
    for se in plan.streams:
        runner = runners[se.key]
        m = se.stream.modality
        opts = preprocess_options(se.cfg)
        if m == "video":
            inputs = video_inputs(table, se, opts)
        elif m == "audio":
            inputs = audio_inputs(table, se)
        elif m == "text":
            inputs = text_inputs(table, se)
        else:
            inputs = sensor_inputs(table, se, lambda uri, se=se: sensor_rows(se, uri))
        c, mat, d = encode_stream(table, se, runner, inputs, opts, run_id)
        cols.update(c)
        mats.append(mat)
        dead += d
    if plan.fusion is not None:
        cols.update(fusion_columns(mats, plan.fusion))
    for name, arr in cols.items():
        table = table.append_column(name, arr)
    return table, dead


# ---------------------------------------------------------------- Beam shell

class _Holder:
    """Weak-referenceable box for a Shared model."""

    def __init__(self, runner):
        self.runner = runner


class EncodeAlignedFn(beam.DoFn):
    """((session, bucket), table) -> same key, table + embedding columns; ``dead`` output.
    Models load in setup(), one per distinct config, shared by the process's threads."""

    def __init__(self, plans: dict[str, SessionEncode], run_id: str = ""):
        self.plans, self.run_id = plans, run_id
        keys = {se.key: se.cfg for p in plans.values() for se in p.streams}
        self._cfgs = keys
        self._shared = {k: shared.Shared() for k in keys}
        self._lock = threading.Lock()

    def setup(self):
        self._holders = {k: self._shared[k].acquire(
            lambda cfg=cfg: _Holder(load_runner(cfg)), tag=k) for k, cfg in self._cfgs.items()}
        self.runners = {k: h.runner for k, h in self._holders.items()}
        self._sensor_cache: OrderedDict = OrderedDict()

    def _sensor_rows(self, se: StreamEncode, uri: str) -> SensorRows:
        key = (se.stream_id, uri)
        with self._lock:
            if key in self._sensor_cache:
                self._sensor_cache.move_to_end(key)
                return self._sensor_cache[key]
        rows = se.ref.sensor_rows(uri, se.channels)
        with self._lock:
            self._sensor_cache[key] = rows
            while len(self._sensor_cache) > SENSOR_CACHE_FILES:
                self._sensor_cache.popitem(last=False)
        return rows

    def process(self, element):
        (session_id, bucket), table = element
        plan = self.plans.get(session_id)
        if plan is None or table.num_rows == 0:
            yield (session_id, bucket), table
            return
        with ENCODE.timed(session=session_id, bucket=bucket):  # time + sampled span
            out, dead = encode_table(table, plan, self.runners, self._sensor_rows, self.run_id)
        for se in plan.streams:
            st = out.column(column(se.stream_id, EMB_STATUS)).to_pylist()
            ok = sum(s == OK for s in st)
            missing = sum(s.startswith("no_input") for s in st)
            m = se.stream.modality
            ENCODE.count("ok", ok, modality=m)
            ENCODE.count("no_input", missing, modality=m)
            ENCODE.count("failed", len(st) - ok - missing, modality=m)
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)
        yield (session_id, bucket), out


def encode_stage(manifests: list[Manifest], run_id: str = "") -> beam.PTransform | None:
    """The post-align encode stage for these manifests (None when none configures encoders)."""
    plans = {m.session: p for m in manifests if (p := plan_encoders(m)) is not None}
    if not plans:
        return None
    return beam.ParDo(EncodeAlignedFn(plans, run_id)).with_outputs(DEAD, main=MAIN)


__all__ = ["EncodeAlignedFn", "SessionEncode", "StreamEncode", "encode_stage", "encode_table",
           "plan_encoders"]
