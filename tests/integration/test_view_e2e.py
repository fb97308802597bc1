"""``mmalign view`` and ``align-check --plot-sync`` end to end: a generated recording whose
clocks are not declared (the manifest asks for DTW-sync) through ``mmalign backfill``; the
.rrd is read back with Rerun's own chunk API (``rerun.chunk.RrdReader``), the sync PNGs'
figures are checked against sync.json."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.pipelines.align_check import main as align_check
from mmalign.pipelines.align_plot import sync_figure, sync_png_name
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.pipelines.sync_evidence import sync_pictures
from mmalign.schemas.aligned import STATUS, T_NS, TEXT, VALUE_STATUSES, column, stream_ids
from mmalign.schemas.layout import ALIGNED, DEADLETTER
from mmalign.schemas.manifest import load_manifest
from mmalign.schemas.sync import read_sync_results
from mmalign.transforms.io.parquet import read_aligned
from tests.cli import run_mmalign

rr = pytest.importorskip("rerun")           # the [viewer] extra (make test installs it)
pytestmark = pytest.mark.slow

MODALITY = {"cam0": "video", "cam1": "video", "cam0_audio": "audio", "mic": "audio",
            "transcript": "text", "imu": "sensor"}


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("view")
    manifest = generate_recording(tmp / "rec", seed=3, duration_s=20.0,
                                  declare_clocks=False, registration=True)
    out = tmp / "out"
    backfill.run([manifest], out)
    return {"tmp": tmp, "out": out, "manifest": manifest,
            "rows": read_aligned(out / ALIGNED),
            "letters": read_dead_letters(out / DEADLETTER).to_pylist(),
            "sync": read_sync_results(out)}


def read_rrd(path) -> dict[str, list[dict]]:
    """entity path -> its rows (column name -> value), temporal and static, via Rerun's API."""
    rows: dict[str, list[dict]] = {}
    for chunk in rr.chunk.RrdReader(path).stream():
        batch = chunk.to_record_batch()
        names = [n for n in batch.schema.names if "RowId" not in n]
        cols = {n: batch.column(n).to_pylist() for n in names}
        for k in range(batch.num_rows):
            rows.setdefault(chunk.entity_path, []).append({n: cols[n][k] for n in names})
    return rows


def ns(v) -> int:
    """A Rerun duration read back (pandas Timedelta or datetime.timedelta) as int ns."""
    return int(v.value) if hasattr(v, "value") else int(round(v.total_seconds() * 1e9))


def frame_times(rows: dict, entity: str) -> list[int]:
    return sorted(ns(r["ref_time"]) for r in rows.get(entity, []) if "ref_time" in r)


@pytest.fixture(scope="module")
def rrd_all_frames(synced):
    path = synced["tmp"] / "all.rrd"
    p = run_mmalign("view", synced["out"], "--rrd", path, "--fps", "0", "--width", "96")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "open it with: rerun" in p.stdout
    return read_rrd(path)


def test_every_stream_is_an_entity_with_status(synced, rrd_all_frames):
    streams = stream_ids(synced["rows"].column_names)
    assert sorted(streams) == sorted(MODALITY)
    for s in streams:
        assert f"/{MODALITY[s]}/{s}" in rrd_all_frames, s
        states = [r["StateChange:state"][0] for r in rrd_all_frames[f"/status/{s}"]
                  if r.get("StateChange:state")]
        assert states and set(states) <= {"ok", "partial", "gap", "no sample",
                                          "out of range", "no cue"}


def test_frame_times_on_the_reference_timeline_are_the_aligned_rows(synced, rrd_all_frames):
    rows = synced["rows"]
    for cam in ("cam0", "cam1"):
        ok = np.isin(np.asarray(rows.column(column(cam, STATUS)).to_pylist(), object),
                     VALUE_STATUSES)
        want = sorted(set(rows.column(column(cam, T_NS)).to_numpy(zero_copy_only=False)[ok]
                          .tolist()))
        assert frame_times(rrd_all_frames, f"/video/{cam}") == want, cam
        # each frame on its device clock too, through the model its times went through
        model = synced["sync"][f"demo-001/{cam}"].model if cam == "cam1" else None
        got = rrd_all_frames[f"/video/{cam}"]
        dev = "cam1_time" if cam == "cam1" else "cam0_time"
        for r in got[:5]:
            t = ns(r["ref_time"])
            expect = int(model.to_dev([t])[0]) if model else t
            assert abs(ns(r[dev]) - expect) <= 1
    # cam1 registered onto cam0: its frames warped into cam0's pixels, at cam1's times
    warped = frame_times(rrd_all_frames, "/registered/cam1")
    assert warped and set(warped) <= set(frame_times(rrd_all_frames, "/video/cam1"))
    for cam in ("cam0", "cam1"):
        got = rrd_all_frames[f"/video/{cam}"]
        blob = bytes(got[0]["EncodedImage:blob"][0])
        from PIL import Image

        assert Image.open(io.BytesIO(blob)).size[0] <= 96          # downscaled


