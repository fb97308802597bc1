"""The broken inputs: every case the hardening issue names, and the categories around them.

Manifest-level cases (``exit=2``) must be refused before anything runs, with one sentence.
Data-level cases must run and turn every broken record into a dead letter with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
import yaml
from corpus import (
    Case,
    cut,
    edit_lines,
    float_wav,
    garble,
    raw_manifest,
    replace,
    sensor_rows,
    srt_cue,
    stream,
)

S = 1_000_000_000


def _m(fn):
    """A manifest edit as a case build."""
    return lambda d, m: fn(m)


def _cal(text: str):
    def build(d: Path, m: dict):
        replace(d / "calibration.yaml", text.encode())
    return build


def _symlink_out(d: Path, m: dict):
    secret = d.parent / "outside-secret.csv"
    secret.write_text("t_ns,ax\n1,2\n")
    (d / "imu.csv").unlink()
    (d / "imu.csv").symlink_to(secret)


def _alias_bomb(d: Path, m: dict):
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("session: bomb\nstreams: *a11\nalignment: {ticks: {rate_hz: 10}}")
    raw_manifest(d, "\n".join(lines) + "\n")


def _deep_json(d: Path, m: dict):
    (d / "deep.json").write_text("[" * 200_000 + "]" * 200_000)


def _huge_manifest(d: Path, m: dict):
    m["streams"][0]["options"] = {"channels": ["x" * 64] * 400_000}


CONFIG_CASES = [
    # unknown fields at every level
    Case("unknown-top", "unknown field", _m(lambda m: m.update(sesion="x")), 2, "sesion"),
    Case("unknown-stream", "unknown field", _m(lambda m: m["streams"][0].update(clok="cam0")),
         2, "clok"),
    Case("unknown-option", "unknown field",
         _m(lambda m: stream(m, "mic").setdefault("options", {}).update(strat_ns=150_000_000)),
         2, "strat_ns", streams=("cam0", "mic")),
    Case("unknown-policy-key", "unknown field",
         _m(lambda m: m["alignment"]["policies"].update(mic={"policy": "audio_window",
                                                             "windw_ms": 100})),
         2, "windw_ms", streams=("cam0", "mic")),
    Case("unknown-ticks-key", "unknown field",
         _m(lambda m: m["alignment"]["ticks"].update(anchr="cam0")), 2, "anchr"),
    Case("unknown-alignment-key", "unknown field",
         _m(lambda m: m["alignment"].update(bucket="4")), 2, "bucket"),
    Case("unknown-encoder-key", "unknown field",
         _m(lambda m: m.update(encoders={"video": {"batchsize": 4}})), 2, "batchsize"),
    Case("unknown-sync-key", "unknown field",
         _m(lambda m: stream(m, "imu").update(sync={"reference": "cam0", "max_ofset_s": 3})),
         2, "max_ofset_s", streams=("cam0", "imu")),
    # paths
    Case("base-dir-etc", "path traversal", _m(lambda m: m.update(base_dir="/etc")), 2,
         "base_dir"),
    Case("files-traversal", "path traversal",
         _m(lambda m: stream(m, "imu").update(files=["../../../../etc/passwd"])), 2,
         "allowed roots", streams=("cam0", "imu")),
    Case("files-absolute", "absolute path",
         _m(lambda m: stream(m, "imu").update(files=["/etc/passwd"])), 2, "allowed roots",
         streams=("cam0", "imu")),
    Case("files-symlink-out", "symlink", _symlink_out, 2, "allowed roots",
         streams=("cam0", "imu")),
    Case("image-dir-out", "path traversal",
         _m(lambda m: stream(m, "cam1").update(options={"image_dir": "/etc"})), 2,
         "image_dir", streams=("cam0", "cam1")),
    Case("calibration-out", "path traversal",
         _m(lambda m: m.update(calibration="/etc/hostname")), 2, "allowed roots"),
    Case("missing-file", "missing input",
         _m(lambda m: stream(m, "imu").update(files=["imu.csv", "nope.csv"])), 2, "nope.csv",
         streams=("cam0", "imu")),
    Case("file-is-dir", "missing input",
         _m(lambda m: stream(m, "imu").update(files=["cam1"])), 2, "cam1",
         streams=("cam0", "imu")),
    Case("missing-calibration", "missing input",
         _m(lambda m: m.update(calibration="nope.yaml")), 2, "nope.yaml"),
    # options and formats
    Case("chunk-rows-zero", "wrong schema",
         _m(lambda m: stream(m, "imu")["options"].update(chunk_rows=0)), 2, "chunk_rows",
         streams=("cam0", "imu")),
    Case("wrong-format", "wrong schema",
         _m(lambda m: stream(m, "imu").update(format="xlsx")), 2, "xlsx",
         streams=("cam0", "imu")),
    Case("no-decoder-for-extension", "wrong schema",
         _m(lambda m: stream(m, "imu").update(files=["README.txt"])), 2, "README.txt",
         streams=("cam0", "imu")),
    Case("option-wrong-type", "wrong schema",
         _m(lambda m: stream(m, "imu")["options"].update(channels="ax")), 2, "channels",
         streams=("cam0", "imu")),
    Case("modality-unknown", "wrong schema",
         _m(lambda m: m["streams"][0].update(modality="lidar")), 2, "modality"),
    Case("bucket-zero", "wrong schema", _m(lambda m: m["alignment"].update(bucket_s=0)), 2,
         "bucket_s"),
    Case("bucket-narrower-than-margin", "wrong schema",
         _m(lambda m: m["alignment"].update(bucket_s=0.3)), 2, "bucket_s",
         streams=("cam0", "mic")),
    Case("rate-nan", "NaN", _m(lambda m: m["alignment"].update(ticks={"rate_hz": float("nan")})),
         2, "rate_hz"),
    Case("tolerance-negative", "wrong schema",
         _m(lambda m: m["alignment"]["policies"].update(cam0={"policy": "nearest",
                                                              "tolerance_ms": -5})),
         2, "tolerance_ms"),
    Case("anchor-unknown", "wrong schema",
         _m(lambda m: m["alignment"].update(ticks={"anchor": "cam9"})), 2, "cam9"),
    Case("no-streams", "wrong schema", _m(lambda m: m.update(streams=[])), 2, "streams"),
    # hostile ids
    Case("session-dotdot", "hostile id", _m(lambda m: m.update(session="..")), 2, "session"),
    Case("session-slash", "hostile id", _m(lambda m: m.update(session="../evil")), 2,
         "session"),
    Case("session-absolute", "hostile id", _m(lambda m: m.update(session="/tmp/evil")), 2,
         "session"),
    Case("stream-id-slash", "hostile id", _m(lambda m: m["streams"][0].update(id="a/b")), 2,
         "id"),
    Case("duplicate-stream-ids", "hostile id",
         _m(lambda m: m["streams"].append(dict(m["streams"][0]))), 2, "unique"),
    Case("run-id-dotdot", "hostile id", lambda d, m: None, 2, "run", args=("--run-id", "..")),
    Case("run-id-absolute", "hostile id", lambda d, m: None, 2, "run",
         args=("--run-id", "/tmp")),
    Case("run-id-slash", "hostile id", lambda d, m: None, 2, "run", args=("--run-id", "a/../b")),
    # syntax-level
    Case("alias-bomb", "alias bomb", _alias_bomb, 2, "alias"),
    Case("deep-json", "oversize", _deep_json, 2, "deep.json", manifest="deep.json"),
    Case("huge-manifest", "oversize", _huge_manifest, 2, "manifest",
         streams=("cam0",)),
    Case("not-a-mapping", "wrong schema", lambda d, m: raw_manifest(d, "- a\n- b\n"), 2,
         "mapping"),
    Case("bad-yaml", "garbage", lambda d, m: raw_manifest(d, "session: [unclosed\n"), 2,
         "YAML"),
    Case("not-utf8", "garbage", lambda d, m: replace(d / "manifest.yaml", b"\xff\xfe\x00bad")
         or (d / "manifest.yaml.raw").write_text(""), 2, "UTF-8"),
    # broken calibrations
    Case("cal-offset-nan", "broken calibration", _cal("clocks:\n  cam0: {offset_ms: .nan}\n"),
         2, "offset_ms"),
    Case("cal-offset-inf", "broken calibration", _cal("clocks:\n  cam0: {offset_ms: .inf}\n"),
         2, "offset_ms"),
    Case("cal-offset-huge", "broken calibration", _cal("clocks:\n  cam0: {offset_ns: 1e30}\n"),
         2, "offset_ns"),
    Case("cal-anchor-huge", "broken calibration",
         _cal("clocks:\n  cam0: {offset_ns: 0, anchor_ns: 1e20}\n"), 2, "anchor_ns"),
    Case("cal-drift-absurd", "broken calibration",
         _cal("clocks:\n  cam0: {drift_ppm: 1e12}\n"), 2, "drift_ppm"),
    Case("cal-drift-nan", "broken calibration", _cal("clocks:\n  cam0: {drift_ppm: .nan}\n"),
         2, "drift_ppm"),
    Case("cal-unknown-field", "broken calibration",
         _cal("clocks:\n  cam0: {ofset_ns: 5}\n"), 2, "ofset_ns"),
    Case("cal-not-mapping", "broken calibration", _cal("[1, 2]\n"), 2, "mapping"),
    Case("cal-camera-nan", "broken calibration",
         _cal("cameras:\n  cam0:\n    intrinsics: {image_size: [160, 120], K: [[.nan, 0, 80], "
              "[0, 100, 60], [0, 0, 1]]}\n"), 2, "K"),
    # the same broken calibrations through align-check: exit 2, one sentence
    Case("check-cal-offset-nan", "broken calibration",
         _cal("clocks:\n  cam0: {offset_ms: .nan}\n"), 2, "offset_ms", command="align-check"),
    Case("check-cal-anchor-huge", "broken calibration",
         _cal("clocks:\n  cam0: {offset_ns: 0, anchor_ns: 1e20}\n"), 2, "anchor_ns",
         command="align-check"),
]


# ------------------------------------------------------------------ data-level cases

def _index(fn):
    def build(d: Path, m: dict):
        edit_lines(d / "cam1" / "timestamps.txt", fn)
    return build


def _set_line(i: int, text: str):
    def fn(lines):
        lines[i] = text
        return lines
    return fn


def _image(name: str, data: bytes | None = None, fraction: float | None = None):
    def build(d: Path, m: dict):
        p = d / "cam1" / name
        if fraction is not None:
            cut(p, fraction)
        else:
            replace(p, data)
    return build


def _index_outside(d: Path, m: dict):
    edit_lines(d / "cam1" / "timestamps.txt",
               _set_line(5, "630000000 ../../../../../etc/passwd"))


def _index_symlink(d: Path, m: dict):
    secret = d.parent / "outside-secret.png"
    secret.write_bytes((d / "cam1" / "000000.png").read_bytes())
    (d / "cam1" / "000007.png").unlink()
    (d / "cam1" / "000007.png").symlink_to(secret)


def _srt(cues: list[tuple[str, str]]) -> bytes:
    parts = [f"{i + 1}\n{t}\n{x}\n" for i, (t, x) in enumerate(cues)]
    return "\n".join(parts).encode()


def _good_cues(n: int = 8) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        a, b = 0.3 + i * 0.45, 0.3 + i * 0.45 + 0.4
        out.append((f"00:00:0{int(a)},{int(a % 1 * 1000):03d} --> "
                    f"00:00:0{int(b)},{int(b % 1 * 1000):03d}", f"cue {i}"))
    return out


def _text(mutate):
    def build(d: Path, m: dict):
        cues = _good_cues()
        mutate(cues)
        replace(d / "transcript.srt", _srt(cues))
    return build


def _text_bytes(data: bytes, name: str = "transcript.srt"):
    def build(d: Path, m: dict):
        replace(d / name, data)
        stream(m, "transcript")["files"] = [name]
    return build


def _jsonl_text(lines: list[str]):
    def build(d: Path, m: dict):
        replace(d / "words.jsonl", ("\n".join(lines) + "\n").encode())
        stream(m, "transcript")["files"] = ["words.jsonl"]
    return build


def _float_mic(poison):
    def build(d: Path, m: dict):
        float_wav(d / "mic.wav", poison)
        stream(m, "mic")["options"] = {}
    return build


def _mic_rate(d: Path, m: dict):
    x = np.zeros(400, np.float32)
    (d / "mic.wav").unlink()
    sf.write(str(d / "mic.wav"), x, 100, subtype="FLOAT")


def _imu(rows: dict[int, str]):
    """Replace data rows of imu.csv; "{t}" in a row stands for that row's own time."""
    def build(d: Path, m: dict):
        lines = (d / "imu.csv").read_text().splitlines()
        sensor_rows(d / "imu.csv", {i: r.replace("{t}", lines[i + 1].split(",")[0])
                                    for i, r in rows.items()})
    return build


