"""Subtitles against real speech: mmalign's DTW-sync side by side with ffsubsync.

    python benchmarks/bench_sync_real.py [--quick] [--json FILE] [--keep DIR]

Speech is made here: several paragraphs spoken by espeak-ng (different voices, speeds,
pitches, pauses between paragraphs) over a quiet noise floor with a few sox sounds, after 6 s
of room tone. The subtitles come from our own forced alignment of that text
(tests/sync_media.py ``forced_alignment``: espeak-ng templates per cue aligned by DTW on
MFCCs, the aeneas method), so cues touch: every cue ends where the next begins. The subtitle
file is then put on another clock, ``t_audio = offset + ratio * t_subtitle``, for offsets in
[-5, 5] s and rate ratios 1, 1.001, 25/23.976 and 0.96, and both tools recover it:

- mmalign: the backfill's sync kernels in this process (decode, validate, the sync stage's
  features and estimate; tests/sync_media.py ``sync_in_process``): the subtitle stream with
  ``sync: {reference: audio}``, defaults otherwise;
- ffsubsync (the [bench] extra) with its defaults (it tries the common frame-rate ratios), and
  with ``--gss`` (golden-section search of the ratio).

Error of a case: the median over cues of |corrected cue start - true cue start| (ms), the
true start being the forced alignment's. ``best ffs`` is the better ffsubsync run per case.
ffsubsync is not a dependency of mmalign: when its ``ffsubsync`` script is not beside this
Python, its columns say n/a.

Two more tables (``--part``), mmalign alone:

- camera: a camera turning smoothly in front of a real photo (opencv-doc's graf1.png; no
  impacts) rendered to H.264 at 30 fps, against a gyro (200 Hz, rotated axes, bias, noise) on
  its own clock, offsets within +-3 s and drifts within +-2000 ppm: offset error (largest over
  the take, ms and frames) and drift error;
- recorder: a separate audio recorder (44.1/48 kHz, drift, offset, low-pass, noise) against
  a camera's AAC track of espeak-ng speech, 60 s and a 12 s clip (issue 19).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # tests.* helpers (the repository's own)

from mmalign.schemas.manifest import load_manifest  # noqa: E402
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

NS = 1_000_000_000
RATIOS = {"1": 1.0, "1.001": 1.001, "25/23.976": 25 / 23.976, "0.96": 0.96}
OFFSETS = (-5.0, -2.7, 0.45, 3.3, 5.0)
SR = 16000


def read_srt(path: Path) -> list[tuple[float, str]]:
    """(start s, text) of an SRT file's cues, in file order."""
    out = []
    for m in re.finditer(r"(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->[^\n]*\n(.*?)(?:\n\s*\n|\Z)",
                         path.read_text(), re.S):
        h, mi, s, ms = (int(g) for g in m.groups()[:4])
        out.append((h * 3600 + mi * 60 + s + ms / 1000, m.group(5).strip()))
    return out


def match_cues(got: list[tuple[float, str]], texts: list[str]) -> np.ndarray:
    """Start of each of ``texts`` in ``got`` (a tool's output, which may skip cues), matched
    in order by text; NaN where a cue is missing."""
    out = np.full(len(texts), np.nan)
    j = 0
    for t, txt in got:
        k = j
        while k < len(texts) and texts[k] != txt:
            k += 1
        if k < len(texts):
            out[k], j = t, k + 1
    return out


def run_ffsubsync(wav: Path, srt: Path, out: Path, extra: list[str]
                  ) -> tuple[list[tuple[float, str]], float]:
    t = time.perf_counter()
    exe = Path(sys.executable).with_name("ffsubsync")     # installed beside this Python
    if not exe.exists():
        return [], float("nan")
    p = subprocess.run([str(exe), str(wav), "-i", str(srt), "-o", str(out), *extra],
                       capture_output=True, text=True, timeout=600)
    el = time.perf_counter() - t
    if p.returncode != 0 or not out.exists():
        return [], el
    return read_srt(out), el


def run_mmalign(folder: Path, srt: Path) -> tuple[object, float]:
    m = {"session": "bench", "streams": [
        {"id": "audio", "modality": "audio", "files": ["speech.wav"]},
        {"id": "subs", "modality": "text", "files": [srt.name],
         "sync": {"reference": "audio"}}],
        "alignment": {"ticks": {"rate_hz": 10}}}
    (folder / "m.yaml").write_text(yaml.safe_dump(m))
    t = time.perf_counter()
    r = sync_in_process(load_manifest(folder / "m.yaml"))["subs"]
    return r, time.perf_counter() - t


