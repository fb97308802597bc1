"""Calibrate DTW-sync's confidence: correct fits above the threshold, wrong ones below.

    python benchmarks/bench_sync_confidence.py [--quick] [--json FILE] [--keep DIR]

Recordings are made here (tests/sync_media.py, tests/media.py), each estimated as the
backfill does (decode, validate, the sync stage's features and estimate, in this process):

- recorder: a speech scene's camera track (AAC in MP4) against a separate recorder derived
  from it (44.1/48 kHz, drift, offset, low-pass, noise), 60 s and 12 s;
- camera/gyro: a camera turning in front of a real photo (opencv-doc's graf1.png) against a
  gyro on its own clock (rotated axes, bias, noise);
- subtitles: touching cues from our forced alignment, shifted and stretched;
- events: the synthetic impacts recording (tests/media.py: clicks, pattern changes, IMU);
- smooth: two views of one smooth random signal.

Wrong fits come from the same kinds of pairs that do not belong together (a recorder, gyro or
subtitles of *another* recording; other events), and from correct pairs searched only where the
truth is not (``max_offset_s`` too small). A fit is correct when its largest error over the
stream is under 50 ms.

The confidence is a logistic function of the fit's statistics (transforms/clock/fit.py
``confidence``); this script fits its coefficients (logistic regression, a little L2) and
prints them, the ROC (share of correct fits accepted vs share of wrong fits accepted, by
threshold) and the cases. Paste the coefficients into ``CONF_COEF``; the README shows the ROC.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
import yaml
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # tests.* helpers (the repository's own)

from mmalign.schemas.manifest import load_manifest  # noqa: E402
from mmalign.transforms.clock import fit as clock_fit  # noqa: E402
from mmalign.transforms.clock.features import NS  # noqa: E402
from tests.media import write_srt  # noqa: E402
from tests.opencv_doc_data import opencv_doc_data  # noqa: E402
from tests.sync_media import (  # noqa: E402
    Clock,
    Motion,
    camera_mp4,
    features_in_process,
    forced_alignment,
    gyro_csv,
    recorder,
    render_rotation_video,
    speech_scene,
    sync_in_process,
)

CORRECT_MS = 50.0
W0 = clock_fit.CONF_COEF


def manifest(folder: Path, name: str, streams: list[dict]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"session": name, "streams": streams,
                                    "alignment": {"ticks": {"rate_hz": 10}}}))
    return path


def error_ms(result, dev_to_ref, t_dev_s: np.ndarray) -> float:
    """Largest |estimate - truth| over the stream's device times (s), ms."""
    model = result.estimate if result.estimate is not None else result.model
    got = model.to_ref(np.rint(t_dev_s * NS).astype(np.int64)) / NS
    return float(np.max(np.abs(got - dev_to_ref(t_dev_s)))) * 1e3


class Cases:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, family: str, label: str, m: Path, stream: str, truth, t_dev,
            feats: dict | None = None, only: set[str] | None = None) -> dict:
        man = load_manifest(m)
        if feats is None:
            feats = {}
        feats.update(features_in_process(man, only=only if feats else None))
        stats: dict = {}
        t = time.perf_counter()
        r = sync_in_process(man, features=feats, stats=stats)[stream]
        st = stats.get(stream) or {}
        err = error_ms(r, truth, t_dev) if truth is not None and r.estimate else float("inf")
        row = {"family": family, "case": label, "error_ms": err,
               "correct": bool(err < CORRECT_MS), "confidence": r.confidence,
               "fell_back": r.fell_back, "reason": r.reason[:80], "stats": st,
               "seconds": time.perf_counter() - t}
        self.rows.append(row)
        print(f"{family:10} {label:34} err {err:9.1f} ms  conf {r.confidence:.2f}  "
              f"{'correct' if row['correct'] else 'WRONG  '}  {st}", flush=True)
        return feats


