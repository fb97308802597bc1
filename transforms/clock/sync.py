"""DTW-sync, the Beam stage: ``EstimateClocks`` turns validated chunks into clock models.

    chunks -> per-chunk partial features (audio power / sensor sums per fine bin, video motion
              of low-resolution grey frames, text cue times), keyed (session, stream, rate)
           -> GroupByKey -> one small feature per stream and family (100 Hz)
           -> grouped per session -> estimate every stream with ``sync`` against its reference
              (references first; chains compose) -> (session_id, stream_id, SyncResult)

Streams without ``sync`` are not estimated. Every stream with ``sync`` gets exactly one result:
when it cannot be estimated (no data, undecodable frames, too few shared events, low
confidence) the result carries the declared model marked ``fallback`` and the reason.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import apache_beam as beam
import av
import cv2
import numpy as np
import pyarrow as pa

from mmalign.schemas.chunk import Chunk
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.manifest import Manifest, ManifestError, SyncSpec
from mmalign.schemas.metrics import SYNC
from mmalign.schemas.sync import SyncResult, write_session_sync
from mmalign.transforms.clock.features import (
    FAMILIES,
    WAVE_FAMILY,
    Binned,
    Feature,
    FeatureError,
    MotionPart,
    WavePart,
    as_activity,
    audio_bins,
    audio_onset,
    audio_signals,
    default_family,
    flow_frame,
    merge_binned,
    merge_wave,
    motion_energy,
    motion_part,
    sensor_bins,
    sensor_magnitude,
    sensor_signals,
    speech_activity,
    syllables,
    text_activity,
    text_signals,
    video_signals,
    wave_part,
)
from mmalign.transforms.clock.fit import (
    SyncError,
    estimate_clock,
    estimate_signals,
    failed,
    finalize,
    prior_offset_ns,
)
from mmalign.transforms.clock.pairs import pairs_for, wants_waveform

GREY_WIDTH = 32                         # video frames are compared at this width
_NOT_CHANNELS = {"t_ns", "pos", "t_end_ns", "t_dev_ns"}


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class StreamNeed:
    """What one stream must provide: its modality, sensor channels, families per rate."""
    modality: str
    channels: tuple[str, ...] = ()
    families: dict[float, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionSync:
    session: str
    specs: dict[str, SyncSpec]              # stream id -> its sync spec
    families: dict[str, str]                # stream id -> feature family for its estimate
    needs: dict[str, StreamNeed]            # streams whose chunks are read (incl. references)
    declared: dict[str, ClockModel]


def plan_sync(manifest: Manifest, declared: dict) -> SessionSync:
    """The sync plan of one session. ``declared`` maps stream id (or (session, stream id)) to
    the declared ClockModel; missing streams get the identity."""
    mods = {s.id: s.modality for s in manifest.streams}
    specs = {s.id: s.sync for s in manifest.streams if s.sync is not None}
    families, wants = {}, {}
    for sid, spec in specs.items():
        if spec.reference == sid:
            raise ManifestError(f"streams[{sid}].sync.reference names the stream itself; "
                                "name another stream")
        pair = (mods[sid], mods[spec.reference])
        fam = spec.features or ("signals" if pairs_for(*pair) else default_family(*pair))
        if fam not in FAMILIES:
            raise ManifestError(f"streams[{sid}].sync.features is {fam!r}, which is not one of "
                                f"{list(FAMILIES)}; use one of them or leave it out")
        if fam == "signals" and not pairs_for(*pair):
            raise ManifestError(f"streams[{sid}].sync.features is 'signals', which has no "
                                f"features for {pair[0]} against {pair[1]}; use events or "
                                "activity, or leave it out")
        families[sid] = fam
        fams = {fam} | ({WAVE_FAMILY} if fam == "signals" and wants_waveform(*pair) else set())
        for s in (sid, spec.reference):
            wants.setdefault(s, {}).setdefault(float(spec.rate_hz), set()).update(fams)
    needs = {}
    for s, per_rate in wants.items():
        chans = tuple(specs[s].channels) if s in specs else ()
        needs[s] = StreamNeed(mods[s], chans, {r: frozenset(f) for r, f in per_rate.items()})
    decl = {s.id: declared.get((manifest.session, s.id)) or declared.get(s.id) or ClockModel()
            for s in manifest.streams}
    return SessionSync(manifest.session, specs, families, needs, decl)


# ---------------------------------------------------------------- chunk -> partial


def _audio_blocks(data: pa.RecordBatch) -> list[np.ndarray]:
    col = data.column("pcm")
    if col.null_count:
        raise FeatureError("audio chunk has blocks without PCM")
    values = col.flatten().to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy()
    return np.split(values, offsets[1:-1] - offsets[0])


def _sensor_channels(data: pa.RecordBatch, wanted: Sequence[str]) -> list[str]:
    names = data.schema.names
    if wanted:
        missing = [c for c in wanted if c not in names]
        if missing:
            raise FeatureError(f"sensor chunk lacks channels {missing} (has {names}); fix "
                               "sync.channels")
        return list(wanted)
    chans = [n for n in names if n not in _NOT_CHANNELS
             and pa.types.is_floating(data.schema.field(n).type)]
    if not chans:
        raise FeatureError(f"sensor chunk has no float channels (columns {names})")
    return chans


def _small_grey(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    size = (GREY_WIDTH, max(8, round(GREY_WIDTH * h / w)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _luma(frame: av.VideoFrame) -> np.ndarray:
    name = frame.format.name
    if name.startswith(("yuv", "yuvj", "nv12", "nv21", "gray")) and "p10" not in name \
            and "p12" not in name and "p16" not in name:
        p = frame.planes[0]
        return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
    return frame.to_ndarray(format="gray")


def container_grey(path: str, pts: np.ndarray, small=None) -> dict[int, np.ndarray]:
    """Low-resolution grey frames with these container pts (first video stream), by pts
    (``small``: what each decoded grey frame becomes, default ``_small_grey``)."""
    small = small or _small_grey
    want = set(int(p) for p in pts)
    lo, hi = min(want), max(want)
    out: dict[int, np.ndarray] = {}
    with av.open(path) as c:
        vs = c.streams.video[0]
        c.seek(lo, stream=vs, backward=True, any_frame=False)
        for frame in c.decode(vs):
            if frame.pts is None:
                continue
            if frame.pts in want:
                out[frame.pts] = small(_luma(frame))
            if frame.pts >= hi:
                break
        if lo not in out and len(out) < len(want):     # seek landed past it: from the start
            c.seek(0, stream=vs, backward=True, any_frame=False)
            for frame in c.decode(vs):
                if frame.pts is not None and frame.pts in want and frame.pts not in out:
                    out[frame.pts] = small(_luma(frame))
                if frame.pts is not None and frame.pts >= hi:
                    break
    return out


def video_grey(chunk: Chunk) -> tuple[np.ndarray, np.ndarray, int]:
    """(t_ns, [k, h, w] grey frames, frames that could not be loaded) of a video chunk: inline
    images, image-sequence files, or frames decoded from the container by pts."""
    t, frames, _, lost = video_frames(chunk, flow=False)
    return t, frames, lost


def video_frames(chunk: Chunk, flow: bool) -> tuple[np.ndarray, np.ndarray,
                                                    np.ndarray | None, int]:
    """``video_grey`` and, with ``flow``, the same frames at the optical flow's width."""
    d = chunk.data
    t = chunk.t_ns()
    names = d.schema.names
    imgs: list[np.ndarray | None] = []
    small = _both if flow else _small_grey
    if "image" in names and d.column("image").null_count == 0:
        for b in d.column("image").to_pylist():
            im = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE)
            imgs.append(None if im is None else small(im))
    elif "file" in names and d.column("file").null_count == 0:
        base = chunk.meta.get("image_dir") or os.path.dirname(chunk.source_uri)
        for f in d.column("file").to_pylist():
            im = cv2.imread(os.path.join(base, f), cv2.IMREAD_GRAYSCALE)
            imgs.append(None if im is None else small(im))
    else:
        if "pts" not in names or d.column("pts").null_count:
            raise FeatureError(f"{chunk.source_uri}: video rows carry neither images, files nor "
                               "container pts")
        pts = d.column("pts").to_numpy(zero_copy_only=False).astype(np.int64)
        try:
            got = container_grey(chunk.source_uri, pts, small)
        except (av.error.FFmpegError, OSError) as e:
            raise FeatureError(f"{chunk.source_uri}: cannot decode video for sync ({e})") \
                from None
        imgs = [got.get(int(p)) for p in pts]
    ok = np.array([im is not None for im in imgs], bool)
    if not ok.any():
        raise FeatureError(f"{chunk.source_uri}: none of the chunk's {len(imgs)} frames "
                           "could be loaded")
    good = [im for im in imgs if im is not None]
    grey = [g[0] for g in good] if flow else good
    if len({im.shape for im in grey}) > 1:
        raise FeatureError(f"{chunk.source_uri}: frame sizes differ within the chunk")
    fl = np.stack([g[1] for g in good]) if flow else None
    return t[ok], np.stack(grey), fl, int((~ok).sum())