def subtitles(a, folder: Path) -> list[dict]:
    dur = 90.0 if a.quick else 200.0
    t0 = time.perf_counter()
    scene = speech_scene(a.seed, dur, sr=SR, sound_every_s=15.0, floor_db=-55.0, lead_s=6.0)
    sf.write(folder / "speech.wav", scene.pcm, SR, subtype="PCM_16")
    cues = forced_alignment(scene)
    print(f"{dur:.0f} s of speech, {len(scene.speech)} paragraphs, {len(cues)} touching cues "
          f"(made in {time.perf_counter() - t0:.0f} s)", flush=True)
    true = np.array([c[0] for c in cues])
    offsets = OFFSETS[::2] if a.quick else OFFSETS
    rows = []
    for rname, ratio in RATIOS.items():
        for off in offsets:
            sub = [((s - off) / ratio, (e - off) / ratio, txt) for s, e, txt in cues]
            keep = [k for k, c in enumerate(sub) if c[0] >= 0]
            srt = folder / f"subs_{rname.replace('/', '_')}_{off:+.2f}.srt"
            write_srt(srt, [(round(sub[k][0] * 1000), round(sub[k][1] * 1000), sub[k][2])
                            for k in keep])
            truth = true[keep]
            r, t_mm = run_mmalign(folder, srt)
            starts = np.array([round(sub[k][0] * 1000) * 1_000_000 for k in keep], np.int64)
            mm = np.abs(r.model.to_ref(starts) / NS - truth) * 1e3
            row = {"ratio": rname, "offset_s": off, "cues": len(keep),
                   "mmalign_ms": float(np.median(mm)), "mmalign_max_ms": float(np.max(mm)),
                   "mmalign_fell_back": bool(r.fell_back), "confidence": float(r.confidence),
                   "drift_ppm": r.model.drift_ppm, "true_drift_ppm": (ratio - 1) * 1e6,
                   "mmalign_s": t_mm}
            for name, extra in (("ffs", []), ("ffs_gss", ["--gss"])):
                got, t_f = run_ffsubsync(folder / "speech.wav", srt, folder / f"out_{name}.srt",
                                         extra)
                at = match_cues(got, [sub[k][2] for k in keep])
                if np.isfinite(at).sum() >= len(keep) // 2:     # skipped cues: not counted
                    e = np.abs(at - truth)[np.isfinite(at)] * 1e3
                    row[f"{name}_ms"], row[f"{name}_max_ms"] = float(np.median(e)), float(e.max())
                else:
                    row[f"{name}_ms"] = row[f"{name}_max_ms"] = float("nan")
                row[f"{name}_cues"] = int(np.isfinite(at).sum())
                row[f"{name}_s"] = t_f
            row["best_ffs_ms"] = float(np.fmin(row["ffs_ms"], row["ffs_gss_ms"]))
            rows.append(row)
            print(f"ratio {rname:>9} offset {off:+5.2f} s: mmalign {row['mmalign_ms']:7.1f} ms "
                  f"(max {row['mmalign_max_ms']:6.1f}, conf {r.confidence:.2f}"
                  f"{', FELL BACK' if r.fell_back else ''})  ffsubsync {row['ffs_ms']:7.1f} ms"
                  f"  --gss {row['ffs_gss_ms']:7.1f} ms", flush=True)
    print()
    print("| rate ratio | offset (s) | mmalign median error | ffsubsync | ffsubsync --gss |"
          " mmalign fell back |")
    print("|---|---|---|---|---|---|")
    for w in rows:
        print(f"| {w['ratio']} | {w['offset_s']:+.2f} | {w['mmalign_ms']:.1f} ms | "
              f"{w['ffs_ms']:.1f} ms | {w['ffs_gss_ms']:.1f} ms | "
              f"{'yes' if w['mmalign_fell_back'] else 'no'} |")
    mm = np.array([w["mmalign_ms"] for w in rows])
    best = np.array([w["best_ffs_ms"] for w in rows])
    worse = int(np.sum(~(mm <= np.nan_to_num(best, nan=np.inf))))
    print(f"\nmedian over cases: mmalign {np.median(mm):.1f} ms, ffsubsync "
          f"{np.nanmedian([w['ffs_ms'] for w in rows]):.1f} ms, --gss "
          f"{np.nanmedian([w['ffs_gss_ms'] for w in rows]):.1f} ms; mmalign worse than the "
          f"better ffsubsync run in {worse} of {len(rows)} cases; fell back in "
          f"{sum(w['mmalign_fell_back'] for w in rows)}")
    return rows


def manifest(folder: Path, name: str, streams: list[dict]):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"session": name, "streams": streams,
                                    "alignment": {"ticks": {"rate_hz": 10}}}))
    return load_manifest(path)


def max_error_ms(model, clock: Clock, t_dev_s: np.ndarray) -> float:
    got = model.to_ref(np.rint(t_dev_s * NS).astype(np.int64)) / NS
    return float(np.max(np.abs(got - clock.ref(t_dev_s)))) * 1e3