def test_subtitles_and_dead_letter_reasons_are_present(synced, rrd_all_frames):
    texts = {t for t in synced["rows"].column(column("transcript", TEXT)).to_pylist() if t}
    assert texts
    logged = {r["TextLog:text"][0] for r in rrd_all_frames["/text/transcript"]
              if r.get("TextLog:text")}
    assert texts <= logged
    letters = synced["letters"]
    assert {d["reason"] for d in letters} >= {"corrupt_image", "non_numeric", "invalid_utf8"}
    entries = [r["TextLog:text"][0] for e, rs in rrd_all_frames.items()
               if e.startswith("/deadletters/") for r in rs if r.get("TextLog:text")]
    assert len(entries) == len(letters)
    for d in letters:
        assert any(f"{d['stage']}/{d['reason']}" in e for e in entries), d["reason"]
    ticks = synced["rows"].column("tick_ns").to_numpy()
    for d in letters:               # every letter on the timeline, within the recording
        placed = [ns(r["ref_time"]) for r in rrd_all_frames[f"/deadletters/{d['stream_id']}"]]
        assert all(ticks.min() - 10**9 <= t <= ticks.max() + 10**9 for t in placed)


def test_sync_evidence_is_logged_per_synced_stream(synced, rrd_all_frames):
    for key, r in synced["sync"].items():
        s = key.split("/")[1]
        parts = ["features/reference", "features/before", "features/after",
                 "offset_ms/inliers", "offset_ms/fitted_line", "residual_ms/inliers", "summary"]
        if r.evidence.path_dev_ns:          # pairs found along a DTW path (not subtitle marks)
            parts.append("offset_ms/dtw_path")
        for part in parts:
            assert f"/sync/{s}/{part}" in rrd_all_frames, (s, part)
        got = sorted(v["Scalars:scalars"][0] for v in rrd_all_frames[f"/sync/{s}/residual_ms"
                                                                        "/inliers"]
                     if v.get("Scalars:scalars"))
        e = r.evidence
        want = sorted(x for x, keep in zip(e.residual_ms, e.inlier) if keep)
        assert got == pytest.approx(want)


def test_default_subsampling_keeps_the_rrd_small(synced):
    path = synced["tmp"] / "default.rrd"
    p = run_mmalign("view", synced["out"], "--rrd", path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read_rrd(path)
    t = np.asarray(frame_times(rows, "/video/cam0"), np.int64)
    assert 30 <= t.size <= 41                       # 2 frames a second of a 20 s recording
    assert np.diff(t).min() >= 0.5e9 * 0.999
    assert path.stat().st_size < 3_000_000


def test_bad_input_exits_2(tmp_path, synced):
    p = run_mmalign("view", tmp_path / "nope", "--rrd", tmp_path / "x.rrd")
    assert p.returncode == 2 and "mmalign view:" in p.stderr
    p = run_mmalign("view", synced["out"], "--session", "nope", "--rrd", tmp_path / "x.rrd")
    assert p.returncode == 2 and "no aligned rows" in p.stderr
    assert not (tmp_path / "x.rrd").exists()
    p = run_mmalign("view", synced["out"])
    assert p.returncode == 2                        # --rrd or --serve is required


def test_plot_sync_draws_the_residuals_of_sync_json(synced, tmp_path):
    folder = tmp_path / "sync"
    assert align_check([str(synced["out"]), "--plot-sync", str(folder), "--no-expectations",
                        "--json"]) in (0, 1)
    pngs = sorted(p.name for p in folder.iterdir())
    assert pngs == sorted(sync_png_name("demo-001", k.split("/")[1]) for k in synced["sync"])
    from PIL import Image

    assert Image.open(folder / sync_png_name("demo-001", "imu")).size == (1400, 1000)
    # the figure behind the PNG: the residual points drawn are sync.json's, inliers and
    # outliers, at the landmark times; the curves come from the recording
    pics = {p.stream: p for p in sync_pictures(load_manifest(synced["manifest"]),
                                               {k.split("/")[1]: r
                                                for k, r in synced["sync"].items()})}
    for s in ("imu", "mic", "cam1"):
        r = synced["sync"][f"demo-001/{s}"]
        pic = pics[s]
        assert pic.stream_curve is not None and pic.reference_curve is not None, pic.note
        fig = sync_figure(pic)
        drawn = {a.get_gid(): a for ax in fig.axes for a in ax.get_lines() if a.get_gid()}
        e = r.evidence
        inl = np.asarray(e.inlier)
        assert inl.sum() == r.n_inliers
        x, y = drawn["residuals"].get_data()
        assert np.array_equal(y, np.asarray(e.residual_ms)[inl])
        assert np.allclose(x, np.asarray(e.pair_dev_ns)[inl] / 1e9)
        if (~inl).any():
            assert np.array_equal(drawn["residual_outliers"].get_data()[1],
                                  np.asarray(e.residual_ms)[~inl])
        # the legend quotes sync.json's residual rms / max
        legend = [t.get_text() for ax in fig.axes if ax.get_legend()
                  for t in ax.get_legend().get_texts()]
        assert any(f"rms {r.residual_rms_ms:.2f} ms" in t for t in legend)
        # after the fit, the stream's curve lines up with the reference's: the correlation
        # rises over the window the figure shows
        ref = pic.reference_curve
        before, after = pic.before(), pic.after()
        corr = [np.corrcoef(np.interp(ref.t_ns, t, v), ref.values)[0, 1]
                for t, v in (before, after)]
        assert corr[1] > corr[0] and corr[1] > 0.5, (s, corr)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_the_web_viewer_locally(synced):
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.cli import ROOT

    web, grpc = _free_port(), _free_port()
    p = subprocess.Popen([sys.executable, "-m", "mmalign.pipelines.cli", "view", str(synced["out"]),
                          "--serve", "--no-browser", "--web-port", str(web), "--grpc-port",
                          str(grpc), "--no-sync-curves"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()                 # printed once everything is logged
        assert f"http://localhost:{web}" in line, (line, p.poll())
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert "Rerun" in body
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
