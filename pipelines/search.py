"""`mmalign search`: the ticks nearest a text query or another tick, across every session of an
output, by cosine similarity of their embeddings.

    mmalign search --out OUT --text "the robot drops the box" [--stream transcript] [-k 10]
    mmalign search --out OUT --like SESSION@TICK_NS [--stream cam0 | fused] [-k 10]
                   [--other-sessions] [--json]

This first version is an exact brute-force search: it reads the chosen ``<stream>__emb``
column (and the key columns) of every bucket file under ``OUT/aligned`` and ranks all vectors
with one matrix product; no index, so the cost grows with the output (one pass over the
column per query). Only vectors from the same model as the query are compared (the
``<stream>__model_id`` column); ticks without an embedding (all-NaN vectors) are skipped.

``--text``: the query is embedded by the default text encoder (all-MiniLM-L6-v2) and compared
with a text stream's embeddings (the stream whose model id is that encoder's, or ``--stream``).
``--like SESSION@TICK_NS``: the query is that session's tick at or before ``TICK_NS`` (ns on
the session's reference clock, as in the ``tick_ns`` column), in ``--stream`` (default: the
only embedded stream, else ``fused`` when there is one); the tick itself is never a result.
Exit codes: 0 results printed, 1 nothing to compare with, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmalign.schemas import aligned
from mmalign.schemas.fs import read_schema, read_table
from mmalign.schemas.layout import session_dirs

EXIT_OK, EXIT_EMPTY, EXIT_BAD_INPUT = 0, 1, 2
KEYS = ("session_id", "tick_ns", "tick_time")


class SearchError(ValueError):
    """Bad input for a search; the message says what to fix."""


@dataclass
class Vectors:
    """One embedding column of an output: key columns, model ids, unit-length vectors."""
    stream: str
    keys: pa.Table                  # session_id, tick_ns, tick_time (+ <stream>__text if any)
    model_ids: np.ndarray           # object array of str
    matrix: np.ndarray              # float32 (n, dim), rows L2-normalised


def aligned_root(out: str) -> str:
    """OUT or OUT/aligned -> the aligned dataset folder."""
    p = Path(out)
    return str(p / "aligned") if (p / "aligned").is_dir() else str(p)


def part_files(root: str) -> list:
    """The bucket files of an aligned dataset (transforms/io/parquet.py's listing, without
    importing Beam into the command line's start-up)."""
    return [f for d in session_dirs(root) for f in sorted(d.glob("part-*.parquet"))]


def embedded_streams(files: list) -> list[str]:
    """Streams with an ``__emb`` column in any bucket file, ``fused`` last if present."""
    names: list[str] = []
    for f in files:
        for n in read_schema(f).names:
            parts = aligned.split_column(n)
            if parts and parts[1] == aligned.EMB and parts[0] not in names:
                names.append(parts[0])
    return sorted(n for n in names if n != aligned.FUSED) + (
        [aligned.FUSED] if aligned.FUSED in names else [])


def load_vectors(out: str, stream: str) -> Vectors:
    """Every tick of ``stream`` with an embedding, from all sessions under ``out``."""
    files = part_files(aligned_root(out))
    emb = aligned.column(stream, aligned.EMB)
    mid = aligned.column(stream, aligned.MODEL_ID)
    text = aligned.column(stream, aligned.TEXT)
    keys, ids, mats = [], [], []
    for f in files:
        names = set(read_schema(f).names)
        if emb not in names:
            continue
        cols = [*KEYS, emb] + ([mid] if mid in names else []) + (
            [text] if text in names else [])
        t = read_table(f, columns=cols)
        col = t.column(emb).combine_chunks()
        dim = col.type.list_size
        m = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
        ok = np.isfinite(m).all(axis=1)
        if not ok.any():
            continue
        ok_arr = pa.array(ok)
        keys.append(t.select([c for c in cols if c not in (emb, mid)]).filter(ok_arr))
        ids.append(np.array(t.column(mid).filter(ok_arr).to_pylist() if mid in names
                            else [None] * int(ok.sum()), dtype=object))
        mats.append(m[ok])
    if not mats:
        return Vectors(stream, pa.table({k: [] for k in KEYS}), np.array([], object),
                       np.zeros((0, 0), np.float32))
    dims = {m.shape[1] for m in mats}
    if len(dims) > 1:
        raise SearchError(f"{emb} has several dimensions {sorted(dims)} across the output's "
                          "files (different encoders); search one run's output")
    matrix = np.concatenate(mats)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return Vectors(stream, pa.concat_tables(keys, promote_options="permissive"),
                   np.concatenate(ids), matrix)


def top_k(matrix: np.ndarray, query: np.ndarray, k: int,
          allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: (row indices, scores), best first, over rows where ``allowed``."""
    q = np.asarray(query, np.float32).reshape(-1)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    scores = matrix @ q
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    n = int(np.isfinite(scores).sum())
    k = min(k, n)
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx, scores[idx]


def parse_like(text: str) -> tuple[str, int]:
    session, sep, tick = text.rpartition("@")
    if not sep or not session:
        raise SearchError(f"--like {text!r} must be SESSION@TICK_NS (e.g. demo-001@2000000000)")
    try:
        return session, int(tick)
    except ValueError:
        raise SearchError(f"--like {text!r}: the tick after '@' must be an integer ns "
                          "(the tick_ns column)") from None


def text_query(vectors_for, text: str, stream: str | None, streams: list[str]):
    """(Vectors, query vector, model id) for a --text search."""
    from mmalign.encoders.registry import build_encoder  # lazy: torch + sentence-transformers
    from mmalign.schemas.encoders import EncoderConfig
    enc = build_encoder(EncoderConfig(modality="text", device="cpu"))
    candidates = [stream] if stream else [s for s in streams if s != aligned.FUSED]
    for s in candidates:
        v = vectors_for(s)
        if (v.model_ids == enc.model_id).any():
            import torch  # lazy: with the encoder above
            with torch.inference_mode():
                q = enc.model([text]).float().cpu().numpy()[0]
            return v, q, enc.model_id
    raise SearchError(f"no stream of this output has embeddings from {enc.model_id} "
                      f"(streams with embeddings: {', '.join(streams) or 'none'}); encode a "
                      "text stream with the default text encoder, or use --like")


def like_query(vectors_for, like: str, stream: str | None, streams: list[str]):
    session, tick = parse_like(like)
    if stream is None:
        plain = [s for s in streams if s != aligned.FUSED]
        if len(plain) == 1:
            stream = plain[0]
        elif aligned.FUSED in streams:
            stream = aligned.FUSED
        else:
            raise SearchError(f"several embedded streams ({', '.join(streams)}): choose one "
                              "with --stream")
    v = vectors_for(stream)
    sess = np.array(v.keys.column("session_id").to_pylist(), dtype=object)
    ticks = np.asarray(v.keys.column("tick_ns").to_numpy(zero_copy_only=False))
    at = np.flatnonzero((sess == session) & (ticks <= tick))
    if at.size == 0:
        raise SearchError(f"session {session!r} has no {stream} embedding at or before "
                          f"tick_ns {tick}")
    row = at[np.argmax(ticks[at])]
    return v, v.matrix[row], v.model_ids[row], row


def search(out: str, *, text: str | None = None, like: str | None = None,
           stream: str | None = None, k: int = 10, other_sessions: bool = False) -> dict:
    """The search behind the command: {"stream", "model_id", "query", "results": [...]}."""
    if (text is None) == (like is None):
        raise SearchError("give exactly one of --text or --like")
    if k < 1:
        raise SearchError(f"-k {k} must be >= 1")
    files = part_files(aligned_root(out))
    if not files:
        raise SearchError(f"no aligned output under {out} (expected OUT/aligned/session=*/"
                          "part-*.parquet)")
    streams = embedded_streams(files)
    if stream is not None and stream not in streams:
        raise SearchError(f"stream {stream!r} has no embeddings in this output (streams with "
                          f"embeddings: {', '.join(streams) or 'none'})")
    cache: dict[str, Vectors] = {}

    def vectors_for(s: str) -> Vectors:
        if s not in cache:
            cache[s] = load_vectors(out, s)
        return cache[s]

    exclude = None
    if text is not None:
        v, q, model_id = text_query(vectors_for, text, stream, streams)
        query = {"text": text}
    else:
        v, q, model_id, exclude = like_query(vectors_for, like, stream, streams)
        query = {"session_id": v.keys.column("session_id")[exclude].as_py(),
                 "tick_ns": v.keys.column("tick_ns")[exclude].as_py()}
    allowed = v.model_ids == model_id
    if exclude is not None:
        allowed[exclude] = False
        if other_sessions:
            sess = np.array(v.keys.column("session_id").to_pylist(), dtype=object)
            allowed &= sess != query["session_id"]
    idx, scores = top_k(v.matrix, q, k, allowed)
    text_col = aligned.column(v.stream, aligned.TEXT)
    rows = v.keys.take(pa.array(idx, pa.int64())).to_pylist() if idx.size else []
    results = []
    for r, s in zip(rows, scores):
        item = {"score": round(float(s), 6), "session_id": r["session_id"],
                "tick_ns": r["tick_ns"], "tick_time": str(r["tick_time"])}
        if text_col in r:
            item["text"] = r[text_col]
        results.append(item)
    return {"stream": v.stream, "model_id": model_id, "query": query,
            "searched": int(allowed.sum()), "method": "exact brute-force cosine",
            "results": results}


def cmd_search(ns: argparse.Namespace) -> int:
    try:
        res = search(ns.out, text=ns.text, like=ns.like, stream=ns.stream, k=ns.k,
                     other_sessions=ns.other_sessions)
    except SearchError as e:
        print(f"mmalign search: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if ns.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{len(res['results'])} nearest of {res['searched']} {res['stream']} ticks "
              f"({res['model_id']}, {res['method']}):")
        for i, r in enumerate(res["results"], 1):
            extra = f"  {r['text']!r}" if r.get("text") else ""
            print(f"{i:3d}  {r['score']:.4f}  {r['session_id']}@{r['tick_ns']}  "
                  f"{r['tick_time']}{extra}")
    return EXIT_OK if res["results"] else EXIT_EMPTY


def add_parser(sub) -> None:
    """Register `search` on the `mmalign` subparsers."""
    p = sub.add_parser("search", help="nearest ticks to a text query or to another tick "
                       "(exact cosine over an output's embeddings)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a backfill's output folder (or OUT/aligned)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="a sentence, embedded by the default text encoder")
    q.add_argument("--like", metavar="SESSION@TICK_NS", help="the tick to find neighbours of")
    p.add_argument("--stream", default=None, help="which embedding column (a stream, or fused)")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--other-sessions", action="store_true",
                   help="with --like: only ticks of other sessions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_search)
