"""Feast definitions for mmalign: entity ``session`` and feature view ``tick_embeddings`` over
the embeddings Parquet (``MMALIGN_EMBEDDINGS_PATH``, a file or folder; default data/embeddings).

Streams and fusion are read from the Parquet's schema metadata; before any data exists they
come from ``MMALIGN_STREAMS`` (JSON {stream: dim}) and ``MMALIGN_FUSION`` ("concat"/"mean").
"""

import json
import os
from pathlib import Path

from encoders.feature_store import feature_definitions, streams_from_parquet

SOURCE = os.environ.get("MMALIGN_EMBEDDINGS_PATH",
                        str(Path(__file__).resolve().parent / "data" / "embeddings"))
DEFAULT_STREAMS = {"video": 128, "audio": 128, "text": 384, "sensor": 64}

if Path(SOURCE).exists():
    STREAMS, FUSION = streams_from_parquet(SOURCE)
else:
    STREAMS = json.loads(os.environ.get("MMALIGN_STREAMS", json.dumps(DEFAULT_STREAMS)))
    FUSION = os.environ.get("MMALIGN_FUSION") or None

session, tick_embeddings = feature_definitions(SOURCE, STREAMS, FUSION)
