"""The manifest on a real recording: the folder is no user field, every path it names is resolved
and kept inside the allowed roots, missing inputs, options, formats and unknown keys fail at
load with one sentence, multi-file streams with start times, and the one rule for names."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.manifest import Manifest, ManifestError, load_manifest
from mmalign.schemas.names import check_name, is_name


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    """A small real recording (MP4, image sequence, WAV, SRT, CSV) and its manifest."""
    return generate_recording(tmp_path_factory.mktemp("rec") / "rec", duration_s=4,
                              seed=3).parent


def variant(rec: Path, tmp_path: Path, mutate=None, name: str = "manifest.yaml") -> Path:
    """A copy of the recording whose manifest ``mutate(dict)`` edited; returns its path."""
    d = tmp_path / "rec"
    if not d.exists():
        shutil.copytree(rec, d)
    data = yaml.safe_load((rec / "manifest.yaml").read_text())
    if mutate:
        mutate(data, d)
    p = d / name
    p.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return p


def stream(data: dict, sid: str) -> dict:
    return next(s for s in data["streams"] if s["id"] == sid)


def fails(path: Path, *words: str) -> str:
    """load_manifest raises one sentence naming the manifest and ``words``."""
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# ---------------------------------------------------------------- 1. the folder is private


def test_base_dir_is_no_manifest_field(rec, tmp_path):
    p = variant(rec, tmp_path, lambda d, _: d.__setitem__("base_dir", "/etc"))
    fails(p, "field 'base_dir'", "Extra inputs are not permitted", "remove it")


def test_folder_is_set_by_load_and_kept_by_copies(rec, tmp_path):
    p = variant(rec, tmp_path)
    m = load_manifest(p)
    assert m.base_dir == str(p.parent.resolve())
    assert m.resolve("mic.wav") == p.parent.resolve() / "mic.wav"
    assert "base_dir" not in m.model_dump()
    for copy in (m.model_copy(update={"streams": m.streams}), pickle.loads(pickle.dumps(m))):
        assert copy.base_dir == m.base_dir
    data = yaml.safe_load(p.read_text())
    with pytest.raises(ValueError, match="base_dir"):          # not settable as a field
        Manifest.model_validate({**data, "base_dir": "/etc"})
    ctx = Manifest.model_validate(data, context={"base_dir": str(tmp_path)})   # in memory
    assert ctx.base_dir == str(tmp_path)
    with pytest.raises((AttributeError, ValueError)):
        m.base_dir = "/etc"                                     # frozen, a read-only property


# ---------------------------------------------------------------- 2. paths inside the roots


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder next to the recording (outside its roots) with a file of each kind."""
    d = tmp_path / "outside"
    d.mkdir()
    for f in ("x.wav", "w.pt", "cal.yaml"):
        (d / f).write_text("clocks: {}\n" if f.endswith(".yaml") else "x")
    return d


def _link_out(d: Path, outside: Path) -> None:
    (d / "link.wav").symlink_to(outside / "x.wav")


@pytest.mark.parametrize("mutate,field", [
    (lambda d, o: stream(d, "mic").__setitem__("files", [str(o / "x.wav")]),
     "streams[mic].files[0]"),
    (lambda d, o: stream(d, "mic").__setitem__("files", ["mic.wav", "../outside/x.wav"]),
     "streams[mic].files[1]"),
    (lambda d, o: d.__setitem__("calibration", str(o / "cal.yaml")), "calibration"),
    (lambda d, o: stream(d, "cam1").setdefault("options", {}).__setitem__("image_dir", "../.."),
     "streams[cam1].options.image_dir"),
    (lambda d, o: d.__setitem__("encoders", {"video": {"source": "torchscript",
                                                       "path": str(o / "w.pt")}}),
     "encoders.video.path"),
    (lambda d, o: d.__setitem__("encoders", {"streams": {"cam1": {
        "source": "state_dict", "path": "../outside/w.pt"}}}), "encoders.streams.cam1.path"),
    (lambda d, o: d.__setitem__("encoders", {"feature_store": {"enabled": True,
                                                               "repo": str(o)}}),
     "encoders.feature_store.repo"),
])
def test_paths_outside_the_roots_fail_at_load(rec, tmp_path, outside, mutate, field):
    p = variant(rec, tmp_path, lambda d, _: mutate(d, outside))
    fails(p, f"field '{field}'", "outside the allowed roots", "allowed_roots")