def recorder_cases(cases: Cases, folder: Path, quick: bool) -> None:
    rng = np.random.default_rng(1)
    a = speech_scene(1, 80.0)
    b = speech_scene(2, 80.0)
    camera_mp4(folder / "camA.mp4", a.pcm, 48000, 3.2, 75.0)
    camera_mp4(folder / "camA12.mp4", a.pcm, 48000, 3.2, 12.0)
    cam = {"id": "cam_audio", "modality": "audio", "files": ["camA.mp4"]}
    cam12 = {"id": "cam_audio", "modality": "audio", "files": ["camA12.mp4"]}
    feats60 = feats12 = None
    n = 3 if quick else 6
    for k in range(n):
        for dur, camst in ((66.0, cam), (12.0, cam12)):
            if dur == 12.0 and k >= n // 2:
                continue
            sr = int(rng.choice([44100, 48000]))
            clk = Clock(float(rng.uniform(-3, 3)), float(rng.uniform(-300, 300)))
            src = b if k % 3 == 2 else a          # every third: another scene (wrong)
            y = recorder(src.pcm, 48000, 3.2, clk, sr, dur, alpha=rng.uniform(0.1, 0.6),
                         noise_db=rng.uniform(-55, -35), seed=k)
            wav = f"rec{k}_{int(dur)}.wav"
            sf.write(folder / wav, y, sr, subtype="PCM_16")
            for label, spec in (("", {}), (" max_offset 0.3", {"max_offset_s": 0.3})):
                if spec and abs(clk.offset_s) < 1.0:
                    continue
                m = manifest(folder, f"r{k}{int(dur)}{len(label)}", [camst, {
                    "id": "rec", "modality": "audio", "files": [wav],
                    "sync": {"reference": "cam_audio", **spec}}])
                name = f"{int(dur)} s {sr} Hz {clk.drift_ppm:+.0f} ppm {clk.offset_s:+.1f} s" + \
                    (" other scene" if src is b else "") + label
                truth = clk.ref if src is a else None
                f = feats60 if dur > 20 else feats12
                f = cases.add("recorder", name, m, "rec", truth,
                              np.linspace(0.5, dur - 0.5, 40), feats=dict(f) if f else None,
                              only={"rec"})
                if dur > 20 and feats60 is None:
                    feats60 = {k2: v for k2, v in f.items() if k2[0] == "cam_audio"}
                if dur < 20 and feats12 is None:
                    feats12 = {k2: v for k2, v in f.items() if k2[0] == "cam_audio"}


def camera_cases(cases: Cases, folder: Path, quick: bool) -> None:
    photo = cv2.imread(str(opencv_doc_data() / "graf1.png"))
    dur = 45.0
    mot, other = Motion.random(1), Motion.random(2)
    render_rotation_video(folder / "rot.mp4", photo, mot, 30.0, dur)
    rng = np.random.default_rng(2)
    cam = {"id": "cam", "modality": "video", "files": ["rot.mp4"]}
    feats = None
    for k in range(3 if quick else 6):
        clk = Clock(float(rng.uniform(-3, 3)), float(rng.uniform(-2000, 2000)))
        src = other if k % 3 == 2 else mot
        csv = f"gyro{k}.csv"
        gyro_csv(folder / csv, src, clk, float(rng.choice([100.0, 200.0, 400.0])),
                 clk.dev(-4.0), dur + 8.0, seed=k)
        for label, spec in (("", {}), (" max_offset 0.3", {"max_offset_s": 0.3})):
            if spec and abs(clk.offset_s) < 1.0:
                continue
            m = manifest(folder, f"g{k}{len(label)}", [cam, {
                "id": "imu", "modality": "sensor", "files": [csv],
                "options": {"time_column": "t_ns", "time_unit": "ns"},
                "sync": {"reference": "cam", **spec}}])
            name = f"gyro {clk.drift_ppm:+.0f} ppm {clk.offset_s:+.1f} s" + \
                (" other motion" if src is other else "") + label
            f = cases.add("camera", name, m, "imu", clk.ref if src is mot else None,
                          clk.dev(np.linspace(0.5, dur - 0.5, 40)),
                          feats=dict(feats) if feats else None, only={"imu"})
            if feats is None:
                feats = {k2: v for k2, v in f.items() if k2[0] == "cam"}


