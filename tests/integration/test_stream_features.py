"""The streaming job with encoders and the Feast sink, on a real Kafka broker and Beam Prism:
the streamed embeddings equal the backfill's, and the online store holds each session's
latest tick, read back through Feast's own SDK."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mmalign.encoders import feature_store as fs
from mmalign.pipelines import backfill, stream
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned
from tests.e2e_checks import assert_online_holds

pytestmark = pytest.mark.slow
SESSION = "sfeat-001"
STREAMS = ["cam0", "cam1", "imu"]
ENCODERS = {"video": {"max_batch_size": 16, "device": "cpu"},
            "sensor": {"device": "cpu", "window_ms": 200},
            "fusion": "concat",
            "feature_store": {"enabled": True}}


@pytest.fixture(scope="module")
def run(fresh_topics, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream_feat")
    base = generate_recording(tmp / "rec", seed=4, duration_s=5.0, size=(96, 72), fps=10.0,
                              imu_hz=100.0, session=SESSION, bad_records=False)
    data = yaml.safe_load(base.read_text())
    data["encoders"] = ENCODERS
    manifest = base.with_name("manifest.enc.yaml")
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    backfill.run([manifest], tmp / "batch", run_id="batch")

    settings, tag = fresh_topics()
    publish(manifest, settings, run_id="publish")
    opts = stream.StreamOptions(group_id=f"g-{tag}", stop_after_idle_s=3.0)
    summary = stream.run([manifest], tmp / "stream", settings, opts, run_id="s1")
    return {"tmp": tmp, "summary": summary,
            "batch": read_aligned(tmp / "batch" / "aligned"),
            "streamed": read_aligned(tmp / "stream" / "aligned")}


def test_streamed_embeddings_equal_the_backfill(run):
    batch, streamed = run["batch"], run["streamed"]
    assert batch.num_rows > 20
    assert streamed.column("tick_ns").equals(batch.column("tick_ns"))
    for s in STREAMS:
        assert streamed.column(f"{s}__model_id").equals(batch.column(f"{s}__model_id")), s
        assert streamed.column(f"{s}__emb_status").equals(batch.column(f"{s}__emb_status")), s
        assert "ok" in streamed.column(f"{s}__emb_status").to_pylist(), s
        np.testing.assert_allclose(np.stack(streamed.column(f"{s}__emb").to_numpy(False)),
                                   np.stack(batch.column(f"{s}__emb").to_numpy(False)),
                                   rtol=1e-5, atol=1e-6, err_msg=s)
    assert "cam0_audio__emb" not in streamed.schema.names
    assert run["summary"]["counters"].get("sink.online.rows", 0) > 0


def test_online_store_holds_the_latest_streamed_tick(run):
    store = fs.load_store(run["tmp"] / "stream" / "features")
    last = run["streamed"].slice(run["streamed"].num_rows - 1).to_pylist()[0]
    assert "fused__emb" in last
    assert_online_holds(fs.read_online(store, [SESSION]), last, STREAMS)
