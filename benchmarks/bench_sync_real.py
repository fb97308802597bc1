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
from tests.sync_media import forced_alignment, speech_scene, sync_in_process  # noqa: E402

NS = 1_000_000_000
RATIOS = {"1": 1.0, "1.001": 1.001, "25/23.976": 25 / 23.976, "0.96": 0.96}
OFFSETS = (-5.0, -2.7, 0.45, 3.3, 5.0)
SR = 16000


def read_srt(path: Path) -> list[float]:
    """Cue start times (s) of an SRT file, in file order."""
    out = []
    for m in re.finditer(r"(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->", path.read_text()):
        h, mi, s, ms = (int(g) for g in m.groups())
        out.append(h * 3600 + mi * 60 + s + ms / 1000)
    return out


def run_ffsubsync(wav: Path, srt: Path, out: Path, extra: list[str]) -> tuple[list[float], float]:
    t = time.perf_counter()
    exe = Path(sys.executable).with_name("ffsubsync")     # the [bench] extra's console script
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 offsets per ratio, 90 s of speech")
    ap.add_argument("--json", type=Path, help="write the cases here")
    ap.add_argument("--keep", type=Path, help="keep the media in this folder")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    folder = a.keep or Path(tempfile.mkdtemp(prefix="bench_sync_real_"))
    folder.mkdir(parents=True, exist_ok=True)
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
                if len(got) == len(keep):
                    e = np.abs(np.array(got) - truth) * 1e3
                    row[f"{name}_ms"], row[f"{name}_max_ms"] = float(np.median(e)), float(e.max())
                else:
                    row[f"{name}_ms"] = row[f"{name}_max_ms"] = float("nan")
                row[f"{name}_s"] = t_f
            row["best_ffs_ms"] = float(np.nanmin([row["ffs_ms"], row["ffs_gss_ms"]]))
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
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
