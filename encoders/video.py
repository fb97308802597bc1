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
    """The centre square of ``frame`` (side = the shorter side) resized to (size, size): the
    same pixels as resizing the shorter side to ``size`` and centre-cropping, without
    resizing the columns (or rows) the crop throws away.

    Shrinking by 2x or more first averages k x k blocks (k = the whole part of the factor;
    OpenCV's integer INTER_AREA path, after trimming the < k border rows/columns that do not
    fill a block, evenly from both sides), then resamples the remaining factor (0.5-1)
    bilinearly: Pillow's ``reducing_gap`` idea. Same anti-aliasing as a direct INTER_AREA
    resize for integer factors; measured 0.10 ms vs 0.43 ms for a direct INTER_AREA resize
    of 320x240 -> 112, 0.68 vs 3.4 ms for 1280x720 -> 112."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    k = side // size
    if k >= 2:
        trim = side % k
        top, left, side = top + trim // 2, left + trim // 2, side - trim
    square = frame[top:top + side, left:left + side]
    if k >= 2:
        square = cv2.resize(square, (side // k, side // k), interpolation=cv2.INTER_AREA)
    if square.shape[0] != size:
        square = cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)
    return square


def crop_frame(frame: np.ndarray, size: int = DEFAULT_SIZE,
               homography: np.ndarray | None = None,
               ref_size: tuple[int, int] | None = None) -> np.ndarray:
    """One RGB uint8 frame (H, W, 3) -> uint8 (size, size, 3): the per-frame half of the
    preprocessing (checks, optional warp into the reference camera, resize + centre crop).

    Raises ValueError for anything that is not an RGB uint8 image or a bad homography.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"video frame must be uint8 (H, W, 3) RGB, got {frame.dtype} "
                         f"{frame.shape}")
    if min(frame.shape[:2]) < 2:
        raise ValueError(f"video frame {frame.shape[1]}x{frame.shape[0]} is too small to encode")
    if homography is not None:
        frame = warp_to_reference(frame, homography, ref_size)
    return resize_center_crop(frame, size)


def normalise_batch(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (N, S, S, 3) crops -> float32 (N, 3, S, S), ImageNet-normalised, on the crops'
    device: one channels-first copy and two in-place passes for the whole batch (the same
    arithmetic as per frame: x / 255, - MEAN, / STD, in float32)."""
    if crops.dtype != torch.uint8 or crops.ndim != 4 or crops.shape[3] != 3:
        raise ValueError(f"crops must be uint8 (N, S, S, 3), got {crops.dtype} "
                         f"{tuple(crops.shape)}")
    n, h, w, _ = crops.shape
    x = torch.empty((n, 3, h, w), dtype=torch.float32, device=crops.device)
    x.copy_(crops.permute(0, 3, 1, 2))
    mean = torch.from_numpy(MEAN).to(crops.device).view(1, 3, 1, 1)
    std = torch.from_numpy(STD).to(crops.device).view(1, 3, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)


def preprocess_frames(frames: np.ndarray | list[np.ndarray], size: int = DEFAULT_SIZE,
                      homographies: np.ndarray | list | None = None,
                      ref_size: tuple[int, int] | None = None) -> np.ndarray:
    """A batch of frames (N, H, W, 3) or a list of frames -> float32 (N, 3, size, size):
    ``crop_frame`` per frame, ``normalise_batch`` once. ``homographies`` is None or one 3x3
    matrix (or None) per frame."""
    if homographies is not None and len(homographies) != len(frames):
        raise ValueError(f"{len(homographies)} homographies for {len(frames)} frames")
    hs = homographies if homographies is not None else [None] * len(frames)
    crops = [crop_frame(f, size, h, ref_size) for f, h in zip(frames, hs)]
    if not crops:
        return np.zeros((0, 3, size, size), np.float32)
    return normalise_batch(torch.from_numpy(np.stack(crops))).numpy()


def preprocess_frame(frame: np.ndarray, size: int = DEFAULT_SIZE,
                     homography: np.ndarray | None = None,
                     ref_size: tuple[int, int] | None = None) -> np.ndarray:
    """One RGB uint8 frame (H, W, 3) -> float32 (3, size, size), ImageNet-normalised
    (``preprocess_frames`` of one frame). Raises ValueError for a bad frame or homography."""
    return preprocess_frames([frame], size, None if homography is None else [homography],
                             ref_size)[0]


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
