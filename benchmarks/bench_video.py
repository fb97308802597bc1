"""A video-only backfill against FFmpeg decoding the same file, side by side.

    python benchmarks/bench_video.py [--duration 20] [--repeat 3] [--quick]

One 1280x720 30 fps H.264 file made by ffmpeg (``testsrc2``, a GOP of 2 s), a manifest with
that one video stream as the tick source, then best of ``--repeat``:
- ``ffmpeg -i cam.mp4 -f null -`` (FFmpeg's frame threads) and the same with ``-threads 1``;
- PyAV in this process: demux and decode every packet, nothing else (the decode the backfill
  does to check each frame);
- ``mmalign backfill`` as a user runs it: the command's wall time (its imports included) and
  the summary's ``elapsed_s`` (the run without them).
Prints seconds and the ratio of each mmalign figure to each peer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import best_of  # benchmarks/timing.py

MANIFEST = """session: video-only
streams:
- id: cam
  modality: video
  files:
  - cam.mp4
alignment:
  ticks:
    anchor: cam
  bucket_s: 4.0
"""


def make_clip(folder: Path, duration: float) -> Path:
    clip = folder / "cam.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=1280x720:rate=30:duration={duration:g}", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-g", "60", str(clip)], check=True)
    (folder / "manifest.yaml").write_text(MANIFEST)
    return clip


def pyav_decode(clip: Path) -> int:
    import av
    n = 0
    with av.open(str(clip)) as c:
        vs = c.streams.video[0]
        for pkt in c.demux(vs):
            n += len(pkt.decode())
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 5 s clip, one run each")
    ns = ap.parse_args()
    duration, repeat = (5.0, 1) if ns.quick else (ns.duration, ns.repeat)
    mmalign = Path(sys.executable).with_name("mmalign")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = make_clip(folder, duration)
        out = folder / "out"
        elapsed: list[float] = []
        rows: set[int] = set()

        def backfill() -> None:
            shutil.rmtree(out, ignore_errors=True)
            p = subprocess.run([str(mmalign), "backfill", "--manifest",
                                str(folder / "manifest.yaml"), "--out", str(out), "--json",
                                "--no-progress"], check=True, capture_output=True, text=True)
            summary = json.loads(p.stdout)
            elapsed.append(summary["elapsed_s"])
            rows.add(summary["aligned_rows"])

        def ffmpeg(*extra: str):
            return lambda: subprocess.run(["ffmpeg", "-v", "error", *extra, "-i", str(clip),
                                           "-f", "null", "-"], check=True)

        frames = pyav_decode(clip)
        peers = {"ffmpeg -f null (frame threads)": best_of(ffmpeg(), repeat)[0],
                 "ffmpeg -threads 1 -f null": best_of(ffmpeg("-threads", "1"), repeat)[0],
                 "PyAV demux + decode, 1 thread": best_of(lambda: pyav_decode(clip), repeat)[0]}
        command = best_of(backfill, repeat)[0]
        run = min(elapsed)
    print(f"{duration:g} s of 1280x720 H.264 at 30 fps ({frames} frames); best of {repeat}; "
          f"mmalign wrote {sorted(rows)} aligned rows")
    print(f"{'':34s} {'s':>7s}  {'command / peer':>15s}  {'run / peer':>11s}")
    print(f"{'mmalign backfill (command)':34s} {command:7.2f}")
    print(f"{'mmalign backfill (run, no imports)':34s} {run:7.2f}")
    for name, t in peers.items():
        print(f"{name:34s} {t:7.2f}  {command / t:14.2f}x  {run / t:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
