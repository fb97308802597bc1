"""Audio decoders on real files: wav and flac (soundfile), AAC in mp4/m4a (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.audio import ARROW_SCHEMA
from mmalign.schemas.chunk import Chunk
from mmalign.transforms.decode.audio import (
    decode_audio_file,
    decode_audio_track,
    load_audio,
    sample_ns,
)
from tests.media import espeak_wav

SR = 16000


def stereo(n: int, sr: int = SR) -> np.ndarray:
    t = np.arange(n) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1
    return np.stack([left, right], axis=1)


def run(gen) -> tuple[list[Chunk], list[DeadLetter]]:
    out = list(gen)
    assert all(isinstance(o, (Chunk, DeadLetter)) for o in out)
    return ([o for o in out if isinstance(o, Chunk)], [o for o in out if isinstance(o, DeadLetter)])


def table(chunks: list[Chunk]) -> pa.Table:
    return pa.Table.from_batches([c.data for c in chunks], schema=ARROW_SCHEMA)


def flat_pcm(chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([c.data.column("pcm").flatten().to_numpy() for c in chunks])


@pytest.mark.parametrize("fmt,subtype", [("wav", "PCM_16"), ("flac", "PCM_24")])
def test_wav_flac_blocks_times_and_pcm(tmp_path, fmt, subtype):
    n = 3 * 16 * 1024 + 500
    x = stereo(n)
    path = tmp_path / f"a.{fmt}"
    sf.write(path, x, SR, subtype=subtype)
    chunks, dead = run(decode_audio_file(str(path), session_id="s", stream_id="mic",
                                         options={"start_ns": 1_000}))
    assert dead == []
    t = table(chunks)
    # 16 blocks of 1024 per chunk (~1 s at 16 kHz), last block partial
    assert [c.num_records for c in chunks] == [16, 16, 16, 1]
    assert t.column("n_samples").to_pylist()[-1] == 500
    pos = np.arange(0, n, 1024)
    assert t.column("pos").to_pylist() == pos.tolist()
    assert t.column("t_ns").to_pylist() == [1_000 + round(Fraction(int(p) * 10**9, SR))
                                            for p in pos]
    want, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_allclose(flat_pcm(chunks), want.mean(axis=1), atol=1e-6)
    assert flat_pcm(chunks).dtype == np.float32
    m = chunks[0].meta
    assert (m["sample_rate"], m["channels"], m["codec"]) == (SR, 2, f"{fmt}/{subtype}".lower())
    assert [c.prev_t_ns for c in chunks] == [None] + [int(c.t_ns().max()) for c in chunks[:-1]]
    np.testing.assert_allclose(load_audio(str(path), 5000, 7000), want.mean(axis=1)[5000:7000],
                               atol=1e-6)


def test_sample_ns_exact_for_long_recordings():
    first = np.array([0, 1, 44100 * 3600 * 30 + 7], np.int64)     # 30 hours in
    got = sample_ns(first, 44100).tolist()
    assert got == [round(Fraction(int(f) * 10**9, 44100)) for f in first]


def write_av(path: Path, n_samples: int, *, with_video: bool, sr: int = 48000) -> None:
    with av.open(str(path), "w") as c:
        if with_video:
            v = c.add_stream("libx264", rate=10)
            v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "stereo"
        x = stereo(n_samples, sr).astype(np.float32)
        for i, s0 in enumerate(range(0, n_samples, 1024)):
            blk = np.ascontiguousarray(x[s0:s0 + 1024].T)
            fr = av.AudioFrame.from_ndarray(blk, format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = sr, s0, Fraction(1, sr)
            for pk in a.encode(fr):
                c.mux(pk)
            if with_video and i % 5 == 0:
                vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                vf.pts, vf.time_base = i // 5, Fraction(1, 10)
                for pk in v.encode(vf):
                    c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
        if with_video:
            for pk in v.encode():
                c.mux(pk)


def test_aac_track_of_an_mp4(tmp_path):
    n = 48000 * 2
    path = tmp_path / "clip.mp4"
    write_av(path, n, with_video=True)
    chunks, dead = run(decode_audio_track(str(path), session_id="s", stream_id="mic"))
    assert dead == []
    t = table(chunks)
    total = sum(t.column("n_samples").to_pylist())
    assert abs(total - n) <= 2048                       # AAC priming/padding
    m = chunks[0].meta
    assert (m["sample_rate"], m["channels"], m["codec"]) == (48000, 2, "aac")
    start = m["start_ns"]
    assert t.column("t_ns").to_pylist() == (start + sample_ns(
        np.asarray(t.column("pos").to_pylist()), 48000)).tolist()
    assert [c.num_records for c in chunks[:2]] == [47, 47]          # round(48000/1024) blocks
    pcm = flat_pcm(chunks)
    assert np.abs(pcm).max() <= 1.0
    # the mono mix is 0.4 sin(440 Hz) + 0.05: check tone and level in the steady middle
    mid = pcm[20000:68000]
    spec = np.abs(np.fft.rfft(mid - mid.mean()))
    assert abs(np.argmax(spec) * 48000 / len(mid) - 440) < 2
    assert 0.25 < np.sqrt(np.mean((mid - mid.mean()) ** 2)) < 0.32
    np.testing.assert_array_equal(load_audio(str(path), 30000, 31000, kind="track"),
                                  pcm[30000:31000])


def test_m4a_audio_file_goes_through_pyav(tmp_path):
    path = tmp_path / "a.m4a"
    write_av(path, 48000, with_video=False)
    chunks, dead = run(decode_audio_file(str(path), session_id="s", stream_id="mic",
                                         block_samples=4800))
    assert dead == [] and chunks[0].meta["codec"] == "aac"
    assert set(table(chunks).column("n_samples").to_pylist()[:-1]) == {4800}


def test_bad_audio_files(tmp_path):
    garbage = tmp_path / "x.wav"
    garbage.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    video_only = tmp_path / "v.mp4"
    with av.open(str(video_only), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            vf.pts = i
            for pk in v.encode(vf):
                c.mux(pk)
        for pk in v.encode():
            c.mux(pk)
    cases = [(decode_audio_file, garbage, "corrupt_file"),
             (decode_audio_track, video_only, "no_audio_stream"),
             (decode_audio_track, tmp_path / "none.mp4", "missing_file")]
    for fn, p, reason in cases:
        chunks, dead = run(fn(str(p), session_id="s", stream_id="mic"))
        assert chunks == [] and [d.reason for d in dead] == [reason]
        assert str(p) in dead[0].message and dead[0].stage == "decode"


def test_truncated_wav_keeps_the_samples_it_has(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, stereo(SR), SR, subtype="PCM_16")
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + 4 * 10_000])            # header + 10000 stereo frames
    chunks, dead = run(decode_audio_file(str(cut), session_id="s", stream_id="mic"))
    got = sum(table(chunks).column("n_samples").to_pylist())
    assert got == 10_000
    # libsndfile trusts the file size; the header's data size says 16000 frames = 16 blocks
    assert [(d.reason, d.records) for d in dead] == [("truncated", 16 - 10)]
    assert dead[0].attrs["declared_samples"] == "16000"
    assert dead[0].attrs["decoded_samples"] == "10000"
    assert sum(c.num_records for c in chunks) + dead[0].records == 16


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_float_samples_out_of_range_are_kept_not_clipped(tmp_path, subtype):
    x = np.full((3000, 2), 0.25)
    x[10] = [3.0, 3.0]                  # mono 3.0
    x[20] = [np.inf, np.inf]            # mono inf
    x[30] = [np.inf, -np.inf]           # mono NaN
    x[40] = [np.nan, 0.5]               # mono NaN
    x[50] = [-7.5, 0.5]                 # mono -3.5
    p = tmp_path / "f.wav"
    sf.write(p, x, SR, subtype=subtype)
    chunks, dead = run(decode_audio_file(str(p), session_id="s", stream_id="mic",
                                         block_samples=100))
    assert dead == []
    pcm = flat_pcm(chunks)
    assert pcm[10] == 3.0 and pcm[20] == np.inf and pcm[50] == -3.5
    assert np.isnan(pcm[30]) and np.isnan(pcm[40])
    assert np.all(pcm[[0, 11, 2999]] == 0.25)
    got = load_audio(str(p), 0, 60)
    assert got[10] == 3.0 and got[20] == np.inf and np.isnan(got[30])


def test_espeak_speech_wav(tmp_path):
    p = espeak_wav(tmp_path / "say.wav", "decode every block")
    info = sf.info(str(p))
    chunks, dead = run(decode_audio_file(str(p), session_id="s", stream_id="mic"))
    assert dead == []
    assert sum(table(chunks).column("n_samples").to_pylist()) == info.frames
    assert sum(c.num_records for c in chunks) == -(-info.frames // 1024)


def test_decode_file_dispatches_audio_streams(tmp_path):
    from mmalign.schemas.manifest import Stream
    from mmalign.transforms.decode.stage import decode_file

    mp4 = tmp_path / "clip.mp4"
    write_av(mp4, 48000, with_video=True)
    wav = tmp_path / "a.wav"
    sf.write(wav, stereo(SR), SR)
    for p, codec in ((mp4, "aac"), (wav, "wav/pcm_16")):
        s = Stream(id="mic", modality="audio", files=[str(p)], options={"block_samples": 512})
        chunks, dead = run(decode_file(s, p, session_id="s"))
        assert dead == [] and chunks[0].meta["codec"] == codec
        assert table(chunks).column("n_samples")[0].as_py() == 512
