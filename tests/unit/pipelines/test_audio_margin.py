"""An audio stream's alignment margin follows its files' own sample rate (read from their
headers before decoding), not the slowest rate allowed: at 16 kHz the margin is 0.23 s instead
of 2.15 s, and a streaming bucket closes that much sooner after its end."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from mmalign.pipelines.core import bucketing, prepare
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.manifest import load_manifest
from mmalign.transforms.align import policies as ap
from mmalign.transforms.align.join import plan_from_manifest
from mmalign.transforms.decode.audio import audio_rate


def test_margins_follow_the_files_rates(tmp_path):
    path = generate_recording(tmp_path / "rec", seed=5, duration_s=4.0, size=(96, 72),
                              session="am-1", bad_records=False)
    rec = path.parent
    assert audio_rate(str(rec / "mic.wav")) == sf.info(str(rec / "mic.wav")).samplerate
    assert audio_rate(str(rec / "cam0.mp4")) == 48000           # the camera's AAC track
    job = prepare([path], tmp_path / "out", "a")
    margins = bucketing(job).margins
    for sid, sr in (("mic", sf.info(str(rec / "mic.wav")).samplerate), ("cam0_audio", 48000)):
        want = ap.required_margin_ns("audio_window", window_ns=200_000_000,
                                     block_ns=-(-1024 * 10**9 // sr))
        assert abs(margins[("am-1", sid)] - want) < 1000, sid        # rounded up to whole us
        assert margins[("am-1", sid)] < 300_000_000
    # a file that cannot state its rate: the worst case (1024 samples at 1 kHz)
    (rec / "mic.wav").write_bytes(b"RIFF")
    worst = bucketing(prepare([path], tmp_path / "out", "b")).margins[("am-1", "mic")]
    assert worst > 2_000_000_000


def test_rates_outside_what_validation_accepts_are_ignored(tmp_path):
    path = generate_recording(tmp_path / "rec", seed=5, duration_s=4.0, size=(96, 72),
                              session="am-2", bad_records=False)
    m = load_manifest(path)
    for rate, block in ((100, None), (500_000, None), (8000, 128_000_000),
                        (44100, -(-1024 * 10**9 // 44100))):
        plan = plan_from_manifest(m, None, {"mic": rate})
        mic = next(s for s in plan.streams if s.stream_id == "mic")
        assert mic.block_ns == block, rate


def test_audio_rate_reads_headers_without_decoding(tmp_path):
    for name, sr in (("a.wav", 44100), ("b.flac", 8000)):
        sf.write(str(tmp_path / name), np.zeros(800, np.float32), sr)
        assert audio_rate(str(tmp_path / name)) == sr
    assert audio_rate(str(tmp_path / "missing.wav")) is None
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    assert audio_rate(str(tmp_path / "junk.mp4")) is None
