"""EncodeModality through RunInference on the DirectRunner: embeddings, missing data, dead
letters (preprocess, inference, load) and per-tick tables with fusion."""

from __future__ import annotations

import textwrap

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from mmalign.encoders.fusion import embeddings_table
from mmalign.encoders.handlers import EncodeModality, EncodeRequest, encode_requests
from mmalign.encoders.registry import EncoderConfig


def _check(fn):
    """assert_that matcher that runs ``fn`` on the collected elements."""
    def match(actual):
        fn(list(actual))
    return match


def _video_requests():
    rng = np.random.default_rng(11)
    reqs = [EncodeRequest("s1", "cam0", "video", 1_000_000 * i,
                          rng.integers(0, 256, (72, 96, 3), dtype=np.uint8),
                          source_uri="file:///cam0.mp4", position=f"frame={i}")
            for i in range(10)]
    reqs.append(EncodeRequest("s1", "cam0", "video", 10_000_000, np.zeros((8, 8), np.float32),
                              source_uri="file:///cam0.mp4", position="frame=10"))
    reqs.append(EncodeRequest("s1", "cam0", "video", 11_000_000, None))
    return reqs


def test_video_stage_matches_direct_encoding_and_dead_letters_bad_frames():
    cfg = EncoderConfig(modality="video", device="cpu", min_batch_size=4, max_batch_size=4)
    reqs = _video_requests()
    expected, _ = encode_requests(cfg, reqs)
    want = {e.tick_ns: e for e in expected}

    def check_embeddings(embs):
        assert len(embs) == 11
        for e in embs:
            w = want[e.tick_ns]
            assert e.model_id == w.model_id and e.missing_reason == w.missing_reason
            if w.vector is None:
                assert e.vector is None and e.missing_reason == "no_video_data"
            else:
                np.testing.assert_allclose(e.vector, w.vector, rtol=1e-5, atol=1e-6)
                assert e.dim == 1280 and e.model_id.startswith("efficientnet-lite0-imagenet@")

    def check_dead(dead):
        assert len(dead) == 1
        d = dead[0]
        assert (d.stage, d.reason, d.position, d.run_id) == ("encode", "preprocess_failed",
                                                            "frame=10", "run-1")
        assert d.event_time_ns == 10_000_000 and "uint8" in d.message

    with beam.Pipeline() as p:
        out = p | beam.Create(reqs) | EncodeModality(cfg, run_id="run-1")
        assert_that(out["embeddings"], _check(check_embeddings), label="embeddings")
        assert_that(out["dead_letters"], _check(check_dead), label="dead")


