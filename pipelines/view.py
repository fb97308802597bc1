"""``mmalign view OUT``: an aligned output in the Rerun viewer, every stream scrubbed together.

    mmalign view OUT [--session S] (--rrd FILE | --serve) [--fps 2] [--width 320] ...

Reads the output only through the project's readers (``read_aligned``, ``read_dead_letters``,
``read_sync_results``, the run summary) and reopens the media the rows point at through
``SourceRef`` (the recording's manifest is named in the summary). One Rerun recording per
output, on one timeline per clock:

    ref_time                 the reference clock (the ticks, every sample's ``__t_ns``)
    <domain>_time            each device clock domain: the same data at its device time
    tick                     the aligned row (tick_pos): step row by row

Entities (``<s>`` a stream id):

    video/<s>                frames at their reference time, subsampled to ``fps`` per camera,
                             downscaled to ``width`` px, JPEG
    registered/<s>           a registered camera's frames warped into the reference camera
                             (``<s>__H``)
    audio/<s>                the waveform: min/max envelope per 1/``audio_hz`` s
    sensor/<s>               the aligned channel values (one series per channel)
    text/<s>                 subtitles: a log entry per cue change, and ``text/<s>/on_screen``
                             the text shown at each moment
    status/<s>               ok / partial / gap / no sample / out of range / no cue per tick
                             (state changes)
    deadletters/<s>          each dead letter at its place (event time, else its position)
                             with stage/reason and message
    sync/<s>/...             DTW-sync evidence: the feature curves (reference, the stream
                             before and after the fit), landmark offsets, the fitted line, the
                             DTW path, the residuals, and a summary

The Rerun SDK is the optional ``[viewer]`` extra, imported only here and only when called.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines.placement import StreamTimes, place_letters, stream_times
from mmalign.pipelines.sync_evidence import SyncPicture, sync_pictures
from mmalign.schemas.aligned import (
    CUES,
    FILE,
    POS,
    POS_RIGHT,
    SAMPLE_END,
    SAMPLE_RATE,
    SAMPLE_START,
    SEP,
    SRC,
    STATUS,
    T_NS,
    TEXT,
    TICK_NS,
    TICK_POS,
    VALUE_STATUSES,
    H,
    column,
    registered_cameras,
    split_column,
    stream_ids,
)
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.errors import missing_extra
from mmalign.schemas.layout import ALIGNED, DEADLETTER, SUMMARY
from mmalign.schemas.manifest import Manifest, ManifestError, load_manifest
from mmalign.schemas.sync import SyncResult, read_sync_results
from mmalign.transforms.decode.sources import SourceRef
from mmalign.transforms.io.parquet import read_aligned

REF_TIME, TICK = "ref_time", "tick"
EPOCH_NS = 10**17             # reference times beyond this (~1973) are wall-clock timestamps

STATE_OF = {                  # <stream>__status -> the status lane's state
    "ok": "ok", "partial_window": "partial", "gap_too_large": "gap", "empty_window": "gap",
    "no_sample_in_tolerance": "no sample", "taken": "no sample", "not_local": "no sample",
    "out_of_range": "out of range", "no_overlap": "no cue",
}
_NOT_CHANNELS = {STATUS, "dt_ns", T_NS, POS, POS_RIGHT, SRC, FILE, SAMPLE_START, SAMPLE_END,
                 "coverage", SAMPLE_RATE, TEXT, CUES, H, "emb", "model_id", "emb_status"}


class ViewError(ValueError):
    """OUT cannot be viewed; the message is the one sentence shown (exit 2)."""


@dataclass(frozen=True)
class ViewOptions:
    fps: float = 2.0              # frames per second per camera (the rest are skipped)
    width: int = 320              # frame width in px (height keeps the aspect ratio)
    jpeg_quality: int = 75
    audio_hz: float = 50.0        # waveform envelope bins per second
    curve_hz: float = 25.0        # sync feature curves, max-pooled to this rate
    curves: bool = True           # decode the synced streams again for the feature curves


@dataclass
class SessionView:
    """What one session of an output gives the viewer."""
    session: str
    rows: pa.Table
    letters: list[dict]
    manifest: Manifest | None
    models: dict[str, ClockModel]             # stream -> the model its times went through
    sync: dict[str, SyncResult]               # stream -> its DTW-sync result
    modality: dict[str, str] = field(default_factory=dict)
    domain: dict[str, str] = field(default_factory=dict)   # stream -> clock domain

    @property
    def streams(self) -> list[str]:
        return stream_ids(self.rows.column_names)


@dataclass
class ViewStats:
    """What was logged (returned by ``log_output``; printed by the command)."""
    sessions: list[str] = field(default_factory=list)
    entities: set[str] = field(default_factory=set)
    frames: int = 0
    letters: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading the output


def _summary(out: Path) -> dict:
    p = out / SUMMARY
    if not p.is_file():
        return {}
    try:
        s = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return s if isinstance(s, dict) else {}


def _manifests(summary: dict) -> dict[str, Manifest]:
    out = {}
    for path in summary.get("manifests") or []:
        try:
            m = load_manifest(path)
        except (ManifestError, OSError, TypeError, ValueError):
            continue
        out[m.session] = m
    return out


def _guess_modality(names: list[str], stream: str) -> str:
    fields = {p[1] for p in map(split_column, names) if p and p[0] == stream}
    if SAMPLE_START in fields:
        return "audio"
    if TEXT in fields:
        return "text"
    if POS_RIGHT in fields or _channels(names, stream):
        return "sensor"
    return "video"


def _channels(names: list[str], stream: str) -> list[str]:
    out = []
    for n in names:
        p = split_column(n)
        if p and p[0] == stream and p[1] not in _NOT_CHANNELS and SEP not in p[1] \
                and not p[1].startswith("reg_"):
            out.append(p[1])
    return out


def load_output(out: str | Path, session: str | None = None) -> list[SessionView]:
    """The sessions of a backfill output folder (one when ``session`` is given)."""
    out = Path(out)
    if not out.is_dir():
        raise ViewError(f"{out} is not a folder; give the --out folder of mmalign backfill")
    summary = _summary(out)
    try:
        rows = read_aligned(out / ALIGNED, session)
        dead = read_dead_letters(out / DEADLETTER)
        sync = ({k: SyncResult.from_dict(v) for k, v in summary["sync"].items()}
                if isinstance(summary.get("sync"), dict) and summary["sync"]
                else read_sync_results(out))
    except (pa.ArrowException, OSError, json.JSONDecodeError, KeyError) as e:
        raise ViewError(f"{out} is not a readable backfill output ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); rerun the backfill into it") from None
    if rows.num_rows == 0 or "session_id" not in rows.column_names:
        which = f"session {session!r}" if session else "any session"
        raise ViewError(f"{out} has no aligned rows for {which}; give a backfill --out folder "
                        "(and a --session it ran)")
    manifests = _manifests(summary)
    clocks = summary.get("clocks") if isinstance(summary.get("clocks"), dict) else {}
    letters = dead.drop_columns([c for c in ("payload",) if c in dead.column_names]).to_pylist()
    views = []
    for s in sorted(set(rows.column("session_id").to_pylist())):
        part = rows.filter(pc.equal(rows.column("session_id"), s))
        m = manifests.get(s)
        streams = stream_ids(part.column_names)
        # a stream of another session: its columns are all null here
        streams = [x for x in streams if part.column(column(x, STATUS)).null_count < part.num_rows]
        keep = [n for n in part.column_names
                if not split_column(n) or split_column(n)[0] in streams
                or split_column(n)[0] not in stream_ids(part.column_names)]
        part = part.select(keep)
        mine = {k.split("/", 1)[1]: r for k, r in sync.items() if k.split("/", 1)[0] == s}
        models = {}
        for x in streams:
            r = mine.get(x)
            models[x] = r.model if r is not None else ClockModel.from_dict(
                clocks.get(f"{s}/{x}") or {})
        v = SessionView(s, part, [d for d in letters if d.get("session_id") == s], m, models,
                        mine)
        for x in streams:
            st = m.stream(x) if m is not None and x in {y.id for y in m.streams} else None
            v.modality[x] = st.modality if st is not None else _guess_modality(
                part.column_names, x)
            v.domain[x] = st.clock_domain if st is not None else x
        views.append(v)
    return views


# ---------------------------------------------------------------- helpers


def _rr():
    try:
        import rerun as rr  # lazy: the [viewer] extra; the pipeline never needs it
    except ImportError as e:
        raise missing_extra(e, "mmalign view") from None
    return rr


def _time_column(rr, name: str, t_ns):
    t = np.asarray(t_ns, np.int64)
    if t.size and np.abs(t).max() > EPOCH_NS:
        return rr.TimeColumn(name, timestamp=t.astype("datetime64[ns]"))
    return rr.TimeColumn(name, duration=t.astype("timedelta64[ns]"))


def _indexes(rr, v: SessionView, stream: str | None, t_ref, ticks=None) -> list:
    """ref_time, the stream's device timeline, and the tick index when given."""
    t_ref = np.asarray(t_ref, np.int64)
    cols = [_time_column(rr, REF_TIME, t_ref)]
    if stream is not None:
        cols.append(_time_column(rr, device_timeline(v, stream),
                                 v.models[stream].to_dev(t_ref)))
    if ticks is not None:
        cols.append(rr.TimeColumn(TICK, sequence=np.asarray(ticks, np.int64)))
    return cols


