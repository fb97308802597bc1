"""OpenCV's sample images (Debian package ``opencv-doc``), fetched once into .cache/opencv-doc.

``opencv_doc_data()`` returns the folder holding graf1.png, graf3.png, H1to3p.xml and the stereo
chessboard pairs left01..14.jpg / right01..14.jpg. It uses an installed opencv-doc if present,
else ``apt-get download opencv-doc`` + ``dpkg -x`` into the cache (only the data folder is kept).
It skips the calling test, with the reason, only when the package cannot be downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "opencv-doc"
DATA_IN_PACKAGE = Path("usr/share/doc/opencv-doc/examples/data")
SYSTEM_DATA = Path("/") / DATA_IN_PACKAGE
NEEDED = ("graf1.png", "graf3.png", "H1to3p.xml", "left01.jpg", "right01.jpg", "left14.jpg",
          "right14.jpg")


def _complete(folder: Path) -> bool:
    return all((folder / n).is_file() for n in NEEDED)


def opencv_doc_data() -> Path:
    data = CACHE / "data"
    if _complete(data):
        return data
    if _complete(SYSTEM_DATA):
        return SYSTEM_DATA
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("opencv-doc sample data needs apt-get and dpkg, which are not installed")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        dl = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True,
                            text=True, timeout=900, check=False)
        debs = sorted(Path(tmp).glob("opencv-doc_*.deb"))
        if dl.returncode != 0 or not debs:
            why = (dl.stderr or dl.stdout).strip().splitlines()[-1:] or ["no .deb produced"]
            pytest.skip(f"cannot download Debian package opencv-doc (apt unreachable?): {why[0]}")
        subprocess.run(["dpkg", "-x", str(debs[0]), os.path.join(tmp, "x")], check=True,
                       capture_output=True, timeout=900)
        unpacked = Path(tmp) / "x" / DATA_IN_PACKAGE
        if not _complete(unpacked):
            raise RuntimeError(f"{debs[0].name} has no {', '.join(NEEDED)} under "
                               f"{DATA_IN_PACKAGE}; the package layout changed")
        staged = Path(tmp) / "data"
        shutil.move(str(unpacked), staged)
        if not _complete(data):          # another process may have finished first
            shutil.rmtree(data, ignore_errors=True)
            os.replace(staged, data)
    return data


def street_session(folder: Path, speech: str, alignment: dict | None = None) -> Path:
    """A session of real material in ``folder``: opencv-doc's street camera (vtest.avi, XVID,
    795 frames at 10 fps: 79.5 s) as the tick source and ``speech`` spoken by espeak-ng as its
    microphone; ``alignment`` updates the manifest's (4 s buckets). Returns the manifest."""
    import yaml

    from tests.media import espeak_wav

    shutil.copy(opencv_doc_data() / "vtest.avi", folder / "vtest.avi")
    espeak_wav(folder / "speech.wav", speech)
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({
        "session": "street",
        "streams": [{"id": "cam", "modality": "video", "files": ["vtest.avi"]},
                    {"id": "mic", "modality": "audio", "files": ["speech.wav"]}],
        "alignment": {"ticks": {"anchor": "cam"}, "bucket_s": 4.0, **(alignment or {})}}))
    return manifest