def test_inference_failure_isolated_to_the_bad_example(tmp_path, monkeypatch):
    """A model that fails on some inputs: only those become dead letters (in = out + dead)."""
    (tmp_path / "picky_encoder.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Picky(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.proj = nn.Linear(3, 8)
            def forward(self, x):
                if (x[:, 0, 0] > 50).any():
                    raise RuntimeError("value out of the model's range")
                return self.proj(x.mean(dim=2))

        def make():
            return Picky()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = EncoderConfig(modality="sensor", source="module", target="picky_encoder:make",
                        preprocess={"channels": 3, "mean": [0, 0, 0], "std": [1, 1, 1]},
                        device="cpu", min_batch_size=3, max_batch_size=3)
    rng = np.random.default_rng(3)
    reqs = [EncodeRequest("s1", "imu", "sensor", i, rng.normal(size=(20, 3))) for i in range(6)]
    reqs[4] = EncodeRequest("s1", "imu", "sensor", 4, np.full((20, 3), 100.0))

    def check_embeddings(embs):
        assert sorted(e.tick_ns for e in embs) == [0, 1, 2, 3, 5]
        assert all(e.dim == 8 and e.vector.dtype == np.float32 for e in embs)

    def check_dead(dead):
        assert [(d.event_time_ns, d.reason, d.error_class) for d in dead] == [
            (4, "inference_failed", "RuntimeError")]

    with beam.Pipeline() as p:
        out = p | beam.Create(reqs) | EncodeModality(cfg)
        assert_that(out["embeddings"], _check(check_embeddings), label="embeddings")
        assert_that(out["dead_letters"], _check(check_dead), label="dead")


def test_loader_failures_and_wrong_modality_are_dead_letters():
    cfg = EncoderConfig(modality="sensor", kwargs={"channels": 2}, device="cpu")
    rows = [{"session_id": "s1", "tick_ns": i, "window": np.ones((8, 2)) * i} for i in range(4)]
    rows.append({"session_id": "s1", "tick_ns": 99})                 # no window: KeyError
    rows.append({"session_id": "s1", "tick_ns": 7, "window": np.ones((8, 2)), "audio": True})

    def load(row):
        modality = "audio" if row.get("audio") else "sensor"
        return EncodeRequest(row["session_id"], "imu", modality, row["tick_ns"], row["window"],
                             sample_rate=100 if modality == "audio" else None)

    def check_dead(dead):
        assert sorted(d.reason for d in dead) == ["load_failed", "wrong_modality"]

    def check_embeddings(embs):
        assert sorted(e.tick_ns for e in embs) == [0, 1, 2, 3]
        assert all(np.isfinite(e.vector).all() for e in embs)

    with beam.Pipeline() as p:
        out = p | beam.Create(rows) | EncodeModality(cfg, load=load)
        assert_that(out["dead_letters"], _check(check_dead), label="dead")
        assert_that(out["embeddings"], _check(check_embeddings), label="embeddings")


def test_two_modalities_fused_into_tick_tables():
    # "mean" fusion needs equal dimensions: the random-projection baselines take a dim
    vcfg = EncoderConfig(modality="video", name="random-projection", kwargs={"dim": 32},
                         device="cpu")
    scfg = EncoderConfig(modality="sensor", name="random-projection",
                         kwargs={"channels": 2, "dim": 32}, device="cpu")
    rng = np.random.default_rng(5)
    video_reqs = [EncodeRequest("s1", "cam0", "video", t, rng.integers(0, 256, (40, 40, 3),
                                                                       dtype=np.uint8))
                  for t in (0, 100, 200)]
    sensor_reqs = [EncodeRequest("s1", "imu", "sensor", t, rng.normal(size=(10, 2)))
                   for t in (0, 200)]
    streams = {"cam0": 32, "imu": 32}
    direct = embeddings_table(encode_requests(vcfg, video_reqs)[0]
                              + encode_requests(scfg, sensor_reqs)[0], streams, "mean")

    def check_tables(tables):
        assert len(tables) == 1
        t = tables[0]
        assert t.schema.equals(direct.schema)
        assert t.column("imu__emb_status").to_pylist() == ["ok", "no_embedding", "ok"]
        assert t.column("fused__mask").to_pylist() == [[True, True], [True, False],
                                                       [True, True]]
        np.testing.assert_allclose(np.array(t.column("fused__emb").to_pylist()),
                                   np.array(direct.column("fused__emb").to_pylist()),
                                   rtol=1e-5, atol=1e-6)

    with beam.Pipeline() as p:
        v = p | "V" >> beam.Create(video_reqs) | "EncV" >> EncodeModality(vcfg)
        s = p | "S" >> beam.Create(sensor_reqs) | "EncS" >> EncodeModality(scfg)
        tables = ((v["embeddings"], s["embeddings"]) | beam.Flatten()
                  | beam.Map(lambda e: (e.session_id, e)) | beam.GroupByKey()
                  | beam.MapTuple(lambda _, es: embeddings_table(es, streams, "mean")))
        assert_that(tables, _check(check_tables))


@pytest.mark.parametrize("bad", [{"min_batch_size": 8, "max_batch_size": 4},
                                 {"source": "torchscript"}])
def test_bad_config_rejected_before_the_pipeline(bad):
    with pytest.raises(ValueError):
        EncoderConfig(modality="video", **bad)
