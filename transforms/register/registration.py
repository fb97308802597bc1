"""Camera <-> camera registration from images: features, ratio test, robust homography, ECC.

Plain functions over numpy images. A homography ``H`` maps pixels of the *source* camera to
pixels of the *reference* camera: ``[u_ref, v_ref, 1] ~ H @ [u_src, v_src, 1]``.

``register_pair`` does: detect (ORB or SIFT, whatever the installed OpenCV ships; AKAZE where
present), match with Lowe's ratio test, fit a homography robustly (USAC MAGSAC by default), then
optionally refine it with ECC (cv2.findTransformECC, MOTION_HOMOGRAPHY, coarse-to-fine pyramid)
restricted to pixels that agree after the feature fit, so that objects off the plane (a parked car,
a person) do not pull the fit. Quality: inlier count, inlier ratio, reprojection RMSE on the
inliers, the inliers' coverage of the image (a small patch extrapolates badly) and
the ECC correlation. ``RegistrationTracker`` keeps the last good transform per camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from mmalign.schemas.registration_spec import RegistrationConfig

_METHODS = {"magsac": "USAC_MAGSAC", "usac_accurate": "USAC_ACCURATE",
            "usac_default": "USAC_DEFAULT", "ransac": "RANSAC"}
MIN_SIDE = 16


class RegistrationImpossible(Exception):
    """A registration that cannot be done at all (becomes a DeadLetter); ``reason`` is a slug."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Features:
    xy: np.ndarray            # (N, 2) float32 keypoint positions
    descriptors: np.ndarray   # (N, D) uint8 (binary) or float32
    norm: int                 # cv2.NORM_HAMMING or cv2.NORM_L2


@dataclass(frozen=True)
class Registration:
    H: np.ndarray             # 3x3 float64, source pixels -> reference pixels, H[2,2] = 1
    n_matches: int            # matches passing the ratio test
    n_inliers: int            # matches within ransac_threshold_px of H
    inlier_ratio: float       # inliers / matches
    rmse_px: float            # reprojection RMSE of the inliers under H (reference pixels)
    ecc_cc: float | None      # ECC correlation after refinement (None: not refined)
    refined: bool
    flags: tuple[str, ...] = ()   # quality problems, e.g. ("few_inliers",); empty = good
    coverage: float = float("nan")  # convex hull of the inliers / source image area

    @property
    def good(self) -> bool:
        return not self.flags

    def quality(self) -> dict:
        return {"n_matches": self.n_matches, "n_inliers": self.n_inliers,
                "inlier_ratio": self.inlier_ratio, "rmse_px": self.rmse_px,
                "ecc_cc": self.ecc_cc, "refined": self.refined, "coverage": self.coverage}


def to_gray(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """A uint8 single-channel view of an image array; RegistrationImpossible if it is not one."""
    if not isinstance(frame, np.ndarray):
        raise RegistrationImpossible("bad_frame", f"{what} is a {type(frame).__name__}, "
                                     f"not an image array")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise RegistrationImpossible("bad_frame", f"{what} has shape {frame.shape}; expected "
                                     f"(H, W) or (H, W, 1|3|4)")
    if min(frame.shape[:2]) < MIN_SIDE:
        raise RegistrationImpossible("bad_frame", f"{what} is {frame.shape[1]}x{frame.shape[0]}"
                                     f", smaller than {MIN_SIDE}x{MIN_SIDE}")
    img = frame
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            if not np.all(np.isfinite(img)):
                raise RegistrationImpossible("bad_frame", f"{what} has non-finite pixels")
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            raise RegistrationImpossible("bad_frame", f"{what} has dtype {img.dtype}; expected "
                                         f"uint8, uint16 or float")
    if img.ndim == 3:
        img = {1: lambda x: x[:, :, 0], 3: lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2GRAY),
               4: lambda x: cv2.cvtColor(x, cv2.COLOR_BGRA2GRAY)}[img.shape[2]](img)
    return np.ascontiguousarray(img)


def _detector(cfg: RegistrationConfig):
    if cfg.detector == "orb":
        return cv2.ORB_create(nfeatures=cfg.max_features), cv2.NORM_HAMMING
    if cfg.detector == "sift":
        return cv2.SIFT_create(nfeatures=cfg.max_features), cv2.NORM_L2
    return cv2.AKAZE_create(), cv2.NORM_HAMMING


def detect_features(gray: np.ndarray, cfg: RegistrationConfig) -> Features:
    det, norm = _detector(cfg)
    kps, desc = det.detectAndCompute(gray, None)
    if desc is None or len(kps) == 0:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), norm)
    xy = np.array([k.pt for k in kps], dtype=np.float32)
    return Features(xy, desc, norm)