def _imu_bytes(data: bytes):
    return lambda d, m: replace(d / "imu.csv", data)


def _imu_parquet_corrupt(d: Path, m: dict):
    replace(d / "imu.parquet", b"PAR1" + bytes(range(256)) * 8 + b"PAR1")
    stream(m, "imu")["files"] = ["imu.parquet"]


def _imu_jsonl(d: Path, m: dict):
    rows = [json.dumps({"t_ns": 1_300_000_000 + i * 10_000_000, "ax": 0.1, "ay": 0.2, "az": 9.8,
                        "gx": 0, "gy": 0, "gz": 0}) for i in range(50)]
    rows[10] = json.dumps({"t_ns": "soon", "ax": 1})
    rows[20] = "{not json"
    rows[30] = json.dumps({"t_ns": 10**20, "ax": 1, "ay": 0, "az": 0, "gx": 0, "gy": 0,
                           "gz": 0})
    replace(d / "imu.jsonl", ("\n".join(rows) + "\n").encode())
    stream(m, "imu")["files"] = ["imu.jsonl"]


def _imu_file_days_later(d: Path, m: dict):
    """A second IMU file, its 40 rows 3 days after the first file's (a device clock that
    jumped between files): each chunk is consistent in itself; only the stream's median
    (from every file of the stream) shows it implausible."""
    lines = (d / "imu.csv").read_text().splitlines()
    later = [f"{int(r.split(',')[0]) + 3 * 86_400 * S},{r.split(',', 1)[1]}" for r in lines[1:41]]
    replace(d / "imu_later.csv", ("\n".join([lines[0], *later]) + "\n").encode())
    stream(m, "imu")["files"] = ["imu.csv", "imu_later.csv"]


