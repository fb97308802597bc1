"""`mmalign features`: read per-tick embeddings back from the Feast feature store.

    mmalign features get --repo OUT/features --session S [--at TIME] [--json]
    mmalign features materialize --repo OUT/features [--start T] [--end T]

``get`` without ``--at`` reads the online store (the session's latest tick); with ``--at``
(ns since the epoch, or an ISO-8601 time, UTC unless it says otherwise) it is a point-in-time
read of the offline store (the latest tick at or before that time). ``materialize`` loads the
offline store (the aligned Parquet) into the online store, e.g. after switching to Redis.
Exit codes: 0 found, 1 no features for the session, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mmalign.schemas import aligned

EXIT_OK, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 0, 1, 2


def parse_time(text: str) -> pd.Timestamp:
    """An integer (ns since the epoch) or an ISO-8601 time -> a UTC Timestamp."""
    try:
        return pd.Timestamp(int(text), unit="ns", tz="UTC")
    except ValueError:
        pass
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise ValueError(f"time {text!r} is neither ns since the epoch nor ISO-8601 "
                         "(e.g. 2024-05-01T12:00:00Z)") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _plain(v):
    """JSON-ready: arrays -> lists, NaN -> None, an all-NaN vector (absent) -> None."""
    if isinstance(v, (np.ndarray, list)):
        items = [_plain(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
        return None if items and all(x is None for x in items) else items
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def get_features(repo: str, session: str, at: pd.Timestamp | None = None) -> dict | None:
    """The session's feature row (online, or point-in-time ``at``); None when it has none."""
    from mmalign.encoders import feature_store as fs  # lazy: feast and the encoders (torch)
    store = fs.load_store(repo)
    if at is None:
        got = fs.read_online(store, [session])
        row = {k: v[0] for k, v in got.items()}
    else:
        df = fs.read_historical(store, pd.DataFrame({"session_id": [session],
                                                     "event_timestamp": [at]}))
        row = {k: _plain(v) for k, v in df.iloc[0].to_dict().items()}
    if row.get("tick_ns") is None:
        return None
    return {k: _plain(v) for k, v in row.items()}


def render(row: dict) -> str:
    """Human view: the tick, then per stream status, model id, dim and the first values."""
    lines = [f"session {row['session_id']}  tick_ns {row['tick_ns']}"]
    for base in sorted(aligned.embedded_streams(row)):
        vec = row[aligned.column(base, aligned.EMB)]
        dim = len(vec) if vec is not None else 0
        head = "" if vec is None else " ".join(f"{x:+.3f}" for x in vec[:4])
        status = row.get(aligned.column(base, aligned.EMB_STATUS), "")
        model = row.get(aligned.column(base, aligned.MODEL_ID)) or "-"
        lines.append(f"  {base:<14} {status or '':<22} {model:<36} dim {dim:<4} [{head} ...]")
    mask = aligned.column(aligned.FUSED, aligned.MASK)
    if mask in row:
        lines.append(f"  fused mask {row[mask]}")
    return "\n".join(lines)


def cmd_get(ns) -> int:
    warnings.simplefilter("ignore")          # Feast/dask deprecation noise
    try:
        at = parse_time(ns.at) if ns.at is not None else None
        row = get_features(ns.repo, ns.session, at)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmalign features: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if row is None:
        where = "online" if ns.at is None else f"at or before {ns.at}"
        print(f"mmalign features: session {ns.session!r} has no features {where} in "
              f"{ns.repo}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(json.dumps(row) if ns.json else render(row))
    return EXIT_OK


def cmd_materialize(ns) -> int:
    from mmalign.encoders import feature_store as fs  # lazy: feast and the encoders (torch)
    warnings.simplefilter("ignore")
    try:
        start = parse_time(ns.start) if ns.start else pd.Timestamp(0, tz="UTC")
        end = parse_time(ns.end) if ns.end else pd.Timestamp(datetime.now(UTC))
        store = fs.load_store(ns.repo)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmalign features: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # re-apply the registered definitions: creates the online tables a new store lacks
    store.apply([store.get_entity(fs.ENTITY), store.get_feature_view(fs.VIEW)])
    store.materialize(start_date=start.to_pydatetime(), end_date=end.to_pydatetime(),
                      feature_views=[fs.VIEW])
    print(f"materialized {fs.VIEW} from {start.isoformat()} to {end.isoformat()} into the "
          f"{store.config.online_store.type} online store")
    return EXIT_OK


def add_parser(sub) -> None:
    """Register `features` (get, materialize) on the `mmalign` subparsers."""
    p = sub.add_parser("features", help="read embeddings back from the Feast feature store",
                       description=__doc__.splitlines()[0])
    fsub = p.add_subparsers(dest="features_command", required=True)
    g = fsub.add_parser("get", help="a session's embeddings: latest (online) or at a time")
    g.add_argument("--repo", required=True, help="feature repo (default of a run: OUT/features)")
    g.add_argument("--session", required=True)
    g.add_argument("--at", default=None,
                   help="point-in-time: ns since the epoch or ISO-8601 (offline store)")
    g.add_argument("--json", action="store_true", help="print the row as JSON (full vectors)")
    g.set_defaults(fn=cmd_get)
    m = fsub.add_parser("materialize", help="load the aligned Parquet into the online store")
    m.add_argument("--repo", required=True)
    m.add_argument("--start", default=None, help="from (default: the epoch)")
    m.add_argument("--end", default=None, help="to (default: now)")
    m.set_defaults(fn=cmd_materialize)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmalign")
    add_parser(ap.add_subparsers(dest="command", required=True))
    ns = ap.parse_args(argv)
    return ns.fn(ns)


if __name__ == "__main__":
    sys.exit(main())