def match_features(src: Features, ref: Features, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Matched (M, 2) source and reference points passing Lowe's ratio test."""
    if len(src.xy) < 2 or len(ref.xy) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    knn = cv2.BFMatcher(src.norm).knnMatch(src.descriptors, ref.descriptors, k=2)
    pairs = np.array([(m[0].queryIdx, m[0].trainIdx) for m in knn
                      if len(m) == 2 and m[0].distance < ratio * m[1].distance], dtype=np.int64)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    return src.xy[pairs[:, 0]], ref.xy[pairs[:, 1]]


def corners(size: tuple[int, int]) -> np.ndarray:
    """The four image corners (width, height) as (4, 2) float64."""
    w, h = size
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ np.asarray(H, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return q[:, :2] / q[:, 2:3]


def corner_error(H: np.ndarray, H_true: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance between the source image corners mapped by H and by H_true (pixels)."""
    c = corners(size)
    return float(np.mean(np.linalg.norm(apply_homography(H, c) - apply_homography(H_true, c),
                                        axis=1)))


def degeneracy(H: np.ndarray | None, size: tuple[int, int]) -> str | None:
    """Why H cannot be a camera-to-camera homography of a ``size`` image, or None if plausible."""
    if H is None:
        return "no homography found"
    if not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        return "homography is not finite"
    c = apply_homography(H / H[2, 2], corners(size))
    if not np.all(np.isfinite(c)):
        return "homography sends an image corner to infinity"
    w = (np.asarray(H)[2] / H[2, 2]) @ np.c_[corners(size), np.ones(4)].T
    if np.any(w <= 0):
        return "homography puts part of the image behind the camera (horizon inside the image)"
    edges = np.roll(c, -1, axis=0) - c
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1,
                                                                                   axis=0)[:, 0]
    if not (np.all(cross > 0) or np.all(cross < 0)):
        return "homography folds the image (mapped corners are not a convex quadrilateral)"
    if np.all(cross < 0):
        return "homography mirrors the image"
    area = 0.5 * abs(np.sum(c[:, 0] * np.roll(c[:, 1], -1) - np.roll(c[:, 0], -1) * c[:, 1]))
    ratio = area / float(size[0] * size[1])
    if not 1e-3 < ratio < 1e3:
        return f"homography scales the image area by {ratio:.3g}"
    return None


def estimate_homography(src_pts: np.ndarray, ref_pts: np.ndarray,
                        cfg: RegistrationConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust homography and inlier mask (bool, (M,)); H is None when no model was found."""
    if len(src_pts) < 4:
        return None, np.zeros(len(src_pts), bool)
    H, mask = cv2.findHomography(src_pts, ref_pts, getattr(cv2, _METHODS[cfg.method]),
                                 cfg.ransac_threshold_px, maxIters=cfg.max_iters,
                                 confidence=cfg.confidence)
    if H is None or mask is None:
        return None, np.zeros(len(src_pts), bool)
    return H / H[2, 2], mask.ravel().astype(bool)


def inlier_coverage(pts: np.ndarray, size: tuple[int, int]) -> float:
    """Area of the convex hull of (N, 2) points over the image area (0 for < 3 points)."""
    if len(pts) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(pts, dtype=np.float32).reshape(-1, 1, 2))
    return float(cv2.contourArea(hull)) / float(size[0] * size[1])


def reprojection_rmse(H: np.ndarray, src_pts: np.ndarray, ref_pts: np.ndarray) -> float:
    if len(src_pts) == 0:
        return float("nan")
    d = apply_homography(H, src_pts) - np.asarray(ref_pts, dtype=np.float64)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def _zscore(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32)
    return (x - x.mean()) / (x.std() + 1e-6)


def agreement_mask(src: np.ndarray, ref: np.ndarray, H: np.ndarray, sigma: float = 4.0,
                   k: float = 3.0) -> np.ndarray:
    """uint8 mask over ``src``: 255 where ``ref`` warped back by H agrees (robust z-score test),
    0 off the overlap or where the scene does not follow the homography."""
    h, w = src.shape[:2]
    Hinv = np.linalg.inv(H)
    back = cv2.warpPerspective(ref, Hinv, (w, h), flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.full(ref.shape[:2], 255, np.uint8), Hinv, (w, h),
                                flags=cv2.INTER_NEAREST)
    valid = cv2.erode(valid, np.ones((5, 5), np.uint8))
    if not valid.any():
        return valid
    d = np.abs(cv2.GaussianBlur(_zscore(src), (0, 0), sigma)
               - cv2.GaussianBlur(_zscore(back), (0, 0), sigma))
    dv = d[valid > 0]
    med = float(np.median(dv))
    mad = float(np.median(np.abs(dv - med))) * 1.4826
    keep = ((d <= med + k * mad) & (valid > 0)).astype(np.uint8) * 255
    return cv2.morphologyEx(keep, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))


def refine_ecc(src: np.ndarray, ref: np.ndarray, H: np.ndarray, cfg: RegistrationConfig,
               mask: np.ndarray | None = None,
               levels: int | None = None) -> tuple[np.ndarray, float] | None:
    """ECC-refined homography (coarse to fine) and its correlation, or None if ECC fails.

    ECC warps the input (source) onto the template (reference): its warp maps reference pixels
    to source pixels, i.e. H^-1; ``mask`` marks usable source pixels. The finest level is the
    image scaled so that its long side is at most ``ecc_max_side``.
    """
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, cfg.ecc_iters, cfg.ecc_eps)
    W = np.linalg.inv(H)
    W /= W[2, 2]
    cc = float("nan")
    fine = min(1.0, cfg.ecc_max_side / max(src.shape[:2] + ref.shape[:2]))
    for level in range((levels or cfg.ecc_levels) - 1, -1, -1):
        s = fine * 0.5 ** level
        S = np.diag([s, s, 1.0])
        if s < 1.0:
            r = cv2.resize(ref, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            q = cv2.resize(src, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            m = None if mask is None else cv2.resize(mask, (q.shape[1], q.shape[0]),
                                                     interpolation=cv2.INTER_NEAREST)
            if min(r.shape[:2] + q.shape[:2]) < 32:
                continue
        else:
            r, q, m = ref, src, mask
        Wl = (S @ W @ np.linalg.inv(S)).astype(np.float32)
        try:
            cc, Wl = cv2.findTransformECC(r.astype(np.float32), q.astype(np.float32), Wl,
                                          cv2.MOTION_HOMOGRAPHY, crit, m, cfg.ecc_gauss)
        except cv2.error:
            return None
        W = np.linalg.inv(S) @ Wl.astype(np.float64) @ S
        W /= W[2, 2]
    Hr = np.linalg.inv(W)
    if not np.all(np.isfinite(Hr)) or not np.isfinite(cc):
        return None
    return Hr / Hr[2, 2], float(cc)


def refine_ecc_masked(src: np.ndarray, ref: np.ndarray, H: np.ndarray,
                      cfg: RegistrationConfig) -> tuple[np.ndarray, float] | None:
    """``ecc_rounds`` rounds of ECC, each on the agreement mask of the previous estimate; stops
    early once a round moves the image corners by less than 0.05 px."""
    size = (src.shape[1], src.shape[0])
    best = None
    for i in range(cfg.ecc_rounds if cfg.ecc_residual_mask else 1):
        mask = agreement_mask(src, ref, H) if cfg.ecc_residual_mask else None
        if mask is not None and not mask.any():
            return best
        # later rounds start close to the optimum: finest level only
        out = refine_ecc(src, ref, H, cfg, mask, levels=None if i == 0 else 1)
        if out is None:
            return best
        moved = corner_error(out[0], H, size)
        best, H = out, out[0]
        if moved < 0.05:
            break
    return best


def register_pair(src_frame: np.ndarray, ref_frame: np.ndarray,
                  cfg: RegistrationConfig | None = None) -> Registration:
    """Register a source camera frame onto a reference camera frame.

    Raises RegistrationImpossible (reason ``bad_frame``, ``no_features``, ``too_few_matches`` or
    ``degenerate``) when no homography can be had; a weak one is returned with ``flags`` set.
    """
    cfg = cfg or RegistrationConfig()
    src, ref = to_gray(src_frame, "source frame"), to_gray(ref_frame, "reference frame")
    fs, fr = detect_features(src, cfg), detect_features(ref, cfg)
    for f, what in ((fs, "source"), (fr, "reference")):
        if len(f.xy) < 4:
            raise RegistrationImpossible("no_features", f"{what} frame has {len(f.xy)} "
                                         f"{cfg.detector} keypoints (textureless or blank?)")
    ps, pr = match_features(fs, fr, cfg.ratio)
    if len(ps) < 4:
        raise RegistrationImpossible("too_few_matches", f"{len(ps)} matches pass the ratio test "
                                     f"{cfg.ratio}; a homography needs at least 4")
    H, _ = estimate_homography(ps, pr, cfg)
    size = (src.shape[1], src.shape[0])
    why = degeneracy(H, size)
    if why:
        raise RegistrationImpossible("degenerate", f"{why} ({len(ps)} matches)")
    ecc_cc, refined = None, False
    if cfg.refine == "ecc":
        out = refine_ecc_masked(src, ref, H, cfg)
        if out is not None and degeneracy(out[0], size) is None:
            shift = np.max(np.linalg.norm(apply_homography(out[0], corners(size))
                                          - apply_homography(H, corners(size)), axis=1))
            if shift <= cfg.max_ecc_shift_px:
                H, ecc_cc, refined = out[0], out[1], True
    # inliers under the transform actually returned: within the RANSAC threshold of H
    err = np.linalg.norm(apply_homography(H, ps) - pr, axis=1)
    inl = err < cfg.ransac_threshold_px
    n_in = int(inl.sum())
    ratio = n_in / len(ps)
    rmse = reprojection_rmse(H, ps[inl], pr[inl])
    coverage = inlier_coverage(ps[inl], size)
    flags = []
    if n_in < cfg.min_inliers:
        flags.append("few_inliers")
    if ratio < cfg.min_inlier_ratio:
        flags.append("low_inlier_ratio")
    if not rmse <= cfg.max_rmse_px:
        flags.append("high_rmse")
    if coverage < cfg.min_coverage:
        flags.append("low_coverage")
    return Registration(H=H, n_matches=len(ps), n_inliers=n_in, inlier_ratio=ratio,
                        rmse_px=rmse, ecc_cc=ecc_cc, refined=refined, flags=tuple(flags),
                        coverage=coverage)


def warp_to_reference(frame: np.ndarray, H: np.ndarray, ref_size: tuple[int, int],
                      interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A source frame resampled into the reference camera's pixels (``ref_size`` = width, height);
    pixels the source does not cover are 0."""
    return cv2.warpPerspective(frame, np.asarray(H, dtype=np.float64), tuple(ref_size),
                               flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@dataclass(frozen=True)
class TickResult:
    camera_id: str
    tick_ns: int
    status: Literal["ok", "flagged"]
    H: np.ndarray | None          # transform used this tick (None: flagged with no good one yet)
    transform_tick_ns: int | None  # tick whose registration produced H
    flags: tuple[str, ...]
    quality: dict                 # this tick's measured quality (empty when reused per session)

    def as_dict(self) -> dict:
        return {"status": self.status, "flags": list(self.flags),
                "homography": None if self.H is None else self.H.ravel().tolist(),
                "transform_tick_ns": self.transform_tick_ns, **self.quality}


@dataclass
class RegistrationTracker:
    """Per-camera registration over ticks, keeping the last good transform.

    A tick whose registration is below quality keeps the last good transform and is flagged
    (``stale_transform`` when one exists, ``no_good_transform`` when none does yet). In
    ``session`` mode a camera is registered until it first succeeds, then that transform is reused.
    ``RegistrationImpossible`` propagates to the caller (a DeadLetter); the state is unchanged.
    """
    cfg: RegistrationConfig = field(default_factory=RegistrationConfig)
    last_good: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)

    def step(self, camera_id: str, tick_ns: int, src_frame: np.ndarray,
             ref_frame: np.ndarray) -> TickResult:
        if self.cfg.mode == "session" and camera_id in self.last_good:
            H, t = self.last_good[camera_id]
            return TickResult(camera_id, tick_ns, "ok", H, t, (), {})
        reg = register_pair(src_frame, ref_frame, self.cfg)
        if reg.good:
            self.last_good[camera_id] = (reg.H, int(tick_ns))
            return TickResult(camera_id, tick_ns, "ok", reg.H, int(tick_ns), (), reg.quality())
        prev = self.last_good.get(camera_id)
        flags = reg.flags + (("stale_transform",) if prev else ("no_good_transform",))
        return TickResult(camera_id, tick_ns, "flagged", prev[0] if prev else None,
                          prev[1] if prev else None, flags, reg.quality())

    def state(self) -> dict:
        """Plain-data state (for Beam state cells)."""
        return {c: (H.ravel().tolist(), t) for c, (H, t) in self.last_good.items()}

    @classmethod
    def from_state(cls, cfg: RegistrationConfig, state: dict | None) -> RegistrationTracker:
        return cls(cfg, {c: (np.asarray(h, dtype=np.float64).reshape(3, 3), int(t))
                         for c, (h, t) in (state or {}).items()})