def _oversize(sid: str, limit: int):
    def build(d: Path, m: dict):
        stream(m, sid).setdefault("options", {})["max_bytes"] = limit
    return build


def _mp4_no_video(d: Path, m: dict):
    import subprocess
    (d / "cam0.mp4").unlink()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=2", "-c:a",
                    "aac", str(d / "cam0.mp4")], check=True)


YEAR_2200_NS = 7_258_118_400 * S


DATA_CASES = [
    # video containers (cam0 is the tick source; without it the ticks are a fixed rate)
    Case("mp4-cut-half", "truncated media", lambda d, m: cut(d / "cam0.mp4", 0.5),
         reasons={"decode/corrupt_file"}, exit=1, streams=("cam0", "imu")),
    Case("mp4-garbage-middle", "corrupt media", lambda d, m: garble(d / "cam0.mp4", 0.5, 4000),
         reasons=set(), streams=("cam0", "imu")),
    Case("mp4-random-bytes", "garbage media",
         lambda d, m: replace(d / "cam0.mp4", np.random.default_rng(1).bytes(50_000)),
         reasons={"decode/corrupt_file"}, exit=1, streams=("cam0", "imu")),
    Case("mp4-empty", "truncated media", lambda d, m: replace(d / "cam0.mp4", b""),
         reasons={"decode/corrupt_file"}, exit=1, streams=("cam0", "imu")),
    Case("mp4-no-video", "wrong schema", _mp4_no_video, reasons={"decode/no_video_stream"},
         exit=1, streams=("cam0", "imu")),
    Case("mp4-oversize", "oversize", _oversize("cam0", 1000), reasons={"decode/oversize"},
         exit=1, streams=("cam0", "imu")),
    # image sequences
    Case("index-bad-time", "wrong schema", _index(_set_line(3, "soon 000003.png")),
         reasons={"decode/bad_timestamp"}, streams=("cam0", "cam1")),
    Case("index-time-overflow", "overflowing time", _index(_set_line(4, "1e30 000004.png")),
         reasons={"decode/timestamp_overflow"}, streams=("cam0", "cam1")),
    Case("index-time-9e18", "absurd time",
         _index(_set_line(5, "9000000000000000000 000005.png")),
         reasons={"validate/implausible_timestamp"}, streams=("cam0", "cam1")),
    Case("index-time-2200", "absurd time",
         _index(_set_line(6, f"{YEAR_2200_NS} 000006.png")),
         reasons={"validate/implausible_timestamp"}, streams=("cam0", "cam1")),
    Case("index-missing-image", "missing input", _index(_set_line(7, "700000000 nope.png")),
         reasons={"decode/missing_image"}, streams=("cam0", "cam1")),
    Case("index-path-outside", "path traversal", _index_outside,
         reasons={"decode/path_outside_roots"}, streams=("cam0", "cam1")),
    Case("index-symlink-outside", "symlink", _index_symlink,
         reasons={"decode/path_outside_roots"}, streams=("cam0", "cam1")),
    Case("index-duplicate-time", "duplicate time",
         _index(lambda ls: ls[:10] + [ls[9].split()[0] + " " + ls[10].split()[1]] + ls[11:]),
         reasons={"validate/duplicate_timestamp"}, streams=("cam0", "cam1")),
    Case("index-out-of-order", "out-of-order time",
         _index(lambda ls: ls[:12] + [ls[13], ls[12]] + ls[14:]),
         reasons={"validate/out_of_order"}, streams=("cam0", "cam1")),
    Case("png-truncated", "truncated media", _image("000009.png", fraction=0.5),
         reasons={"decode/corrupt_image"}, streams=("cam0", "cam1")),
    Case("png-garbage", "garbage media", _image("000011.png", b"not an image at all"),
         reasons={"decode/corrupt_image"}, streams=("cam0", "cam1")),
    Case("png-empty", "truncated media", _image("000012.png", b""),
         reasons={"decode/corrupt_image"}, streams=("cam0", "cam1")),
    Case("png-other-size", "wrong schema",
         _image("000014.png", cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))[1].tobytes()),
         reasons={"validate/frame_size_changed"}, streams=("cam0", "cam1")),
    Case("index-empty", "truncated media",
         lambda d, m: replace(d / "cam1" / "timestamps.txt", b""), reasons=set(),
         streams=("cam0", "cam1")),
    # audio files
    Case("wav-cut-half", "truncated media", lambda d, m: cut(d / "mic.wav", 0.5),
         reasons={"decode/truncated"}, streams=("cam0", "mic")),
    Case("wav-header-garbage", "corrupt media", lambda d, m: garble(d / "mic.wav", 0.0, 30),
         reasons={"decode/corrupt_file"}, streams=("cam0", "mic")),
    Case("wav-random-bytes", "garbage media",
         lambda d, m: replace(d / "mic.wav", np.random.default_rng(2).bytes(20_000)),
         reasons={"decode/corrupt_file"}, streams=("cam0", "mic")),
    Case("wav-empty", "truncated media", lambda d, m: replace(d / "mic.wav", b""),
         reasons={"decode/corrupt_file"}, streams=("cam0", "mic")),
    Case("wav-float-inf", "NaN/inf", _float_mic(float("inf")), reasons={"validate/non_finite"},
         streams=("cam0", "mic")),
    Case("wav-float-nan", "NaN/inf", _float_mic(float("nan")), reasons={"validate/non_finite"},
         streams=("cam0", "mic")),
    Case("wav-float-3", "out of range", _float_mic(3.0), reasons={"validate/out_of_range"},
         streams=("cam0", "mic")),
    Case("wav-rate-100hz", "wrong schema", _mic_rate,
         reasons={"validate/sample_rate_out_of_range"}, streams=("cam0", "mic")),
    Case("wav-oversize", "oversize", _oversize("mic", 100), reasons={"decode/oversize"},
         streams=("cam0", "mic")),
    Case("audio-track-cut", "truncated media", lambda d, m: garble(d / "cam0.mp4", 0.3, 20000),
         reasons=set(), streams=("cam0", "cam0_audio")),
    # text
    Case("srt-hour-2000000", "absurd time",
         _text(lambda c: c.__setitem__(3, ("2000000:00:00,000 --> 2000000:00:01,000", "far"))),
         reasons={"validate/implausible_timestamp"}, streams=("cam0", "transcript")),
    Case("srt-hour-overflow", "overflowing time",
         _text(lambda c: c.__setitem__(2, ("99999999999:00:00,000 --> 99999999999:00:01,000",
                                           "overflow"))),
         reasons={"decode/timestamp_overflow"}, streams=("cam0", "transcript")),
    Case("srt-bad-timing", "wrong schema",
         _text(lambda c: c.__setitem__(1, ("00:00:0x,000 -> later", "bad"))),
         reasons={"decode/bad_timing"}, streams=("cam0", "transcript")),
    Case("srt-end-before-start", "wrong schema",
         _text(lambda c: c.__setitem__(4, ("00:00:03,000 --> 00:00:02,000", "backwards"))),
         reasons={"validate/end_before_start"}, streams=("cam0", "transcript")),
    Case("srt-out-of-order", "out-of-order time",
         _text(lambda c: c.__setitem__(5, ("00:00:00,100 --> 00:00:00,200", "early"))),
         reasons={"validate/out_of_order"}, streams=("cam0", "transcript")),
    Case("srt-duplicate-start", "duplicate time",
         _text(lambda c: c.__setitem__(6, (c[5][0], "again"))),
         reasons={"validate/duplicate_timestamp"}, streams=("cam0", "transcript")),
    Case("srt-control-chars", "garbage text",
         _text(lambda c: c.__setitem__(2, (c[2][0], "bell\x07here"))),
         reasons={"validate/bad_text_encoding"}, streams=("cam0", "transcript")),
    Case("srt-invalid-utf8", "garbage text",
         lambda d, m: (replace(d / "transcript.srt", _srt(_good_cues())), srt_cue(
             d / "transcript.srt", 3, text=b"caf\xe9 \xff")),
         reasons={"decode/invalid_utf8"}, streams=("cam0", "transcript")),
    Case("srt-huge-cue", "oversize payload",
         _text(lambda c: c.__setitem__(1, (c[1][0], "x" * 200_000))),
         reasons={"validate/bad_text_length"}, streams=("cam0", "transcript")),
    Case("srt-garbage", "garbage text", _text_bytes(np.random.default_rng(3).bytes(3000)),
         reasons=set(), streams=("cam0", "transcript")),
    Case("vtt-no-header", "wrong schema", _text_bytes(_srt(_good_cues()), "transcript.vtt"),
         reasons={"decode/not_webvtt"}, streams=("cam0", "transcript")),
    Case("jsonl-start-ns-1e20", "overflowing time",
         _jsonl_text(['{"start": 0.5, "end": 0.9, "text": "a"}',
                      '{"start_ns": 100000000000000000000, "end_ns": 1, "text": "b"}',
                      '{"start": 1.5, "end": 1.9, "text": "c"}']),
         reasons={"decode/timestamp_overflow"}, streams=("cam0", "transcript")),
    Case("jsonl-start-1e30", "overflowing time",
         _jsonl_text(['{"start": 0.5, "end": 0.9, "text": "a"}',
                      '{"start": 1e30, "end": 2e30, "text": "b"}',
                      '{"start": 1.5, "end": 1.9, "text": "c"}']),
         reasons={"decode/timestamp_overflow"}, streams=("cam0", "transcript")),
    Case("jsonl-bad-lines", "wrong schema",
         _jsonl_text(['{"start": 0.5, "end": 0.9, "text": "a"}', '{nope', '[1, 2]',
                      '{"start": "x", "end": 1, "text": "c"}', '{"start": 1, "end": 2}',
                      '{"start": 2.5, "end": 2.9, "text": "ok", "kind": 5}']),
         reasons={"decode/bad_json", "decode/bad_timestamp", "decode/missing_field",
                  "decode/bad_field"}, streams=("cam0", "transcript")),
    Case("jsonl-nan-time", "NaN/inf",
         _jsonl_text(['{"start": NaN, "end": 0.9, "text": "a"}',
                      '{"start": 1.5, "end": Infinity, "text": "c"}']),
         reasons={"decode/bad_timestamp"}, streams=("cam0", "transcript")),
    # sensors
    Case("csv-year-2500", "overflowing time", _imu({10: "16725225600000000000,0,0,9.8,0,0,0"}),
         reasons={"decode/timestamp_overflow"}, streams=("cam0", "imu")),
    Case("csv-year-2200", "absurd time", _imu({11: f"{YEAR_2200_NS},0,0,9.8,0,0,0"}),
         reasons={"validate/implausible_timestamp"}, streams=("cam0", "imu")),
    Case("csv-file-days-later", "far-off time", _imu_file_days_later,
         reasons={"validate/implausible_timestamp"}, streams=("cam0", "imu")),
    Case("csv-nan-inf", "NaN/inf", _imu({12: "{t},nan,0,9.8,0,0,0", 13: "{t},0,inf,9.8,0,0,0"}),
         reasons={"validate/non_finite"}, streams=("cam0", "imu")),
    Case("csv-huge-value", "out of range", _imu({14: "{t},1e300,0,9.8,0,0,0"}),
         reasons={"validate/out_of_range"}, streams=("cam0", "imu")),
    Case("csv-unparsable", "wrong schema",
         _imu({15: "{t},zero,0,9.8,0,0,0", 16: "later,0,0,9.8,0,0,0"}),
         reasons={"decode/non_numeric", "decode/bad_timestamp"}, streams=("cam0", "imu")),
    Case("csv-duplicate-ooo", "duplicate time",
         lambda d, m: edit_lines(d / "imu.csv",
                                 lambda ls: ls[:20] + [ls[19], ls[22], ls[21]] + ls[23:]),
         reasons={"validate/duplicate_timestamp", "validate/out_of_order"},
         streams=("cam0", "imu")),
    Case("csv-no-time-column", "wrong schema",
         lambda d, m: edit_lines(d / "imu.csv", lambda ls: ["when" + ls[0][4:]] + ls[1:]),
         reasons={"decode/missing_time_column"}, streams=("cam0", "imu")),
    Case("csv-missing-channel", "wrong schema",
         lambda d, m: edit_lines(d / "imu.csv",
                                 lambda ls: [",".join(x.split(",")[:4]) for x in ls]),
         reasons={"decode/missing_channel"}, streams=("cam0", "imu")),
    Case("csv-short-row", "wrong schema", _imu({25: "{t},0,0"}),
         reasons={"decode/wrong_field_count"}, streams=("cam0", "imu")),
    Case("csv-empty", "truncated media", _imu_bytes(b""), reasons=set(),
         streams=("cam0", "imu")),
    Case("csv-binary", "garbage media", _imu_bytes(np.random.default_rng(4).bytes(5000)),
         reasons=set(), streams=("cam0", "imu")),
    Case("csv-long-line", "oversize payload", _imu({30: "{t}," + "1" * 2_000_000 + ",0,9.8,0,0,0"}),
         reasons={"validate/non_finite"}, streams=("cam0", "imu")),
    Case("csv-cut-mid-row", "truncated media", lambda d, m: cut(d / "imu.csv", 0.55),
         reasons=set(), streams=("cam0", "imu")),
    Case("parquet-corrupt", "corrupt media", _imu_parquet_corrupt,
         reasons={"decode/corrupt_file"}, streams=("cam0", "imu")),
    Case("jsonl-sensor-bad", "wrong schema", _imu_jsonl,
         reasons={"decode/bad_timestamp", "decode/bad_json", "decode/timestamp_overflow"},
         streams=("cam0", "imu")),
]


def manifest_bytes(d: Path) -> bytes:
    return yaml.safe_dump(yaml.safe_load((d / "manifest.yaml").read_text())).encode()
