import json

import pytest

from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.manifest import ManifestError, load_manifest

GOOD = """
session: s1
calibration: cal.yaml
streams:
  - {id: cam0, modality: video, files: [cam0.mp4]}
  - {id: imu, modality: sensor, files: [imu.csv], options: {channels: [ax]}}
alignment:
  ticks: {anchor: cam0}
  bucket_s: 4
  policies:
    imu: {policy: interpolate, max_gap_ms: 20}
"""


def write(tmp_path, text, name="m.yaml"):
    for f in ("cam0.mp4", "imu.csv", "cal.yaml"):       # the files GOOD names must exist
        if not (tmp_path / f).exists():
            (tmp_path / f).write_text("")
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_manifest_loads_and_resolves(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    assert m.session == "s1" and [s.id for s in m.streams] == ["cam0", "imu"]
    assert m.resolve("cam0.mp4") == tmp_path / "cam0.mp4"
    assert m.policy_for(m.stream("imu")).max_gap_ms == 20
    assert m.policy_for(m.stream("cam0")).policy == "nearest"


def test_json_manifest(tmp_path):
    import yaml
    p = write(tmp_path, json.dumps(yaml.safe_load(GOOD)), "m.json")
    assert load_manifest(p).session == "s1"


@pytest.mark.parametrize("mutate,expect", [
    (lambda s: s.replace("session: s1", "session: ''"), "field 'session'"),
    (lambda s: s.replace("modality: video", "modality: smell"), "streams[cam0].modality"),
    (lambda s: s.replace("ticks: {anchor: cam0}", "ticks: {anchor: nope}"), "nope"),
    (lambda s: s.replace("bucket_s: 4", "bucket_s: 4\n  colour: red"), "alignment.colour"),
    (lambda s: s.replace("[cam0.mp4]", "[../../etc/passwd]"), "outside the allowed roots"),
    (lambda s: s.replace("ticks: {anchor: cam0}", "ticks: {anchor: cam0, rate_hz: 5}"),
     "exactly one"),
    (lambda s: s + "\n  - {id: cam0, modality: video, files: [a.mp4]}".replace("\n  -", "\n  -"),
     "not valid YAML"),
])
def test_bad_manifest_is_one_sentence_naming_file_and_field(tmp_path, mutate, expect):
    p = write(tmp_path, mutate(GOOD))
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    msg = str(e.value)
    assert expect in msg and str(p) in msg and "\n" not in msg


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.yaml")


def test_calibration_clocks(tmp_path):
    p = write(tmp_path, "clocks:\n  mic: {offset_ms: 350, drift_ppm: 40}\n", "cal.yaml")
    cal = load_calibration(p)
    assert cal.clock("mic").offset_ns == 350_000_000 and cal.clock("mic").drift_ppm == 40
    assert cal.clock("other").is_identity
    bad = write(tmp_path, "clocks:\n  mic: {offset_ms: 1, offset_ns: 2}\n", "bad.yaml")
    with pytest.raises(ManifestError, match="clocks.mic"):
        load_calibration(bad)