def camera(a, folder: Path) -> list[dict]:
    import cv2
    photo = cv2.imread(str(opencv_doc_data() / "graf1.png"))
    dur, fps = (30.0, 30.0) if a.quick else (60.0, 30.0)
    mot = Motion.random(a.seed)
    render_rotation_video(folder / "rot.mp4", photo, mot, fps, dur)
    rng = np.random.default_rng(a.seed)
    n = 4 if a.quick else 8
    clocks = [Clock(float(rng.uniform(-3, 3)), float(d))
              for d in np.r_[[-2000.0, 2000.0], rng.uniform(-2000, 2000, n - 2)]]
    streams = [{"id": "cam", "modality": "video", "files": ["rot.mp4"]}]
    for k, clk in enumerate(clocks):
        gyro_csv(folder / f"gyro{k}.csv", mot, clk, 200.0, clk.dev(-4.0), dur + 8.0, seed=k)
        streams.append({"id": f"imu{k}", "modality": "sensor", "files": [f"gyro{k}.csv"],
                        "options": {"time_column": "t_ns", "time_unit": "ns"},
                        "sync": {"reference": "cam"}})
    man = manifest(folder, "camera", streams)
    t = time.perf_counter()
    res = sync_in_process(man)
    el = time.perf_counter() - t
    rows = []
    print(f"\ncamera turning in front of graf1.png, {dur:.0f} s at {fps:.0f} fps; gyro 200 Hz "
          f"(sync of {len(clocks)} gyros: {el:.0f} s)\n")
    print("| gyro clock | offset error | in frames | drift error | confidence | fell back |")
    print("|---|---|---|---|---|---|")
    for k, clk in enumerate(clocks):
        r = res[f"imu{k}"]
        model = r.estimate if r.estimate is not None else r.model
        e = max_error_ms(model, clk, clk.dev(np.linspace(0.5, dur - 0.5, 60)))
        row = {"offset_s": clk.offset_s, "drift_ppm": clk.drift_ppm, "error_ms": e,
               "drift_error_ppm": model.drift_ppm - clk.drift_ppm,
               "confidence": r.confidence, "fell_back": r.fell_back}
        rows.append(row)
        print(f"| {clk.offset_s:+.2f} s, {clk.drift_ppm:+.0f} ppm | {e:.1f} ms | "
              f"{e * fps / 1e3:.2f} | {row['drift_error_ppm']:+.1f} ppm | "
              f"{r.confidence:.2f} | {'yes' if r.fell_back else 'no'} |")
    return rows


def recorders(a, folder: Path) -> list[dict]:
    scene = speech_scene(1, 80.0)
    rng = np.random.default_rng(a.seed)
    rows = []
    for dur in (64.0, 12.0):
        camera_mp4(folder / f"cam{int(dur)}.mp4", scene.pcm, 48000, 3.2, dur + 8.0)
        streams = [{"id": "cam_audio", "modality": "audio", "files": [f"cam{int(dur)}.mp4"]}]
        cases = []
        for k, (ppm, off) in enumerate([(p, o) for p in (-200, -50, 80, 200)
                                        for o in (-3.0, 0.4, 2.5)]):
            if a.quick and k % 3:
                continue
            sr = 44100 if k % 2 else 48000
            clk = Clock(off, ppm)
            y = recorder(scene.pcm, 48000, 3.2, clk, sr, dur, alpha=rng.uniform(0.15, 0.7),
                         noise_db=rng.uniform(-55, -35), seed=k)
            name = f"rec{int(dur)}_{k}"
            sf.write(folder / f"{name}.wav", y, sr, subtype="PCM_16")
            streams.append({"id": name, "modality": "audio", "files": [f"{name}.wav"],
                            "sync": {"reference": "cam_audio"}})
            cases.append((name, sr, clk))
        man = manifest(folder, f"rec{int(dur)}", streams)
        t = time.perf_counter()
        res = sync_in_process(man, features=features_in_process(man))
        el = time.perf_counter() - t
        print(f"\nrecorder beside a camera, {dur:.0f} s ({len(cases)} recorders: {el:.0f} s)\n")
        print("| rate | clock | offset error | drift error | confidence | fell back |")
        print("|---|---|---|---|---|---|")
        for name, sr, clk in cases:
            r = res[name]
            model = r.estimate if r.estimate is not None else r.model
            e = max_error_ms(model, clk, np.linspace(0.0, dur, 200))
            row = {"seconds": dur, "rate": sr, "offset_s": clk.offset_s,
                   "drift_ppm": clk.drift_ppm, "error_ms": e,
                   "drift_error_ppm": model.drift_ppm - clk.drift_ppm,
                   "confidence": r.confidence, "fell_back": r.fell_back}
            rows.append(row)
            print(f"| {sr / 1000:g} kHz | {clk.offset_s:+.1f} s, {clk.drift_ppm:+.0f} ppm | "
                  f"{e:.3f} ms | {row['drift_error_ppm']:+.2f} ppm | {r.confidence:.2f} | "
                  f"{'yes' if r.fell_back else 'no'} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases, shorter media")
    ap.add_argument("--part", default="subtitles,camera,recorder",
                    help="comma-separated: subtitles, camera, recorder")
    ap.add_argument("--json", type=Path, help="write the cases here")
    ap.add_argument("--keep", type=Path, help="keep the media in this folder")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    folder = a.keep or Path(tempfile.mkdtemp(prefix="bench_sync_real_"))
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part in a.part.split(","):
        out[part] = {"subtitles": subtitles, "camera": camera, "recorder": recorders}[part](
            a, folder)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
