"""Video frames -> embeddings: optional warp into the reference camera, resize/crop/normalise,
then a small convolutional image encoder."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)   # ImageNet RGB statistics
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_SIZE = 112


def warp_to_reference(frame: np.ndarray, homography: np.ndarray,
                      ref_size: tuple[int, int] | None = None) -> np.ndarray:
    """Warp ``frame`` (H, W, 3) into the reference camera with the 3x3 ``homography``
    (frame pixel -> reference pixel). ``ref_size`` is (width, height); default the frame's."""
    h = np.asarray(homography, dtype=np.float64)
    if h.shape != (3, 3) or not np.isfinite(h).all():
        raise ValueError(f"homography must be a finite 3x3 matrix, got shape {h.shape}")
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError("homography is singular (determinant ~ 0); registration failed")
    width, height = ref_size if ref_size is not None else (frame.shape[1], frame.shape[0])
    return cv2.warpPerspective(frame, h, (int(width), int(height)), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def resize_center_crop(frame: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Resize so the shorter side is ``size`` (area filter when shrinking), then centre-crop."""
    h, w = frame.shape[:2]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top:top + size, left:left + size]


def preprocess_frame(frame: np.ndarray, size: int = DEFAULT_SIZE,
                     homography: np.ndarray | None = None,
                     ref_size: tuple[int, int] | None = None) -> np.ndarray:
    """One RGB uint8 frame (H, W, 3) -> float32 (3, size, size), ImageNet-normalised.

    With ``homography`` the frame is first warped into the reference camera (see
    ``warp_to_reference``). Raises ValueError for anything that is not an RGB uint8 image.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"video frame must be uint8 (H, W, 3) RGB, got {frame.dtype} "
                         f"{frame.shape}")
    if min(frame.shape[:2]) < 2:
        raise ValueError(f"video frame {frame.shape[1]}x{frame.shape[0]} is too small to encode")
    if homography is not None:
        frame = warp_to_reference(frame, homography, ref_size)
    x = resize_center_crop(frame, size).astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_frames(frames: np.ndarray | list[np.ndarray], size: int = DEFAULT_SIZE,
                      homographies: np.ndarray | list | None = None,
                      ref_size: tuple[int, int] | None = None) -> np.ndarray:
    """A batch of frames (N, H, W, 3) or a list of frames -> float32 (N, 3, size, size).
    ``homographies`` is None or one 3x3 matrix (or None) per frame."""
    if homographies is not None and len(homographies) != len(frames):
        raise ValueError(f"{len(homographies)} homographies for {len(frames)} frames")
    hs = homographies if homographies is not None else [None] * len(frames)
    out = [preprocess_frame(f, size, h, ref_size) for f, h in zip(frames, hs)]
    return np.stack(out) if out else np.zeros((0, 3, size, size), np.float32)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class VideoEncoder(nn.Module):
    """Four stride-2 conv blocks, global average pooling, a linear head; L2-normalised output.
    Input (N, 3, S, S) float32, output (N, dim)."""

    modality = "video"

    def __init__(self, dim: int = 128, width: int = 32, size: int = DEFAULT_SIZE):
        super().__init__()
        self.embedding_dim, self.size = dim, size
        self.features = nn.Sequential(_block(3, width), _block(width, 2 * width),
                                      _block(2 * width, 4 * width), _block(4 * width, 4 * width))
        self.head = nn.Linear(4 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x).mean(dim=(2, 3))
        return nn.functional.normalize(self.head(z), dim=1)