def _both(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _small_grey(img), flow_frame(img)


@dataclass(frozen=True)
class AudioPart:
    """An audio chunk's power sums and, for the ``waveform`` family, its resampled samples."""
    bins: Binned
    wave: WavePart | None


def chunk_partial(chunk: Chunk, need: StreamNeed, rate_hz: float):
    """The additive summary of one chunk for one feature rate (see sync_features)."""
    d = chunk.data
    if d.num_rows == 0:
        return None
    t = chunk.t_ns()
    fams = need.families.get(rate_hz, frozenset())
    if need.modality == "audio":
        sr = chunk.meta.get("sample_rate")
        if not sr:
            raise FeatureError(f"{chunk.source_uri}: audio chunk meta has no sample_rate")
        blocks = _audio_blocks(d)
        bins = audio_bins(t, blocks, float(sr), rate_hz)
        if WAVE_FAMILY in fams:
            return AudioPart(bins, wave_part(t, blocks, float(sr)))
        return bins
    if need.modality == "sensor":
        chans = _sensor_channels(d, need.channels)
        vals = np.column_stack([d.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                for c in chans])
        return sensor_bins(t, vals, rate_hz, chans)
    if need.modality == "text":
        if "t_end_ns" not in d.schema.names:
            raise FeatureError(f"{chunk.source_uri}: text chunk has no t_end_ns column")
        text = (d.column("text").to_pylist() if "text" in d.schema.names
                else [""] * d.num_rows)
        return ("cues", t, d.column("t_end_ns").to_numpy(zero_copy_only=False),
                np.array([syllables(x or "") for x in text], np.float64))
    if need.modality == "video":
        tv, frames, flow, _ = video_frames(chunk, flow="signals" in fams)
        return motion_part(tv, frames, flow)
    raise FeatureError(f"unknown modality {need.modality!r}")


class ChunkPartialsFn(beam.DoFn):
    """Chunks of streams that take part in sync -> ((session, stream, rate), partial)."""

    def __init__(self, plans: dict[str, SessionSync]):
        self.plans = plans

    def process(self, chunk: Chunk):
        plan = self.plans.get(chunk.session_id)
        need = plan.needs.get(chunk.stream_id) if plan else None
        if need is None:
            return
        SYNC.count("chunks", modality=chunk.modality)
        for rate in need.families:
            key = (chunk.session_id, chunk.stream_id, rate)
            try:
                part = chunk_partial(chunk, need, rate)
            except FeatureError as e:
                SYNC.count("chunk_errors")
                part = ("error", f"chunk {chunk.seq} of {chunk.source_uri}: {e}")
            if part is not None:
                yield key, part


# ---------------------------------------------------------------- partials -> features


def stream_features(modality: str, rate_hz: float, families: frozenset[str],
                    parts: list) -> tuple[dict[str, Feature | str], list[str]]:
    """Merge a stream's partials into one feature per family (or the reason it failed); the
    second value lists chunk problems that were skipped."""
    errors = [p[1] for p in parts if isinstance(p, tuple) and p[0] == "error"]
    good = [p for p in parts if not (isinstance(p, tuple) and p[0] == "error")]
    out: dict[str, Feature | str] = {}
    try:
        if not good:
            raise FeatureError(errors[0] if errors else "the stream has no samples")
        if modality == "audio":
            b = merge_binned([p.bins if isinstance(p, AudioPart) else p for p in good])
            make = {"events": lambda: audio_onset(b, rate_hz),
                    "activity": lambda: speech_activity(b, rate_hz),
                    "signals": lambda: audio_signals(b, rate_hz),
                    WAVE_FAMILY: lambda: merge_wave([p.wave for p in good
                                                     if isinstance(p, AudioPart)])}
        elif modality == "sensor":
            b = merge_binned(good)
            mag = sensor_magnitude(b, rate_hz)
            make = {"events": lambda: mag, "activity": lambda: as_activity(mag),
                    "signals": lambda: sensor_signals(b, rate_hz)}
        elif modality == "video":
            parts_v = [p for p in good if isinstance(p, MotionPart)]
            mot = motion_energy(parts_v, rate_hz)
            make = {"events": lambda: mot, "activity": lambda: as_activity(mot),
                    "signals": lambda: video_signals(parts_v, rate_hz)}
        else:
            s = np.concatenate([p[1] for p in good])
            e = np.concatenate([p[2] for p in good])
            syl = np.concatenate([p[3] if len(p) > 3 else np.ones(len(p[1])) for p in good])
            act = text_activity(s, e, rate_hz)
            make = {"events": lambda: act, "activity": lambda: act,
                    "signals": lambda: text_signals(s, e, syl, rate_hz)}
        for fam in sorted(families):
            try:
                out[fam] = make[fam]()
            except FeatureError as e:
                out[fam] = str(e)
    except FeatureError as e:
        out = {fam: str(e) for fam in families}
    return out, errors


# ---------------------------------------------------------------- per session


def _order(specs: dict[str, SyncSpec]) -> tuple[list[str], set[str]]:
    """Sync streams with references first; the streams caught in reference cycles."""
    done: list[str] = []
    state: dict[str, int] = {}
    cyclic: set[str] = set()

    def visit(s: str, stack: list[str]):
        if state.get(s) == 2:
            return
        if state.get(s) == 1:
            cyclic.update(stack[stack.index(s):])
            return
        state[s] = 1
        ref = specs[s].reference
        if ref in specs:
            visit(ref, stack + [s])
        state[s] = 2
        done.append(s)

    for s in sorted(specs):
        visit(s, [s])
    return done, cyclic


def sync_session(plan: SessionSync, features: dict[tuple[str, float], dict],
                 warnings: dict[tuple[str, float], list[str]] | None = None,
                 stats: dict | None = None) -> list[SyncResult]:
    """One SyncResult per stream with ``sync``. ``features`` maps (stream, rate) to the
    family -> Feature (or failure reason) dict of ``stream_features``; ``stats``, when given,
    receives per stream what its confidence was computed from (fit.fit_stats)."""
    warnings = warnings or {}
    order, cyclic = _order(plan.specs)
    results: dict[str, SyncResult] = {}
    for sid in order:
        spec = plan.specs[sid]
        ref, fam, rate = spec.reference, plan.families[sid], float(spec.rate_hz)
        declared = plan.declared[sid]
        if sid in cyclic:
            results[sid] = failed(sid, ref, declared, "sync references form a cycle "
                                  f"through {sorted(cyclic)}; break it", spec.engine)
            continue
        ref_model = results[ref].model if ref in results else plan.declared[ref]
        mine = features.get((sid, rate), {}).get(fam, "the stream has no chunks")
        theirs = features.get((ref, rate), {}).get(fam, "the stream has no chunks")
        if isinstance(mine, str) or isinstance(theirs, str):
            why = f"stream {sid}: {mine}" if isinstance(mine, str) else \
                f"reference {ref}: {theirs}"
            results[sid] = failed(sid, ref, declared, why, spec.engine)
            continue
        some = next(iter(mine.values())) if isinstance(mine, dict) else mine
        t_mid = int(some.times_ns([len(some.values) / 2])[0])
        common = dict(engine=spec.engine, band_s=spec.band_s, max_offset_s=spec.max_offset_s,
                      prior_offset_ns=prior_offset_ns(declared, plan.declared[ref], t_mid),
                      max_drift=spec.max_drift_ppm * 1e-6, stream_id=sid, reference=ref,
                      stats=stats.setdefault(sid, {}) if stats is not None else None)
        try:
            if isinstance(mine, dict):
                mods = (plan.needs[sid].modality, plan.needs[ref].modality)
                waves = [features.get((x, rate), {}).get(WAVE_FAMILY) for x in (ref, sid)]
                waves = [w if isinstance(w, Feature) else None for w in waves]
                est = estimate_signals(theirs, mine, pairs_for(*mods), ref_wave=waves[0],
                                       dev_wave=waves[1], modalities=mods, **common)
            else:
                est = estimate_clock(theirs, mine, **common)
        except SyncError as e:
            results[sid] = failed(sid, ref, declared, str(e), spec.engine)
            continue
        results[sid] = finalize(est, ref_model, declared, spec.min_confidence)
    out = []
    for sid in sorted(results):
        r = results[sid]
        notes = tuple(warnings.get((sid, float(plan.specs[sid].rate_hz)), ()))
        out.append(dataclasses.replace(r, warnings=notes) if notes else r)
    return out


class _SessionFn(beam.DoFn):
    def __init__(self, plans: dict[str, SessionSync]):
        self.plans = plans

    def process(self, element):
        session, items = element
        plan = self.plans[session]
        feats, warns = {}, {}
        for item in items:
            if item is None:
                continue
            stream, rate, fmap, errors = item
            feats[(stream, rate)] = fmap
            warns[(stream, rate)] = errors
        for r in sync_session(plan, feats, warns):
            c = "fallback" if r.fell_back else "estimated"
            SYNC.count(c)
            yield session, r.stream_id, r


class EstimateClocks(beam.PTransform):
    """Validated chunks -> (session_id, stream_id, SyncResult) for every stream with ``sync``.

    ``declared`` maps stream id or (session, stream id) to the declared ClockModel (the
    fallback, and the prior for the coarse offset search)."""

    def __init__(self, manifest: Manifest | Sequence[Manifest], declared: dict):
        super().__init__()
        self.plans = sync_plans(manifest, declared)

    def expand(self, chunks):
        return (chunks
                | "Partials" >> beam.ParDo(ChunkPartialsFn(self.plans))
                | "FromPartials" >> EstimateFromPartials(self.plans))


def sync_plans(manifest: Manifest | Sequence[Manifest], declared: dict
               ) -> dict[str, SessionSync]:
    """session -> what its DTW-sync needs (``plan_sync``)."""
    manifests = [manifest] if isinstance(manifest, Manifest) else list(manifest)
    return {m.session: plan_sync(m, declared) for m in manifests}


class EstimateFromPartials(beam.PTransform):
    """The per-chunk feature partials (``ChunkPartialsFn``'s keyed output) -> (session_id,
    stream_id, SyncResult): the second half of ``EstimateClocks``, for a pipeline that made
    the partials elsewhere (the time-sliced backfill, pipelines/time_slices.py)."""

    def __init__(self, plans: dict[str, SessionSync]):
        super().__init__()
        self.plans = plans

    def expand(self, partials):
        plans = self.plans
        feats = (partials
                 | "GroupStream" >> beam.GroupByKey()
                 | "Features" >> beam.Map(_features_of, plans))
        seeds = (partials.pipeline
                 | "Sessions" >> beam.Create([(s, None) for s, p in plans.items() if p.specs]))
        return ((feats, seeds)
                | "Both" >> beam.Flatten()
                | "GroupSession" >> beam.GroupByKey()
                | "Estimate" >> beam.ParDo(_SessionFn(plans)))


def _features_of(element, plans: dict[str, SessionSync]):
    (session, stream, rate), parts = element
    need = plans[session].needs[stream]
    fmap, errors = stream_features(need.modality, rate, need.families[rate], list(parts))
    return session, (stream, rate, fmap, errors)


class WriteSyncResults(beam.PTransform):
    """(session, stream, SyncResult) -> OUT/sync/<s>/sync.json (one per session)."""

    def __init__(self, root: str):
        super().__init__()
        self.root = root

    def expand(self, results):
        root = self.root

        def write(session_id, items):
            return str(write_session_sync(root, session_id, dict(items)))

        return (results
                | "BySession" >> beam.MapTuple(lambda s, st, r: (s, (st, r)))
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(write))