def subtitle_cases(cases: Cases, folder: Path, quick: bool) -> None:
    a = speech_scene(3, 90.0, sr=16000, sound_every_s=15.0, floor_db=-55.0, lead_s=6.0)
    b = speech_scene(4, 90.0, sr=16000, sound_every_s=15.0, floor_db=-55.0, lead_s=6.0)
    sf.write(folder / "speech.wav", a.pcm, 16000, subtype="PCM_16")
    cues = {"a": forced_alignment(a), "b": forced_alignment(b)}
    rng = np.random.default_rng(3)
    feats = None
    audio = {"id": "audio", "modality": "audio", "files": ["speech.wav"]}
    for k in range(3 if quick else 6):
        ratio = float(rng.choice([1.0, 1.001, 25 / 23.976, 0.96]))
        off = float(rng.uniform(-5, 5))
        which = "b" if k % 3 == 2 else "a"
        sub = [((s - off) / ratio, (e - off) / ratio, t) for s, e, t in cues[which]]
        sub = [c for c in sub if c[0] >= 0]
        srt = f"subs{k}.srt"
        write_srt(folder / srt, [(round(s * 1000), round(e * 1000), t) for s, e, t in sub])
        for label, spec in (("", {}), (" max_offset 0.3", {"max_offset_s": 0.3})):
            if spec and abs(off) < 1.0:
                continue
            m = manifest(folder, f"s{k}{len(label)}", [audio, {
                "id": "subs", "modality": "text", "files": [srt],
                "sync": {"reference": "audio", **spec}}])
            name = f"ratio {ratio:.4f} {off:+.1f} s" + (" other text" if which == "b" else "") \
                + label
            t_sub = np.array([c[0] for c in sub])
            f = cases.add("subtitles", name, m, "subs",
                          (lambda t, off=off, ratio=ratio: off + ratio * t)
                          if which == "a" else None, t_sub,
                          feats=dict(feats) if feats else None, only={"subs"})
            if feats is None:
                feats = {k2: v for k2, v in f.items() if k2[0] == "audio"}


def events_cases(cases: Cases, folder: Path, quick: bool) -> None:
    from tests.media import Clock as EvClock
    from tests.media import make_audio, make_events, make_imu
    for k in range(2 if quick else 4):
        dur = 40.0
        ev = make_events(60 + k, duration_s=dur, n=28)
        other = make_events(90 + k, duration_s=dur, n=28)
        ca = EvClock(0.0, 0.0)
        ci = EvClock(float(np.random.default_rng(k).uniform(-3, 3)), 150.0 * (k - 1))
        t0, pcm = make_audio(folder / f"ev{k}.wav", ev, ca, 100.0, dur, seed=k)
        for wrong in (False, True):
            t_ns, acc = make_imu(other if wrong else ev, ci, 100.0, dur, seed=k)
            csv = folder / f"imu{k}{int(wrong)}.csv"
            csv.write_text("t_ns,ax,ay,az\n" + "".join(
                f"{a},{x:.5f},{y:.5f},{z:.5f}\n" for a, (x, y, z) in zip(t_ns, acc)))
            m = manifest(folder, f"e{k}{int(wrong)}", [
                {"id": "mic", "modality": "audio", "files": [{"path": f"ev{k}.wav",
                                                             "start_ns": round(t0 * NS)}]},
                {"id": "imu", "modality": "sensor", "files": [csv.name],
                 "options": {"time_column": "t_ns", "time_unit": "ns"},
                 "sync": {"reference": "mic"}}])
            cases.add("events", f"imu~mic {ci.offset_s:+.1f} s" + (" other events" * wrong),
                      m, "imu", None if wrong else (lambda t, ci=ci: ci.true(t)),
                      t_ns[::50] / NS)


