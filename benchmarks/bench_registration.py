"""Camera registration: speed per core and accuracy, plain ORB+MAGSAC side by side with ours
(features + MAGSAC + masked coarse-to-fine ECC).

    python benchmarks/bench_registration.py [--repeat 5] [--quick]

Prints registrations per second per core (OpenCV limited to one thread; rate from CPU time, so
other load on the machine does not skew it) on generated textured
scenes at 640x480 and 1280x720 with a known homography, and the mean corner error on OpenCV's
graf1/graf3 pair against the published H1to3p (Debian opencv-doc, fetched once into .cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from mmalign.schemas.registration_spec import RegistrationConfig, available_detectors
from mmalign.transforms.register.registration import corner_error, register_pair
from tests.media import texture

H_UNIT = np.array([[0.9, 0.08, 0.047], [-0.06, 0.95, 0.042], [0.064, -0.024, 1.0]])


def known_pair(w: int, h: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source, reference (JPEG round-tripped) and the true homography for a w x h scene."""
    s = np.diag([w, h, 1.0])
    h_true = s @ H_UNIT @ np.linalg.inv(s)        # same geometry at every resolution
    h_true /= h_true[2, 2]
    canvas = texture(w + w // 2, h + h // 2, seed)
    x0, y0 = w // 4, h // 4
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
    src = canvas[y0:y0 + h, x0:x0 + w]
    ref = cv2.warpPerspective(canvas, h_true @ np.linalg.inv(shift), (w, h))

    def jpeg(x):
        return cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 90])[1],
                            cv2.IMREAD_COLOR)
    return jpeg(src), jpeg(ref), h_true


def methods(quick: bool) -> dict[str, RegistrationConfig]:
    out = {"ORB+MAGSAC (plain)": RegistrationConfig(refine="none"),
           "ORB+MAGSAC+ECC (ours)": RegistrationConfig()}
    if not quick and "sift" in available_detectors():
        out["SIFT+MAGSAC (plain)"] = RegistrationConfig(detector="sift", refine="none")
        out["SIFT+MAGSAC+ECC (ours)"] = RegistrationConfig(detector="sift")
    return out


def speed(repeat: int, quick: bool) -> None:
    print(f"\nregistrations per second per core (cv2 threads = {cv2.getNumThreads()}), "
          f"generated scenes, known homography, {repeat} runs each")
    print("(reg/s = 1 / CPU seconds per registration on one thread; wall ms shown too)")
    print(f"{'method':26s} {'size':>9s} {'reg/s':>7s} {'cpu ms':>8s} {'wall ms':>8s} "
          f"{'corner err px':>14s} {'inliers':>8s}")
    for w, h in ((640, 480), (1280, 720)):
        src, ref, h_true = known_pair(w, h)
        for name, cfg in methods(quick).items():
            register_pair(src, ref, cfg)                       # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(repeat):
                reg = register_pair(src, ref, cfg)
            cpu = (time.process_time() - c0) / repeat
            wall = (time.perf_counter() - t0) / repeat
            print(f"{name:26s} {f'{w}x{h}':>9s} {1 / cpu:7.2f} {cpu * 1e3:8.1f} "
                  f"{wall * 1e3:8.1f} {corner_error(reg.H, h_true, (w, h)):14.3f} "
                  f"{reg.n_inliers:8d}")


def graf(quick: bool) -> None:
    import pytest

    from tests.opencv_doc_data import opencv_doc_data
    try:
        data = opencv_doc_data()
    except pytest.skip.Exception as e:          # no apt: the helper skips with a reason
        print(f"\ngraf pair skipped: {e}")
        return
    src = cv2.imread(str(data / "graf1.png"))
    ref = cv2.imread(str(data / "graf3.png"))
    fs = cv2.FileStorage(str(data / "H1to3p.xml"), cv2.FILE_STORAGE_READ)
    h13 = fs.getNode("H13").mat()
    fs.release()
    size = (src.shape[1], src.shape[0])
    print("\ngraf1 -> graf3 (Oxford affine set), mean corner error against H1to3p")
    print(f"{'method':26s} {'corner err px':>14s} {'inliers':>8s} {'rmse px':>8s} {'ecc_cc':>7s} "
          f"{'s':>6s}")
    for name, cfg in methods(quick).items():
        t0 = time.perf_counter()
        reg = register_pair(src, ref, cfg)
        dt = time.perf_counter() - t0
        cc = f"{reg.ecc_cc:.3f}" if reg.ecc_cc is not None else "-"
        print(f"{name:26s} {corner_error(reg.H, h13, size):14.3f} {reg.n_inliers:8d} "
              f"{reg.rmse_px:8.3f} {cc:>7s} {dt:6.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per method and size")
    ap.add_argument("--quick", action="store_true", help="ORB only, 2 runs")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    print(f"OpenCV {cv2.__version__}; detectors available: {available_detectors()}")
    speed(2 if args.quick else args.repeat, args.quick)
    graf(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