def test_symlinks_are_followed(rec, tmp_path, outside):
    def m(d, folder):
        _link_out(folder, outside)
        stream(d, "mic")["files"] = ["link.wav"]
    p = variant(rec, tmp_path, m)
    fails(p, "field 'streams[mic].files[0]'", str(outside / "x.wav"), "outside the allowed")


def test_allowed_roots_is_the_only_way_out(rec, tmp_path, outside):
    def m(d, _):
        stream(d, "mic")["files"] = [str(outside / "x.wav")]
        d["allowed_roots"] = [".", str(outside)]
    m_ = load_manifest(variant(rec, tmp_path, m))
    assert m_.resolve(m_.stream("mic").paths[0]) == outside / "x.wav"


def test_unresolvable_paths_are_one_sentence(rec, tmp_path):
    def loop(d, folder):
        (folder / "loop.wav").symlink_to(folder / "loop.wav")
        stream(d, "mic")["files"] = ["loop.wav"]
    fails(variant(rec, tmp_path, loop), "streams[mic].files[0]", "cannot be resolved")


# ---------------------------------------------------------------- 3. missing inputs


def test_missing_stream_file_names_manifest_field_path_and_fix(rec, tmp_path):
    p = variant(rec, tmp_path,
                lambda d, _: stream(d, "cam0").__setitem__("files", ["cam0.mp4", "gone.mp4"]))
    msg = fails(p, "field 'streams[cam0].files[1]'", "'gone.mp4'", "does not exist",
                "fix the path")
    assert str(p.parent.resolve() / "gone.mp4") in msg


@pytest.mark.parametrize("make,words", [
    (lambda f: f.mkdir(), ["not a regular file"]),
    (lambda f: os.mkfifo(f), ["not a regular file"]),       # reading a FIFO would hang
    (lambda f: f.symlink_to(f.parent / "nowhere.wav"), ["does not exist"]),
])
def test_stream_file_that_is_no_regular_file(rec, tmp_path, make, words):
    def m(d, folder):
        make(folder / "odd.wav")
        stream(d, "mic")["files"] = ["odd.wav"]
    fails(variant(rec, tmp_path, m), "field 'streams[mic].files[0]'", *words)


def test_missing_calibration_and_image_folder(rec, tmp_path):
    p = variant(rec, tmp_path, lambda d, _: d.__setitem__("calibration", "nope.yaml"))
    fails(p, "field 'calibration'", "nope.yaml", "does not exist")
    p = variant(rec, tmp_path, lambda d, _: stream(d, "cam1").__setitem__(
        "options", {"image_dir": "frames"}))
    fails(p, "field 'streams[cam1].options.image_dir'", "not a folder")


def test_image_dir_inside_the_roots_loads(rec, tmp_path):
    def m(d, folder):
        (folder / "cam1" / "imgs").mkdir()
        stream(d, "cam1")["options"] = {"image_dir": "imgs"}
    assert load_manifest(variant(rec, tmp_path, m)).stream("cam1").options["image_dir"] == "imgs"


# ---------------------------------------------------------------- 4. options, formats, keys


