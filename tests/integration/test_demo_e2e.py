"""`mmalign demo` end to end, in one CLI process: the whole mission on the generated recording
(decode -> validate -> sync -> align -> register -> encode -> Parquet + Feast's SQLite online
store), then the printed retrieval example checked against the output."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

SESSION = "demo-001"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # a relative --out run from another folder, as `make demo` runs it (a relative OUT once
    # put the feature repo under the recording's folder)
    work = tmp_path_factory.mktemp("demo")
    out = work / "out" / "demo"
    p = subprocess.run([sys.executable, "-m", "mmalign.pipelines.cli", "demo", "--out",
                        "out/demo", "--duration", "6", "--no-progress"], cwd=work,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, p.stdout


@pytest.mark.slow
def test_demo_writes_embeddings_for_every_encoded_stream(demo):
    out, stdout = demo
    manifest = yaml.safe_load((out / "recording" / "manifest.yaml").read_text())
    skipped = {s for s, spec in manifest["encoders"]["streams"].items() if spec is False}
    encoded = [s["id"] for s in manifest["streams"] if s["id"] not in skipped]
    assert set(encoded) == {"cam0", "cam0_audio", "mic", "transcript", "imu"}
    table = pq.read_table(out / "aligned" / SESSION)
    for s in encoded:
        assert f"{s}__emb" in table.column_names, s
        status = table.column(f"{s}__emb_status").to_pylist()
        ok = [i for i, v in enumerate(status) if v == "ok"]
        assert ok, (s, set(status))
        vecs = np.array(table.column(f"{s}__emb").take(ok).to_pylist(), np.float32)
        assert np.isfinite(vecs).all() and np.ptp(vecs, axis=0).max() > 0, s
    assert "cam1__emb" not in table.column_names
    assert "cam1__H" in table.column_names                  # the register stage ran
    # video: every tick with a cam0 frame is encoded
    assert table.column("cam0__emb_status").to_pylist().count("ok") == table.num_rows
    assert f"embeddings: out/demo/aligned/{SESSION}/part-*.parquet" in stdout     # as given
    assert "feature store: Feast repo out/demo/features " in stdout


@pytest.mark.slow
def test_demo_online_store_answers_through_feast(demo):
    from feast import FeatureStore

    out, stdout = demo
    repo = out / "features"
    assert (repo / "data" / "online_store.db").is_file()
    store = FeatureStore(repo_path=str(repo))
    got = store.get_online_features(
        features=["tick_embeddings:tick_ns", "tick_embeddings:cam0__emb",
                  "tick_embeddings:transcript__model_id"],
        entity_rows=[{"session_id": SESSION}]).to_dict()
    ticks = pq.read_table(out / "aligned" / SESSION, columns=["tick_ns"]).column(
        "tick_ns").to_pylist()
    assert got["tick_ns"] == [max(ticks)]
    assert len(got["cam0__emb"][0]) == 1280
    assert got["transcript__model_id"][0] is None or \
        got["transcript__model_id"][0].startswith("all-MiniLM-L6-v2@")
    assert f"holding {SESSION}'s latest tick {max(ticks)}" in stdout


@pytest.mark.slow
def test_demo_retrieval_example_names_existing_ticks(demo):
    out, stdout = demo
    query = re.search(r"retrieval: mmalign search --out \S+ --text '([^']+)' -k 3", stdout)
    assert query, stdout[-2000:]
    hits = re.findall(r"^\s+\d\s+([01]\.\d{4})\s+(\S+)@(\d+)\s.*'([^']*)'$", stdout, re.M)
    assert len(hits) == 3, stdout[-2000:]
    table = pq.read_table(out / "aligned" / SESSION,
                          columns=["session_id", "tick_ns", "transcript__text"])
    text_at = dict(zip(table.column("tick_ns").to_pylist(),
                       table.column("transcript__text").to_pylist()))
    for _score, session, tick, text in hits:
        assert session == SESSION and int(tick) in text_at, (session, tick)
        # the printed text is the tick's transcript text, and the query's own text ranks first
        assert text_at[int(tick)] == text
    assert hits[0][3] == query.group(1) and float(hits[0][0]) > 0.99