def device_timeline(v: SessionView, stream: str) -> str:
    return f"{v.domain.get(stream, stream)}_time"


def _subsample(t_ns: np.ndarray, fps: float) -> np.ndarray:
    """Indices of sorted times, at least 1/fps apart (greedy from the first)."""
    if t_ns.size == 0 or fps <= 0:
        return np.arange(t_ns.size)
    step = 1e9 / fps
    keep, last = [], -math.inf
    for i, t in enumerate(t_ns):
        if t - last >= step * 0.999:
            keep.append(i)
            last = t
    return np.asarray(keep, np.int64)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _small_size(w: int, h: int, width: int) -> tuple[int, int]:
    if w <= width:
        return w, h
    return width, max(2, round(h * width / w))


def _pool_max(t: np.ndarray, v: np.ndarray, hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Max-pool a regular curve to ``hz`` (impulses keep their height)."""
    if t.size < 2 or hz <= 0:
        return t, v
    step = float(np.median(np.diff(t)))
    k = max(1, int(round(1e9 / hz / step)))
    n = v.size // k * k
    if k == 1 or n == 0:
        return t, v
    vv = v[:n].reshape(-1, k)
    idx = np.arange(0, n, k) + vv.argmax(axis=1)
    return t[idx], v[idx]


# ---------------------------------------------------------------- logging


class _Logger:
    def __init__(self, rr, rec, opts: ViewOptions, stats: ViewStats, prefix: str):
        self.rr, self.rec, self.opts, self.stats, self.prefix = rr, rec, opts, stats, prefix

    def path(self, *parts: str) -> str:
        return "/".join([p for p in (self.prefix,) if p] + list(parts))

    def send(self, entity: str, indexes: list, columns) -> None:
        self.rec.send_columns(self.path(entity), indexes=indexes, columns=columns)
        self.stats.entities.add("/" + self.path(entity))

    def static(self, entity: str, archetype) -> None:
        self.rec.log(self.path(entity), archetype, static=True)
        self.stats.entities.add("/" + self.path(entity))

    def warn(self, text: str) -> None:
        self.stats.warnings.append(text)

    # ------------------------------------------------------------ per modality

    def video(self, v: SessionView, stream: str, ref_sizes: dict[str, tuple[int, int]]) -> None:
        rr, rows = self.rr, v.rows
        ok = np.isin(np.asarray(rows.column(column(stream, STATUS)).to_pylist(), object),
                     VALUE_STATUSES)
        if column(stream, POS) not in rows.column_names or column(stream, T_NS) not in \
                rows.column_names:
            return
        pos = rows.column(column(stream, POS)).to_numpy(zero_copy_only=False)
        t = rows.column(column(stream, T_NS)).to_numpy(zero_copy_only=False)
        src = np.asarray(rows.column(column(stream, SRC)).to_pylist(), object)
        ticks = rows.column(TICK_POS).to_numpy()
        hs = (rows.column(column(stream, H)).to_pylist()
              if column(stream, H) in rows.column_names else [None] * rows.num_rows)
        idx = np.flatnonzero(ok)
        # one entry per distinct frame, the first tick that used it
        seen, first = set(), []
        for k in idx[np.argsort(t[idx], kind="stable")]:
            key = (src[k], int(pos[k]))
            if key not in seen:
                seen.add(key)
                first.append(k)
        first = np.asarray(first, np.int64)
        if not first.size:
            return
        first = first[_subsample(t[first].astype(np.int64), self.opts.fps)]
        if v.manifest is None:
            self.warn(f"{stream}: no manifest in the summary to reopen the frames from")
            return
        ref = SourceRef.of(v.manifest, stream)
        reg_ref = v.manifest.registration.reference if v.manifest.registration else None
        frames: dict[int, bytes] = {}
        warped: dict[int, bytes] = {}
        by_src: dict[str, list[int]] = defaultdict(list)
        for k in first:
            by_src[src[k]].append(int(k))
        for uri, ks in by_src.items():
            want = {int(pos[k]): k for k in ks}
            try:
                for p, rgb in ref.iter_frames(uri, sorted(want)):
                    k = want[p]
                    h0, w0 = rgb.shape[:2]
                    size = _small_size(w0, h0, self.opts.width)
                    ref_sizes.setdefault(stream, size)
                    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) \
                        if size != (w0, h0) else rgb
                    frames[k] = _jpeg(small, self.opts.jpeg_quality)
                    hm = hs[k]
                    if hm is not None and reg_ref is not None:
                        rw, rh = ref_sizes.get(reg_ref, size)
                        full = ref_sizes.get(f"{reg_ref}#full", (w0, h0))
                        scale = np.diag([rw / full[0], rh / full[1], 1.0])
                        Hs = scale @ np.asarray(hm, np.float64).reshape(3, 3)
                        out = cv2.warpPerspective(rgb, Hs, (rw, rh), flags=cv2.INTER_LINEAR)
                        warped[k] = _jpeg(out, self.opts.jpeg_quality)
                    ref_sizes.setdefault(f"{stream}#full", (w0, h0))
            except (ValueError, OSError) as e:
                self.warn(f"{stream}: frames of {uri} could not all be loaded ({e})")
        for name, got in ((f"video/{stream}", frames), (f"registered/{stream}", warped)):
            ks = np.asarray(sorted(got, key=lambda k: t[k]), np.int64)
            if not ks.size:
                continue
            self.send(name, _indexes(rr, v, stream, t[ks], ticks[ks]),
                      rr.EncodedImage.columns(blob=[got[k] for k in ks],
                                              media_type=["image/jpeg"] * ks.size))
            if name.startswith("video/"):
                self.stats.frames += int(ks.size)

    def audio(self, v: SessionView, stream: str) -> None:
        rr, rows = self.rr, v.rows
        if v.manifest is None:
            self.warn(f"{stream}: no manifest in the summary to reopen the audio from")
            return
        ok = np.isin(np.asarray(rows.column(column(stream, STATUS)).to_pylist(), object),
                     VALUE_STATUSES)
        start = rows.column(column(stream, SAMPLE_START)).to_numpy(zero_copy_only=False)
        end = rows.column(column(stream, SAMPLE_END)).to_numpy(zero_copy_only=False)
        rate = rows.column(column(stream, SAMPLE_RATE)).to_numpy(zero_copy_only=False)
        src = np.asarray(rows.column(column(stream, SRC)).to_pylist(), object)
        ticks = rows.column(TICK_NS).to_numpy()
        ref = SourceRef.of(v.manifest, stream)
        ts, lo_hi = [], []
        for uri in sorted({s for s in src[ok] if s}):
            sel = ok & (src == uri)
            s0, e0 = start[sel].astype(np.float64), end[sel].astype(np.float64)
            sr = float(np.median(rate[sel]))
            centre = (s0 + e0) / 2
            if np.ptp(centre) > 0:     # sample -> reference time, from the windows (drift too)
                b, a = np.polyfit(centre, ticks[sel].astype(np.float64), 1)
            else:
                b, a = 1e9 / sr, float(ticks[sel][0]) - centre[0] * 1e9 / sr
            lo, hi = int(s0.min()), int(e0.max())
            per_bin = max(1, int(round(sr / self.opts.audio_hz)))
            step = per_bin * int(max(1, round(sr * 30 / per_bin)))      # ~30 s per read
            for a0 in range(lo, hi, step):
                a1 = min(hi, a0 + step)
                try:
                    pcm = np.asarray(ref.audio(uri, a0, a1), np.float32)
                except (ValueError, OSError) as e:
                    self.warn(f"{stream}: audio {uri} [{a0}, {a1}) could not be read ({e})")
                    continue
                if pcm.ndim > 1:
                    pcm = pcm.mean(axis=1)
                n = pcm.size // per_bin
                if n == 0:
                    continue
                blocks = pcm[:n * per_bin].reshape(n, per_bin)
                centres = a0 + (np.arange(n) + 0.5) * per_bin
                ts.append(a + b * centres)
                lo_hi.append(np.column_stack([blocks.min(axis=1), blocks.max(axis=1)]))
        if not ts:
            return
        t_all = np.round(np.concatenate(ts)).astype(np.int64)
        vals = np.concatenate(lo_hi).astype(np.float64)
        self.static(f"audio/{stream}", rr.SeriesLines(names=["min", "max"],
                                                     colors=[[49, 130, 189], [49, 130, 189]],
                                                     widths=[1.0, 1.0]))
        self.send(f"audio/{stream}", _indexes(rr, v, stream, t_all),
                  rr.Scalars.columns(scalars=vals))

    def sensor(self, v: SessionView, stream: str) -> None:
        rr, rows = self.rr, v.rows
        chans = _channels(rows.column_names, stream)
        if not chans:
            return
        ok = np.isin(np.asarray(rows.column(column(stream, STATUS)).to_pylist(), object),
                     VALUE_STATUSES)
        vals = np.column_stack([rows.column(column(stream, c)).to_numpy(zero_copy_only=False)
                                .astype(np.float64) for c in chans])[ok]
        ticks = rows.column(TICK_NS).to_numpy()[ok]
        if not ticks.size:
            return
        self.static(f"sensor/{stream}", rr.SeriesLines(names=chans))
        self.send(f"sensor/{stream}",
                  _indexes(rr, v, stream, ticks, rows.column(TICK_POS).to_numpy()[ok]),
                  rr.Scalars.columns(scalars=vals))

    def text(self, v: SessionView, stream: str) -> None:
        rr, rows = self.rr, v.rows
        texts = rows.column(column(stream, TEXT)).to_pylist() \
            if column(stream, TEXT) in rows.column_names else [None] * rows.num_rows
        cues = rows.column(column(stream, CUES)).to_pylist() \
            if column(stream, CUES) in rows.column_names else [None] * rows.num_rows
        ticks, tpos = rows.column(TICK_NS).to_numpy(), rows.column(TICK_POS).to_numpy()
        change, prev = [], object()
        for k in range(rows.num_rows):
            cur = (tuple(cues[k] or ()), texts[k] or "")
            if cur != prev:
                change.append(k)
                prev = cur
        if not change:
            return
        ks = np.asarray(change, np.int64)
        shown = [texts[k] or "" for k in ks]
        idx = _indexes(rr, v, stream, ticks[ks], tpos[ks])
        self.send(f"text/{stream}/on_screen", idx, rr.TextDocument.columns(text=shown))
        self.send(f"text/{stream}", idx,
                  rr.TextLog.columns(text=[s if s else "(no subtitle)" for s in shown],
                                     level=["INFO" if s else "DEBUG" for s in shown]))

    def status(self, v: SessionView, stream: str) -> None:
        rr, rows = self.rr, v.rows
        st = [STATE_OF.get(s, s or "none") for s in
              rows.column(column(stream, STATUS)).to_pylist()]
        ticks, tpos = rows.column(TICK_NS).to_numpy(), rows.column(TICK_POS).to_numpy()
        ks = [k for k in range(len(st)) if k == 0 or st[k] != st[k - 1]]
        if not ks:
            return
        ks = np.asarray(ks, np.int64)
        self.send(f"status/{stream}", _indexes(rr, v, stream, ticks[ks], tpos[ks]),
                  rr.StateChange.columns(state=[st[k] for k in ks]))

    def letters(self, v: SessionView, times: dict[str, StreamTimes]) -> None:
        rr = self.rr
        ticks = v.rows.column(TICK_NS).to_numpy()
        first = int(ticks.min()) if ticks.size else 0
        by_stream: dict[str, list[dict]] = defaultdict(list)
        for d in v.letters:
            by_stream[d.get("stream_id") or "_session"].append(d)
        for stream, ds in sorted(by_stream.items()):
            model = v.models.get(stream, ClockModel())
            empty = StreamTimes(np.zeros(0, np.int64), np.zeros(0, np.int64),
                                np.zeros(0, object))
            at = place_letters(ds, times.get(stream, empty), model, first)
            order = np.argsort(at, kind="stable")
            text = [f"{ds[i]['stage']}/{ds[i]['reason']} {ds[i].get('position') or ''}: "
                    f"{ds[i].get('message') or ''}".replace("  ", " ") for i in order]
            idx = [_time_column(rr, REF_TIME, at[order])]
            if stream in v.models:
                idx.append(_time_column(rr, device_timeline(v, stream),
                                        model.to_dev(at[order])))
            self.send(f"deadletters/{stream}", idx,
                      rr.TextLog.columns(text=text, level=["ERROR"] * len(text)))
            self.stats.letters += len(text)

    def sync(self, v: SessionView, pic: SyncPicture) -> None:
        rr = self.rr
        s, r = pic.stream, pic.result
        ref_model = v.models.get(pic.reference, ClockModel())
        base = f"sync/{s}"

        def curve(name: str, t_refdev, values):
            t, val = _pool_max(np.asarray(t_refdev, np.float64), np.asarray(values),
                               self.opts.curve_hz)
            if not t.size:
                return
            t_ref = np.round(ref_model.to_ref(np.round(t).astype(np.int64))).astype(np.int64)
            idx = [_time_column(rr, REF_TIME, t_ref)]
            self.send(f"{base}/features/{name}", idx, rr.Scalars.columns(scalars=val))

        if pic.reference_curve is not None:
            curve("reference", pic.reference_curve.t_ns, pic.reference_curve.values)
        b, a = pic.before(), pic.after()
        if b is not None:
            curve("before", b[0], b[1])
        if a is not None:
            curve("after", a[0], a[1])
        e = pic.evidence
        if e.pair_dev_ns:
            t_ref = ref_model.to_ref(np.asarray(e.pair_ref_ns, np.int64))
            inl = np.asarray(e.inlier, bool)
            off, res = pic.pair_offsets_ms(), np.asarray(e.residual_ms, np.float64)
            for name, sel in (("inliers", inl), ("outliers", ~inl)):
                if not sel.any():
                    continue
                order = np.argsort(t_ref[sel], kind="stable")
                idx = [_time_column(rr, REF_TIME, t_ref[sel][order])]
                self.static(f"{base}/offset_ms/{name}",
                            rr.SeriesPoints(markers="circle" if name == "inliers" else "cross",
                                            marker_sizes=3.0))
                self.send(f"{base}/offset_ms/{name}", idx,
                          rr.Scalars.columns(scalars=off[sel][order]))
                self.static(f"{base}/residual_ms/{name}",
                            rr.SeriesPoints(markers="circle" if name == "inliers" else "cross",
                                            marker_sizes=3.0))
                self.send(f"{base}/residual_ms/{name}", idx,
                          rr.Scalars.columns(scalars=res[sel][order]))
            dev = np.asarray(e.pair_dev_ns, np.float64)
            grid = np.linspace(dev.min(), dev.max(), 64)
            fitted = pic.line_offset_ms(grid)
            t_line = ref_model.to_ref(np.round(grid + fitted * 1e6).astype(np.int64))
            self.send(f"{base}/offset_ms/fitted_line", [_time_column(rr, REF_TIME, t_line)],
                      rr.Scalars.columns(scalars=fitted))
        if e.path_dev_ns:
            t_path = ref_model.to_ref(np.asarray(e.path_ref_ns, np.int64))
            self.send(f"{base}/offset_ms/dtw_path", [_time_column(rr, REF_TIME, t_path)],
                      rr.Scalars.columns(scalars=pic.path_offsets_ms()))
        fit = pic.fit
        lines = [f"## {s} vs {pic.reference}",
                 f"- features: {r.features or '-'} (engine {r.engine})",
                 f"- state: {'FELL BACK: ' + r.reason if r.fell_back else 'estimated'}",
                 f"- confidence: {r.confidence:.3f}",
                 f"- fitted line: offset {fit.offset_ns / 1e6:+.3f} ms at "
                 f"{fit.anchor_ns / 1e9:.3f} s, drift {fit.drift_ppm:+.2f} ppm"
                 if fit is not None else "- fitted line: none",
                 f"- landmark pairs: {r.n_landmarks}, inliers {r.n_inliers}, residual rms "
                 f"{r.residual_rms_ms:.3f} ms, max {r.residual_max_ms:.3f} ms",
                 f"- used model: offset {r.model.offset_ns / 1e6:+.3f} ms, drift "
                 f"{r.model.drift_ppm:+.2f} ppm ({r.model.source})"]
        if pic.note:
            lines.append(f"- feature curves: {pic.note}")
        self.static(f"{base}/summary", rr.TextDocument("\n".join(lines),
                                                      media_type="text/markdown"))


def _blueprint(rr, views: list[SessionView], pictures: dict[str, list[SyncPicture]],
               prefix_of: dict[str, str]):
    rrb = rr.blueprint
    tabs = []
    for v in views:
        pre = prefix_of[v.session]

        def p(*parts, pre=pre):
            return "/".join([x for x in (pre,) if x] + list(parts))

        mods = v.modality
        cams = [s for s in v.streams if mods.get(s) == "video"]
        regs = registered_cameras(v.rows.column_names)
        left = [rrb.Grid(*[rrb.Spatial2DView(origin=p("video", c), name=c) for c in cams],
                         *[rrb.Spatial2DView(origin=p("registered", c),
                                             name=f"{c} in the reference camera")
                           for c in regs])] if cams else []
        if any(mods.get(s) == "audio" for s in v.streams):
            left.append(rrb.TimeSeriesView(origin=p("audio"), name="audio"))
        right = []
        if any(mods.get(s) == "sensor" for s in v.streams):
            right.append(rrb.TimeSeriesView(origin=p("sensor"), name="sensors"))
        texts = [s for s in v.streams if mods.get(s) == "text"]
        for t in texts:
            right.append(rrb.TextDocumentView(origin=p("text", t, "on_screen"),
                                              name=f"{t} on screen"))
        if texts:
            right.append(rrb.TextLogView(origin=p("text"), name="subtitles"))
        right.append(rrb.StateTimelineView(origin=p("status"), name="status per stream"))
        right.append(rrb.TextLogView(origin=p("deadletters"), name="dead letters"))
        main = rrb.Horizontal(rrb.Vertical(*left) if left else rrb.Vertical(),
                              rrb.Vertical(*right), name=f"{v.session}: aligned")
        tabs.append(main)
        for pic in pictures.get(v.session, []):
            base = p("sync", pic.stream)
            tabs.append(rrb.Vertical(
                rrb.TimeSeriesView(origin=f"{base}/features", name="feature curves"),
                rrb.Horizontal(
                    rrb.TimeSeriesView(origin=f"{base}/offset_ms",
                                       name="offset ms: pairs, fitted line, DTW path"),
                    rrb.TimeSeriesView(origin=f"{base}/residual_ms", name="residual ms")),
                rrb.TextDocumentView(origin=f"{base}/summary", name="fit"),
                row_shares=[2, 2, 1], name=f"sync {pic.stream}"))
    return rrb.Blueprint(rrb.Tabs(*tabs), rrb.TimePanel(timeline=REF_TIME),
                         collapse_panels=False)


def log_output(out: str | Path, rec, *, session: str | None = None,
               opts: ViewOptions = ViewOptions(), views: list[SessionView] | None = None
               ) -> ViewStats:
    """Log the output folder ``out`` into the Rerun ``RecordingStream`` ``rec``."""
    rr = _rr()
    t0 = time.perf_counter()
    views = views if views is not None else load_output(out, session)
    stats = ViewStats(sessions=[v.session for v in views])
    prefix_of = {v.session: (v.session if len(views) > 1 else "") for v in views}
    pictures: dict[str, list[SyncPicture]] = {}
    for v in views:
        lg = _Logger(rr, rec, opts, stats, prefix_of[v.session])
        ref_sizes: dict[str, tuple[int, int]] = {}
        reg_ref = (v.manifest.registration.reference
                   if v.manifest is not None and v.manifest.registration else None)
        order = sorted(v.streams, key=lambda s: (s != reg_ref, v.streams.index(s)))
        times = {s: stream_times(v.rows, s) for s in v.streams}
        for s in order:
            mod = v.modality.get(s)
            try:
                if mod == "video":
                    lg.video(v, s, ref_sizes)
                elif mod == "audio":
                    lg.audio(v, s)
                elif mod == "sensor":
                    lg.sensor(v, s)
                elif mod == "text":
                    lg.text(v, s)
            except (ValueError, OSError, ManifestError) as e:
                lg.warn(f"{s}: {e}")
            lg.status(v, s)
        lg.letters(v, times)
        pics = sync_pictures(v.manifest, v.sync, v.session, curves=opts.curves)
        pictures[v.session] = pics
        for pic in pics:
            lg.sync(v, pic)
    rec.send_blueprint(_blueprint(rr, views, pictures, prefix_of))
    stats.seconds = time.perf_counter() - t0
    return stats


def write_rrd(out: str | Path, rrd: str | Path, *, session: str | None = None,
              opts: ViewOptions = ViewOptions()) -> ViewStats:
    """Write the output folder ``out`` as a Rerun ``.rrd`` file (any Rerun viewer opens it)."""
    rr = _rr()
    views = load_output(out, session)          # bad input fails before the file is made
    rrd = Path(rrd)
    rrd.parent.mkdir(parents=True, exist_ok=True)
    rec = rr.RecordingStream("mmalign", recording_id=f"mmalign-{Path(out).resolve().name}")
    rec.save(str(rrd))
    try:
        stats = log_output(out, rec, session=session, opts=opts, views=views)
    finally:
        rec.flush()
        rec.disconnect()
    return stats


def serve(out: str | Path, *, session: str | None = None, opts: ViewOptions = ViewOptions(),
          web_port: int = 9090, grpc_port: int = 9876, open_browser: bool = True,
          wait: bool = True) -> ViewStats:
    """Log into a local gRPC server and serve Rerun's web viewer on ``web_port`` (until
    Ctrl-C when ``wait``)."""
    rr = _rr()
    views = load_output(out, session)
    rec = rr.RecordingStream("mmalign", recording_id=f"mmalign-{Path(out).resolve().name}")
    uri = rec.serve_grpc(grpc_port=grpc_port, server_memory_limit="4GiB")
    rr.serve_web_viewer(web_port=web_port, open_browser=open_browser, connect_to=uri)
    stats = log_output(out, rec, session=session, opts=opts, views=views)
    print(f"mmalign view: the web viewer is at http://localhost:{web_port} (data {uri}); "
          "Ctrl-C stops it", flush=True)
    if wait:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return stats


# ---------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="a backfill --out folder")
    p.add_argument("--session", default=None, help="only this session (default: all)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--rrd", metavar="FILE", help="write a .rrd file any Rerun viewer opens "
                       "(rerun FILE, or drag it into app.rerun.io)")
    where.add_argument("--serve", action="store_true",
                       help="serve Rerun's web viewer locally (http://localhost:WEB_PORT)")
    d = ViewOptions()
    p.add_argument("--fps", type=float, default=d.fps,
                   help=f"video frames per second per camera (default {d.fps:g}; 0: all)")
    p.add_argument("--width", type=int, default=d.width,
                   help=f"frame width in px (default {d.width})")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                   help=f"frame JPEG quality 1-100 (default {d.jpeg_quality})")
    p.add_argument("--audio-hz", type=float, default=d.audio_hz,
                   help=f"waveform envelope points per second (default {d.audio_hz:g})")
    p.add_argument("--no-sync-curves", action="store_true",
                   help="skip the sync feature curves (they decode the synced streams again)")
    p.add_argument("--web-port", type=int, default=9090, help="--serve: web viewer port")
    p.add_argument("--grpc-port", type=int, default=9876, help="--serve: data port")
    p.add_argument("--no-browser", action="store_true",
                   help="--serve: do not open a browser (a headless machine)")


def options_of(ns) -> ViewOptions:
    if ns.fps < 0 or ns.width < 16 or not 1 <= ns.jpeg_quality <= 100 or ns.audio_hz <= 0:
        raise ViewError("--fps must be >= 0, --width >= 16, --jpeg-quality 1-100 and "
                        "--audio-hz > 0")
    return ViewOptions(fps=ns.fps, width=ns.width, jpeg_quality=ns.jpeg_quality,
                       audio_hz=ns.audio_hz, curves=not ns.no_sync_curves)


def cmd_view(ns) -> int:
    """``mmalign view``: 0 written / served, 2 bad input (one sentence on stderr)."""
    try:
        opts = options_of(ns)
        if ns.serve:
            serve(ns.out, session=ns.session, opts=opts, web_port=ns.web_port,
                  grpc_port=ns.grpc_port, open_browser=not ns.no_browser)
            return 0
        stats = write_rrd(ns.out, ns.rrd, session=ns.session, opts=opts)
    except (ViewError, ManifestError) as e:
        print(f"mmalign view: {e}", file=sys.stderr)
        return 2
    size = Path(ns.rrd).stat().st_size
    print(f"mmalign view: wrote {ns.rrd} ({size / 1e6:.1f} MB, {len(stats.entities)} entities, "
          f"{stats.frames} frames, {stats.letters} dead letters) in {stats.seconds:.1f} s; "
          f"open it with: rerun {ns.rrd}")
    for w in stats.warnings:
        print(f"  warning: {w}", file=sys.stderr)
    return 0