@pytest.mark.parametrize("mutate,words", [
    (lambda d: stream(d, "mic")["options"].__setitem__("strat_ns", 5),
     ["stream 'mic'", "strat_ns", "Extra inputs"]),
    (lambda d: stream(d, "imu")["options"].__setitem__("chunk_rows", 0),
     ["stream 'imu'", "chunk_rows", "greater than or equal to 1"]),
    (lambda d: stream(d, "cam0").__setitem__("format", "srt"),
     ["field 'streams[cam0].format'", "'srt'", "'container'", "'image_sequence'"]),
    (lambda d: stream(d, "transcript").__setitem__("format", "subrip"),
     ["streams[transcript].format", "['jsonl', 'srt', 'vtt', 'webvtt']"]),
    (lambda d: d["alignment"]["policies"]["cam1"].__setitem__("tolerence_ms", 5),
     ["field 'alignment.policies.cam1.tolerence_ms'", "remove it or check its spelling"]),
    (lambda d: d["alignment"]["policies"]["cam1"].__setitem__("tolerance_ms", float("nan")),
     ["alignment.policies.cam1.tolerance_ms", "finite"]),
    (lambda d: d["alignment"]["policies"]["imu"].__setitem__("max_gap_ms", 1e30),
     ["alignment.policies.imu.max_gap_ms"]),
    (lambda d: d["alignment"].__setitem__("ticks", {"sets": {"streams": ["cam0", "cam1"],
                                                             "span_ms": 5}}),
     ["alignment.ticks.sets.span_ms"]),
    (lambda d: stream(d, "imu").__setitem__("sync", {"reference": "cam0", "band": 1}),
     ["streams[imu].sync.band"]),
    (lambda d: d.__setitem__("encoders", {"video": {"warp": True, "wrap": 1}}),
     ["encoders.video.wrap"]),
    (lambda d: d.__setitem__("encoders", {"streams": {"cam1": {"seeed": 1}}}),
     ["encoders.streams.cam1"]),
    (lambda d: d.__setitem__("encoders", {"feature_store": {"enabled": True, "onlne": "x"}}),
     ["encoders.feature_store.onlne"]),
    (lambda d: d.__setitem__("encoders", {"fusions": "concat"}), ["encoders.fusions"]),
    (lambda d: d.__setitem__("encoders", {"sensor": {"window_ms": float("inf")}}),
     ["encoders.sensor.window_ms"]),
    (lambda d: d.__setitem__("encoders", {"video": {"source": "module",
                                                    "target": "../../evil.py:make"}}),
     ["encoders.video", "not a file path"]),
    (lambda d: d.__setitem__("registration", {"reference": "cam0", "cameras": ["cam1"],
                                              "detectr": "orb"}),
     ["registration.detectr"]),
    (lambda d: d.__setitem__("registration", {"reference": "cam0", "cameras": ["cam1"],
                                              "ransac_threshold_px": float("inf")}),
     ["registration.ransac_threshold_px"]),
    (lambda d: d.__setitem__("registration", {"reference": "cam0", "cameras": ["cam1"],
                                              "project": [{"sensor": "imu", "camera": 1}]}),
     ["registration.project[0].camera"]),
])
def test_options_formats_and_unknown_keys_fail_at_load(rec, tmp_path, mutate, words):
    fails(variant(rec, tmp_path, lambda d, _: mutate(d)), *words)


def test_audio_start_ns_option_is_bounded(rec, tmp_path):
    p = variant(rec, tmp_path, lambda d, _: stream(d, "mic")["options"].__setitem__(
        "start_ns", 2**63 - 1))
    fails(p, "streams[mic].options.start_ns", "2**62")


# ---------------------------------------------------------------- 5. multi-file streams


def test_files_may_carry_start_times(rec, tmp_path):
    def m(d, folder):
        shutil.copy(folder / "cam0.mp4", folder / "b.mp4")
        shutil.copy(folder / "cam0.mp4", folder / "c.mp4")
        stream(d, "cam0")["files"] = ["cam0.mp4", {"path": "b.mp4", "start_ns": 60_000_000_000},
                                      {"path": "c.mp4", "start_s": 120.5}, {"path": "b.mp4"}]
    s = load_manifest(variant(rec, tmp_path, m)).stream("cam0")
    assert s.paths == ["cam0.mp4", "b.mp4", "c.mp4", "b.mp4"]
    assert s.starts == [None, 60_000_000_000, 120_500_000_000, None]
    plain = load_manifest(variant(rec, tmp_path)).stream("mic")
    assert plain.paths == ["mic.wav"] and plain.starts == [None]
    assert plain.files == ["mic.wav"]              # plain path strings stay strings


