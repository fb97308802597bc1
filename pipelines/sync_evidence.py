"""The evidence behind each DTW-sync estimate, ready to draw: ``SyncPicture``.

A stream whose clock was estimated (a ``sync:`` spec) has a ``SyncResult`` (sync.json) that
carries the fit's landmark pairs, their residuals, inlier flags and a subsample of the DTW
path (``SyncEvidence``). The two feature curves the fit compared are not stored (100 values a
second per stream): they are computed again here from the recording, with the clock module's
own feature functions (``chunk_partial`` -> ``stream_features`` -> ``condition``), on the
validated chunks of the streams involved, as the sync stage did.

    pictures = sync_pictures(manifest, results)      # one per synced stream
    picture.before()  / picture.after()               # the stream's curve before / after the fit

Both align-check ``--plot-sync`` (pipelines/align_plot.py, PNG) and ``mmalign view``
(pipelines/view.py, Rerun) draw these pictures.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from mmalign.schemas.clock import ClockModel
from mmalign.schemas.manifest import Manifest
from mmalign.schemas.sync import SyncEvidence, SyncResult
from mmalign.transforms.clock.features import Feature, FeatureError, condition, default_family
from mmalign.transforms.clock.sync import StreamNeed, chunk_partial, stream_features
from mmalign.transforms.decode.sources import valid_chunks

DEFAULT_RATE_HZ = 100.0      # align-check's check-only estimates use SyncSpec's default rate


@dataclass(frozen=True)
class Curve:
    """A conditioned sync feature (what DTW compared, in [0, 1]) on its device clock."""
    t_ns: np.ndarray        # float64 device times of the grid points
    values: np.ndarray
    name: str

    @classmethod
    def of(cls, f: Feature) -> Curve:
        dtw_input, _, _ = condition(f)
        return cls(f.times_ns(), dtw_input, f.name)


@dataclass(frozen=True)
class SyncPicture:
    """One synced stream: its result, and the two feature curves when they could be made.

    Times: the stream's curve and ``evidence.pair_dev_ns`` on the stream's device clock; the
    reference's curve and ``evidence.pair_ref_ns`` on the *reference stream's* device clock.
    ``fit`` (the estimate) maps the first onto the second; ``result.model`` maps the stream
    onto the session's reference clock (the estimate composed with the reference's model)."""
    session: str
    result: SyncResult
    stream_curve: Curve | None = None
    reference_curve: Curve | None = None
    note: str = ""                       # why the curves are missing

    @property
    def stream(self) -> str:
        return self.result.stream_id

    @property
    def reference(self) -> str:
        return self.result.reference

    @property
    def fit(self) -> ClockModel | None:
        """The fitted line (stream device -> reference device), also when it was not used."""
        return self.result.estimate

    @property
    def evidence(self) -> SyncEvidence:
        return self.result.evidence or SyncEvidence()

    def before(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(times, values) of the stream's curve as its device clock reads (no model)."""
        c = self.stream_curve
        return None if c is None else (c.t_ns, c.values)

    def after(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(times, values) of the stream's curve on the reference's device clock (the fit)."""
        c = self.stream_curve
        if c is None or self.fit is None:
            return None
        return _to_ref(self.fit, c.t_ns), c.values

    def line_offset_ms(self, t_dev_ns) -> np.ndarray:
        """The fitted line, (t_ref - t_dev) in ms, at stream device times."""
        t = np.asarray(t_dev_ns, np.float64)
        if self.fit is None:
            return np.full(t.shape, np.nan)
        return (_to_ref(self.fit, t) - t) / 1e6

    def pair_offsets_ms(self) -> np.ndarray:
        """(t_ref - t_dev) of each landmark pair, ms."""
        e = self.evidence
        return (np.asarray(e.pair_ref_ns, np.float64) - np.asarray(e.pair_dev_ns, np.float64)
                ) / 1e6

    def path_offsets_ms(self) -> np.ndarray:
        e = self.evidence
        return (np.asarray(e.path_ref_ns, np.float64) - np.asarray(e.path_dev_ns, np.float64)
                ) / 1e6


def _to_ref(model: ClockModel, t_ns) -> np.ndarray:
    """``model`` on float times (sub-ns curve grids): ``t + offset + drift * (t - anchor)``."""
    t = np.asarray(t_ns, np.float64)
    return t + model.offset_ns + model.drift * (t - model.anchor_ns)


def stream_curves(manifest: Manifest, wanted: dict[str, set[tuple[float, str]]]
                  ) -> dict[tuple[str, float, str], Curve | str]:
    """Conditioned feature of each stream, rate and family in ``wanted`` (stream id ->
    {(rate Hz, family)}), or the reason it could not be made, keyed (stream, rate, family):
    every file decoded and validated as the pipeline does, then the sync stage's own feature
    functions."""
    mods = {s.id: s for s in manifest.streams}
    needs = {}
    for sid, want in wanted.items():
        s = mods.get(sid)
        if s is None:
            continue
        fams: dict[float, set[str]] = defaultdict(set)
        for rate, fam in want:
            fams[rate].add(fam)
        chans = tuple(s.sync.channels) if s.sync is not None else ()
        needs[sid] = StreamNeed(s.modality, chans, {r: frozenset(f) for r, f in fams.items()})
    parts: dict[tuple[str, float], list] = defaultdict(list)
    for req, good in valid_chunks(manifest, set(needs)):
        need = needs[req.stream.id]
        for rate in need.families:
            try:
                part = chunk_partial(good, need, rate)
            except FeatureError as e:
                part = ("error", str(e))
            if part is not None:
                parts[(req.stream.id, rate)].append(part)
    out: dict[tuple[str, float, str], Curve | str] = {}
    for sid, want in wanted.items():
        for rate, fam in want:
            if sid not in needs:
                out[(sid, rate, fam)] = f"the manifest has no stream {sid}"
                continue
            fmap, _ = stream_features(mods[sid].modality, rate, frozenset({fam}),
                                      parts[(sid, rate)])
            f = fmap[fam]
            out[(sid, rate, fam)] = f if isinstance(f, str) else Curve.of(f)
    return out


def sync_pictures(manifest: Manifest | None, results: dict[str, SyncResult],
                  session: str = "", curves: bool = True) -> list[SyncPicture]:
    """One picture per result (stream id -> SyncResult) of one session; the curves are made
    from ``manifest``'s recording (None, or ``curves=False``: pictures without curves)."""
    if manifest is not None:
        session = manifest.session
    if not results:
        return []
    made: dict[tuple[str, float, str], Curve | str] = {}
    keys: dict[str, tuple[float, str]] = {}
    if manifest is not None and curves:
        mods = {s.id: s for s in manifest.streams}
        wanted: dict[str, set[tuple[float, str]]] = defaultdict(set)
        for sid, r in results.items():
            s, ref = mods.get(sid), mods.get(r.reference)
            if s is None or ref is None:
                continue
            spec = s.sync
            rate = float(spec.rate_hz) if spec is not None else DEFAULT_RATE_HZ
            fam = (spec.features if spec is not None and spec.features else
                   default_family(s.modality, ref.modality))
            keys[sid] = (rate, fam)
            wanted[sid].add((rate, fam))
            wanted[r.reference].add((rate, fam))
        made = stream_curves(manifest, wanted)
    out = []
    for sid in sorted(results):
        r = results[sid]
        key = keys.get(sid)
        mine = made.get((sid, *key)) if key else None
        theirs = made.get((r.reference, *key)) if key else None
        note = ("" if manifest is not None and curves else
                "no recording to compute the feature curves from")
        if manifest is not None and curves and key is None:
            note = f"the manifest has no stream {sid} or {r.reference}"
        if isinstance(mine, str):
            note, mine = f"stream {sid}: {mine}", None
        if isinstance(theirs, str):
            note, theirs = f"reference {r.reference}: {theirs}", None
        out.append(SyncPicture(session, r, mine, theirs, note))
    return out