def fit_logistic(rows: list[dict]) -> np.ndarray:
    X = np.array([[1.0, r["stats"]["consistency"], r["stats"]["quality"],
                   np.log1p(r["stats"]["n_inliers"]), r["stats"]["margin"],
                   min(1.0, r["stats"]["spread"])] for r in rows])
    y = np.array([r["correct"] for r in rows], float)
    w0 = np.array(clock_fit.CONF_COEF, float)

    def loss(w):
        z = X @ w
        return np.sum(np.logaddexp(0, z) - y * z) + 0.05 * np.sum(w[1:] ** 2)

    return minimize(loss, w0, method="BFGS").x


def roc(rows: list[dict], conf: np.ndarray) -> list[tuple[float, float, float]]:
    y = np.array([r["correct"] for r in rows])
    out = []
    for th in (0.1, 0.3, 0.5, 0.7, 0.9):
        acc = conf >= th
        out.append((th, float(acc[y].mean()) if y.any() else float("nan"),
                    float(acc[~y].mean()) if (~y).any() else float("nan")))
    return out


def auc(rows: list[dict], conf: np.ndarray) -> float:
    """Area under the ROC: the chance that a correct fit scores above a wrong one (ties half)."""
    y = np.array([r["correct"] for r in rows])
    pos, neg = conf[y], conf[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path)
    a = ap.parse_args(argv)
    folder = a.keep or Path(tempfile.mkdtemp(prefix="bench_sync_conf_"))
    folder.mkdir(parents=True, exist_ok=True)
    cases = Cases()
    for make in (events_cases, subtitle_cases, recorder_cases, camera_cases):
        make(cases, folder, a.quick)
    rows = [r for r in cases.rows if r["stats"]]
    no_fit = [r for r in cases.rows if not r["stats"]]
    w = fit_logistic(rows)
    # out of sample: each case scored by coefficients fitted without its fold (5 folds)
    folds = np.arange(len(rows)) % 5
    held = np.zeros(len(rows))
    for f in range(5):
        wf = fit_logistic([r for r, g in zip(rows, folds) if g != f])
        X = [r for r, g in zip(rows, folds) if g == f]
        clock_fit.CONF_COEF = tuple(wf)
        held[folds == f] = [clock_fit.confidence(r["stats"]) for r in X]
    clock_fit.CONF_COEF = W0
    print("\nfitted CONF_COEF = (" + ", ".join(f"{v:.2f}" for v in w) + ")")
    old = np.array([clock_fit.confidence(r["stats"]) for r in rows])
    clock_fit.CONF_COEF = tuple(w)
    new = np.array([clock_fit.confidence(r["stats"]) for r in rows])
    y = np.array([r["correct"] for r in rows])
    print(f"{len(cases.rows)} cases: {int(y.sum())} correct fits, {int((~y).sum())} wrong fits, "
          f"{len(no_fit)} without a fit (SyncError: fall back)")
    for name, conf in (("current coefficients", old), ("fitted coefficients", new),
                       ("fitted coefficients, 5-fold held out", held)):
        print(f"\n{name} (AUC {auc(rows, conf):.3f}):\n"
              "| threshold | correct fits accepted | wrong fits accepted |\n|---|---|---|")
        for th, tpr, fpr in roc(rows, conf):
            print(f"| {th:.1f} | {tpr:.0%} | {fpr:.0%} |")
    print("\nper family at 0.5 (fitted): correct accepted / wrong accepted")
    for fam in sorted({r["family"] for r in rows}):
        m = np.array([r["family"] == fam for r in rows])
        print(f"  {fam:10} {np.sum(new[m & y] >= 0.5)}/{np.sum(m & y)}  "
              f"{np.sum(new[m & ~y] >= 0.5)}/{np.sum(m & ~y)}")
    if a.json:
        a.json.write_text(json.dumps({"coef": list(w), "cases": cases.rows}, indent=1,
                                     default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