@pytest.mark.parametrize("name", ["manifest.yaml", "manifest.json"])
def test_start_s_is_read_exactly(rec, tmp_path, name):
    """1700000000.123456789 s has 19 digits: a float keeps 17, the manifest keeps all."""
    d = tmp_path / "rec"
    shutil.copytree(rec, d)
    data = yaml.safe_load((rec / "manifest.yaml").read_text())
    stream(data, "cam0")["files"] = [{"path": "cam0.mp4", "start_s": "@START@"}]
    text = json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data)
    (d / name).write_text(text.replace('"@START@"', "1700000000.123456789")
                          .replace("'@START@'", "1700000000.123456789"))
    assert load_manifest(d / name).stream("cam0").starts == [1_700_000_000_123_456_789]


@pytest.mark.parametrize("entry,words", [
    ("{path: cam0.mp4, start_s: .nan}", ["files[0].start_s", "finite"]),
    ("{path: cam0.mp4, start_s: .inf}", ["files[0].start_s", "finite"]),
    ("{path: cam0.mp4, start_s: 1.0000000001}", ["more than 9 decimals"]),
    ("{path: cam0.mp4, start_s: 1e12}", ["2**62"]),
    ("{path: cam0.mp4, start_ns: 1e30}", ["files[0].start_ns", "2**62"]),
    ("{path: cam0.mp4, start_ns: 1.5}", ["files[0].start_ns", "whole number"]),
    ("{path: cam0.mp4, start_ns: 1, start_s: 1}", ["not both"]),
    ("{path: cam0.mp4, start: 1}", ["files[0].start", "Extra inputs"]),
    ("{start_ns: 1}", ["files[0].path", "Field required"]),
    ("{path: cam0.mp4, start_s: abc}", ["files[0].start_s", "not a decimal number"]),
    ("''", ["files[0]"]),
])
def test_bad_file_entries_are_one_sentence(rec, tmp_path, entry, words):
    d = tmp_path / "rec"
    shutil.copytree(rec, d)
    text = (rec / "manifest.yaml").read_text()
    text = text.replace("  files:\n  - cam0.mp4\n", f"  files:\n  - {entry}\n", 1)
    (d / "manifest.yaml").write_text(text)
    fails(d / "manifest.yaml", "streams[cam0].files[0]", *words)


# ---------------------------------------------------------------- 7. names


@pytest.mark.parametrize("value", ["r1", "2024-05-01T12.00", "a_b-c.d", "A" * 64])
def test_good_names(value):
    assert is_name(value) and check_name(value, "--run-id") == value


@pytest.mark.parametrize("value", ["", ".", "..", "../x", "/tmp/x", "a/b", ".hidden", "-x",
                                   "a b", "a\0b", "A" * 65, "ü", None, 5])
def test_bad_names_are_one_sentence(value):
    assert not is_name(value)
    with pytest.raises(ManifestError) as e:
        check_name(value, "--run-id")
    msg = str(e.value)
    assert msg.startswith("--run-id ") and "not a valid name" in msg and "\n" not in msg


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.__setitem__("session", ".."), "session"),
    (lambda d: stream(d, "mic").__setitem__("id", "../mic"), "streams[../mic].id"),
    (lambda d: d.__setitem__("registration", {"reference": "cam0", "cameras": ["a/b"]}),
     "registration.cameras[0]"),
    (lambda d: d.__setitem__("encoders", {"streams": {"..": False}}), "encoders.streams"),
])
def test_manifest_ids_share_the_name_rule(rec, tmp_path, mutate, field):
    fails(variant(rec, tmp_path, lambda d, _: mutate(d)), f"field '{field}", "not a valid name")


# ---------------------------------------------------------------- reading the file


def test_unreadable_or_hostile_manifest_files(tmp_path):
    fails_dir = tmp_path / "m.yaml"
    fails_dir.mkdir()
    fails(fails_dir, "not a regular file")
    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{'' if i == 1 else i - 1}"] * 10) + "]")
    bomb.write_text("\n".join(lines) + "\nsession: s\n")
    fails(bomb, "expands to more than")
    deep = tmp_path / "deep.json"
    deep.write_text("{\"a\": " + "[" * 100_000 + "]" * 100_000 + "}")
    fails(deep, "deep.json")
