"""align-check's pictures on hand-made inputs: the sync-evidence figure draws exactly the
evidence a SyncResult carries (and that evidence survives sync.json), the timeline lanes
(text cue spans, letters placed by position), one-line titles. End to end on a generated
recording: tests/integration/test_view_e2e.py."""

import json

import numpy as np
import pyarrow as pa
import pytest

from mmalign.pipelines.align_check import _distinct_used
from mmalign.pipelines.align_plot import Lane, _short, plot_sync, plot_timeline, sync_figure
from mmalign.pipelines.sync_evidence import Curve, SyncPicture
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.sync import SyncEvidence, SyncResult

pytest.importorskip("matplotlib")        # the [plot] extra


def _picture(with_curves: bool = True) -> SyncPicture:
    rng = np.random.default_rng(0)
    fit = ClockModel(250_000_000, 40e-6, 10_000_000_000, "estimated", 0.9)
    dev = np.sort(rng.uniform(1e9, 19e9, 24)).round().astype(np.int64)
    res = rng.normal(0, 2.0, dev.size)
    res[[3, 11]] = [45.0, -60.0]                       # two outliers
    inl = np.abs(res) < 10
    ref = (fit.to_ref(dev) + res * 1e6).round().astype(np.int64)
    path_dev = np.linspace(0.5e9, 19.5e9, 50).round().astype(np.int64)
    ev = SyncEvidence(tuple(int(x) for x in dev), tuple(int(x) for x in ref),
                      tuple(float(x) for x in res), tuple(bool(x) for x in inl),
                      tuple(int(x) for x in path_dev),
                      tuple(int(x) for x in fit.to_ref(path_dev)))
    r = SyncResult("imu", "cam0_audio", fit, 0.9, False, engine="banded",
                   features="sensor_magnitude~audio_onset", n_landmarks=dev.size,
                   n_inliers=int(inl.sum()),
                   residual_rms_ms=float(np.sqrt(np.mean(res[inl] ** 2))),
                   residual_max_ms=float(np.abs(res[inl]).max()), estimate=fit, evidence=ev)
    if not with_curves:
        return SyncPicture("demo-001", r, note="no recording to compute the curves from")
    t = np.arange(0, 20e9, 1e7)
    spikes = np.zeros(t.size)
    spikes[(np.asarray(ref) // 10_000_000).astype(int)] = 1.0
    mine = np.zeros(t.size)
    mine[(dev // 10_000_000).astype(int)] = 1.0
    return SyncPicture("demo-001", r, Curve(t, mine, "sensor_magnitude"),
                       Curve(t, spikes, "audio_onset"))


def test_sync_evidence_round_trips_through_sync_json():
    r = _picture().result
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    back = SyncResult.from_dict(d)
    assert back.evidence == r.evidence
    assert back.to_dict() == r.to_dict()
    assert SyncResult.from_dict({**d, "evidence": None}).evidence is None
    older = {k: v for k, v in d.items() if k != "evidence"}       # sync.json before evidence
    assert SyncResult.from_dict(older).evidence is None


@pytest.mark.parametrize("with_curves", [True, False])
def test_sync_figure_draws_the_results_evidence(with_curves):
    pic = _picture(with_curves)
    e = pic.evidence
    inl = np.asarray(e.inlier)
    fig = sync_figure(pic)
    lines = {a.get_gid(): a for ax in fig.axes for a in ax.get_lines() if a.get_gid()}
    x, y = lines["residuals"].get_data()
    assert np.array_equal(y, np.asarray(e.residual_ms)[inl])
    assert np.allclose(x * 1e9, np.asarray(e.pair_dev_ns)[inl])
    assert np.array_equal(lines["residual_outliers"].get_data()[1],
                          np.asarray(e.residual_ms)[~inl])
    # landmark offsets (ms) and the fitted line through them
    off = (np.asarray(e.pair_ref_ns) - np.asarray(e.pair_dev_ns)) / 1e6
    assert np.allclose(lines["pair_offsets"].get_data()[1], off[inl])
    lx, ly = lines["fitted_line"].get_data()
    assert np.allclose(ly, pic.line_offset_ms(np.asarray(lx) * 1e9))
    assert len(lines["dtw_path"].get_data()[0]) == len(e.path_dev_ns)
    title = fig._suptitle.get_text()
    assert "\n" not in title and "imu vs cam0_audio" in title and "confidence 0.90" in title
    if with_curves:                 # before: the raw device clock, after: mapped by the fit
        (tb, _), (ta, _) = pic.before(), pic.after()
        assert np.allclose(ta - tb, pic.line_offset_ms(tb) * 1e6)


def test_plot_sync_writes_one_png_per_stream(tmp_path):
    paths = plot_sync([_picture(), _picture(False)], str(tmp_path / "s"), size_px=(700, 500))
    assert len(paths) == 2 and len(set(paths)) == 1     # the same session/stream: one name
    from PIL import Image

    assert Image.open(paths[0]).size == (700, 500)


def test_short_titles_stay_on_one_line():
    long = "align-check output /" + "very/" * 60 + "deep/out"
    s = _short(long, 100)
    assert len(s) == 100 and "…" in s and s.startswith("align-check") and s.endswith("out")
    assert _short("a\nb", 10) == "a b"


def test_timeline_draws_text_as_cue_spans(tmp_path):
    cues = [(1_000_000_000, 2_000_000_000), (5_000_000_000, 7_500_000_000)]
    lanes = [Lane("s", "transcript", "text", np.asarray([a for a, _ in cues]), [],
                  spans=cues),
             Lane("s", "mic", "audio", np.arange(0, 8_000_000_000, 64_000_000), [],
                  marks=False)]
    out = plot_timeline(lanes, str(tmp_path / "t.png"), title="x" * 300)
    from PIL import Image

    assert Image.open(out).size == (1400, 800)


def test_distinct_used_counts_audio_samples_and_text_cues():
    t = pa.table({"mic__status": ["ok", "ok", "ok", "empty_window"],
                  "mic__sample_start": [0, 50, 300, None],
                  "mic__sample_end": [100, 150, 400, None],
                  "mic__src": ["a.wav"] * 4,
                  "tr__status": ["ok", "ok", "no_overlap", "ok"],
                  "tr__cues": [[0], [0, 1], [], [3]], "tr__src": ["t.srt"] * 4})
    assert _distinct_used(t, "mic") == 250          # [0, 150) and [300, 400)
    assert _distinct_used(t, "tr") == 3
