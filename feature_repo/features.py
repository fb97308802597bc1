"""Feast definitions for mmalign: entity ``session`` and feature view ``tick_embeddings`` over
the aligned Parquet of a backfill with encoders (``MMALIGN_ALIGNED_PATH``: OUT/aligned, a
folder or one file; default data/aligned).

The encoded streams and fusion are read from the Parquet columns (``<stream>__emb``,
``fused__emb``); before any data exists they come from ``MMALIGN_STREAMS`` (comma-separated
stream ids) and ``MMALIGN_FUSION`` (1 = fused columns).
"""

import os
from pathlib import Path

from mmalign.encoders.feature_store import embedded_streams, feature_definitions

SOURCE = os.environ.get("MMALIGN_ALIGNED_PATH",
                        str(Path(__file__).resolve().parent / "data" / "aligned"))

if Path(SOURCE).exists():
    STREAMS, FUSION = embedded_streams(SOURCE)
else:
    STREAMS = [s for s in os.environ.get("MMALIGN_STREAMS", "").split(",") if s]
    FUSION = os.environ.get("MMALIGN_FUSION", "") == "1"

session, tick_embeddings = feature_definitions(SOURCE, STREAMS, FUSION)
