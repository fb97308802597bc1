"""`mmalign search` (pipelines/search.py) on aligned outputs written here: exact cosine top-k
against numpy, ticks without embeddings and other models' vectors never returned, --like's
own tick excluded, --other-sessions, the command's exit codes and JSON."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmalign.pipelines import cli, search

DIM = 16


def write_part(out, session: str, bucket: int, ticks, vectors, model_ids, texts=None,
               stream: str = "cam0"):
    folder = out / "aligned" / session
    folder.mkdir(parents=True, exist_ok=True)
    ticks = np.asarray(ticks, np.int64)
    cols = {"session_id": pa.array([session] * len(ticks)),
            "tick_ns": pa.array(ticks),
            "tick_time": pa.array(ticks + 1_767_258_000 * 10**9, pa.timestamp("ns", "UTC")),
            f"{stream}__emb": pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(vectors, np.float32).reshape(-1)), DIM),
            f"{stream}__model_id": pa.array(model_ids, pa.string())}
    if texts is not None:
        cols[f"{stream}__text"] = pa.array(texts, pa.string())
    pq.write_table(pa.table(cols), folder / f"part-{bucket:08d}.parquet")


@pytest.fixture
def output(tmp_path):
    """Two sessions, two buckets each; session b's bucket 1 has NaN rows (no embedding) and
    rows from another model."""
    rng = np.random.default_rng(4)
    vecs = {}
    for s in ("a", "b"):
        for b in (0, 1):
            v = rng.normal(size=(50, DIM)).astype(np.float32)
            ids = ["m@1"] * 50
            if (s, b) == ("b", 1):
                v[:5] = np.nan
                ids[5:10] = ["other@2"] * 5
            ticks = np.arange(50) * 100_000_000 + b * 5_000_000_000
            write_part(tmp_path, s, b, ticks, v, ids)
            vecs[(s, b)] = (ticks, v, ids)
    return tmp_path, vecs


def _brute(vecs, q, k, skip=None):
    rows = []
    for (s, _), (ticks, v, ids) in vecs.items():
        for t, x, i in zip(ticks, v, ids):
            if i == "m@1" and np.isfinite(x).all() and (s, int(t)) != skip:
                rows.append((float(x @ q / np.linalg.norm(x) / np.linalg.norm(q)), s, int(t)))
    rows.sort(key=lambda r: -r[0])
    return rows[:k]


def test_top_k_is_exact_cosine():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(1000, DIM)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = rng.normal(size=DIM)
    idx, scores = search.top_k(m, q, 10)
    want = np.argsort(-(m @ (q / np.linalg.norm(q))))[:10]
    assert idx.tolist() == want.tolist()
    assert np.all(np.diff(scores) <= 0)
    allowed = np.arange(1000) % 2 == 0
    idx, _ = search.top_k(m, q, 2000, allowed)
    assert len(idx) == 500 and (idx % 2 == 0).all()


def test_like_matches_brute_force_and_skips_itself(output):
    out, vecs = output
    res = search.search(str(out), like="a@2050000000", k=7)    # tick 2.0 s of session a
    assert res["query"] == {"session_id": "a", "tick_ns": 2_000_000_000}
    ticks, v, _ = vecs[("a", 0)]
    q = v[20]
    want = _brute(vecs, q, 7, skip=("a", 2_000_000_000))
    got = [(r["score"], r["session_id"], r["tick_ns"]) for r in res["results"]]
    assert [g[1:] for g in got] == [w[1:] for w in want]
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], atol=1e-5)
    assert res["searched"] == 200 - 5 - 5 - 1                   # NaN, other model, itself
    other = search.search(str(out), like="a@2050000000", k=50, other_sessions=True)
    assert {r["session_id"] for r in other["results"]} == {"b"}


def test_other_models_and_missing_vectors_are_never_results(output):
    out, vecs = output
    res = search.search(str(out), like="b@6500000000", k=500)   # a tick of b's bucket 1
    returned = {(r["session_id"], r["tick_ns"]) for r in res["results"]}
    ticks = vecs[("b", 1)][0]
    assert not returned & {("b", int(t)) for t in ticks[:10]}
    assert len(returned) == 189 and res["model_id"] == "m@1"
    # a tick embedded by the other model is compared with that model's vectors only
    res = search.search(str(out), like="b@5500000000", k=500)
    assert res["model_id"] == "other@2"
    assert [r["tick_ns"] for r in res["results"]] != [] and \
        {r["tick_ns"] for r in res["results"]} <= {int(t) for t in ticks[5:10]} - {5_500_000_000}
    assert len(res["results"]) == 4


def test_bad_inputs_are_exit_2_with_a_sentence(output, capsys):
    out, _ = output
    assert cli.main(["search", "--out", str(out), "--like", "a:12"]) == 2
    assert "SESSION@TICK_NS" in capsys.readouterr().err
    assert cli.main(["search", "--out", str(out), "--like", "a@100", "--stream", "mic"]) == 2
    assert "mic" in capsys.readouterr().err
    assert cli.main(["search", "--out", str(out), "--like", "zz@100"]) == 2
    assert "zz" in capsys.readouterr().err
    assert cli.main(["search", "--out", str(out / "nothing"), "--like", "a@100"]) == 2
    assert "no aligned output" in capsys.readouterr().err


def test_command_prints_json(output, capsys):
    out, vecs = output
    assert cli.main(["search", "--out", str(out), "--like", "b@0", "-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stream"] == "cam0" and res["model_id"] == "m@1" and len(res["results"]) == 3
    want = _brute(vecs, vecs[("b", 0)][1][0], 3, skip=("b", 0))
    assert [(r["session_id"], r["tick_ns"]) for r in res["results"]] == [w[1:] for w in want]
