"""Remote paths (schemas/fs.py) and the allowed-roots rule for them (schemas/manifest.py): URIs
are normalised once, a URI root is a prefix at '/' boundaries, and a manifest cannot name a
remote object outside its roots -- checked before anything is read. A manifest on an object
store (fsspec's in-memory store here) loads like a local one."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from mmalign.schemas.fs import RemoteError, UriPath, as_path, is_remote
from mmalign.schemas.manifest import (
    Manifest,
    ManifestError,
    PathOutsideRoots,
    load_manifest,
)


def test_uris_are_normalised_and_never_leave_their_bucket():
    assert UriPath("s3://b/rec/../x.csv") == UriPath("s3://b/x.csv")
    assert str(UriPath("s3://b//rec///a/./c/")) == "s3://b/rec/a/c"
    assert str(UriPath("s3://b/../../etc/passwd")) == "s3://b/etc/passwd"
    assert str(UriPath("s3://b/rec/%2e%2e/x")) == "s3://b/rec/%2e%2e/x"   # no decoding
    p = UriPath("gs://bkt/rec/cam0.mp4")
    assert (p.name, p.suffix, p.stem) == ("cam0.mp4", ".mp4", "cam0")
    assert p.parent == UriPath("gs://bkt/rec") and p.parent / "x" == UriPath("gs://bkt/rec/x")
    assert p.parents[-1] == UriPath("gs://bkt")
    for bad in ("s3://", "s3:///key", "s3://../x"):
        with pytest.raises(RemoteError):
            UriPath(bad)


def test_roots_are_prefixes_at_slash_boundaries():
    root = UriPath("s3://b/rec/")
    assert UriPath("s3://b/rec/a/x").is_relative_to(root)
    assert UriPath("s3://b/rec").is_relative_to(root)
    assert not UriPath("s3://b/rec-2/x").is_relative_to(root)
    assert not UriPath("s3://b/re").is_relative_to(root)
    assert not UriPath("s3://other/rec/x").is_relative_to(root)
    assert not UriPath("gs://b/rec/x").is_relative_to(root)
    assert UriPath("s3a://b/rec/x").is_relative_to(root)          # one store, two spellings
    assert not UriPath("s3://b/rec/x").is_relative_to(Path("/rec"))


def test_as_path():
    assert as_path("out/x") == Path("out/x") and as_path("file:///tmp/x") == Path("/tmp/x")
    assert isinstance(as_path("s3://b/x"), UriPath) and is_remote("gs://b/x")
    assert not is_remote("file:///x") and not is_remote(Path("s3:/b")) and not is_remote("x")


def _manifest(files, roots=None, base_dir="") -> Manifest:
    doc = {"session": "s1", "alignment": {"ticks": {"rate_hz": 10}},
           "streams": [{"id": "imu", "modality": "sensor", "files": files,
                        "options": {"time_column": "t_ns"}}]}
    if roots is not None:
        doc["allowed_roots"] = roots
    return Manifest.model_validate(doc, context={"base_dir": base_dir})


@pytest.mark.parametrize("uri", [
    "s3://bucket/secret/imu.csv",
    "s3://bucket/recordings/../secret/imu.csv",
    "s3://bucket/recordings-evil/imu.csv",
    "s3://other/recordings/imu.csv",
    "gs://bucket/recordings/imu.csv",
])
def test_a_local_manifest_cannot_name_remote_objects_outside_its_roots(tmp_path, uri):
    # refused before any request: no server is running, none is asked
    m = tmp_path / "manifest.yaml"
    doc = {"session": "s1", "alignment": {"ticks": {"rate_hz": 10}},
           "allowed_roots": ["s3://bucket/recordings/", "."],
           "streams": [{"id": "imu", "modality": "sensor", "files": [uri],
                        "options": {"time_column": "t_ns"}}]}
    m.write_text(yaml.safe_dump(doc))
    with pytest.raises(ManifestError, match="outside the allowed roots"):
        load_manifest(m)


def test_a_remote_manifest_resolves_against_its_prefix():
    m = _manifest(["imu.csv"], base_dir="s3://bucket/recordings/rec1")
    assert m.roots() == [UriPath("s3://bucket/recordings/rec1")]
    assert m.resolve("cam0.mp4") == UriPath("s3://bucket/recordings/rec1/cam0.mp4")
    assert m.resolve("sub/../imu.csv") == UriPath("s3://bucket/recordings/rec1/imu.csv")
    for outside in ("../rec2/imu.csv", "/etc/passwd", "s3://bucket/recordings/rec10/x.csv"):
        with pytest.raises(PathOutsideRoots):
            m.resolve(outside)
    wider = _manifest(["imu.csv"], roots=[".."], base_dir="s3://bucket/recordings/rec1")
    assert wider.resolve("../rec2/imu.csv") == UriPath("s3://bucket/recordings/rec2/imu.csv")
    local_roots = _manifest(["imu.csv"], roots=["/data"], base_dir="/data/rec")
    with pytest.raises(PathOutsideRoots):                  # a local root admits no URI
        local_roots.resolve("s3://bucket/data/imu.csv")


def test_a_manifest_on_an_object_store_loads_and_checks_its_files():
    base = UriPath(f"memory://mm-{uuid.uuid4().hex[:8]}/rec1")
    doc = {"session": "s1", "alignment": {"ticks": {"rate_hz": 10}},
           "calibration": "calibration.yaml",
           "streams": [{"id": "imu", "modality": "sensor", "files": ["imu.csv"],
                        "options": {"time_column": "t_ns"}}]}
    (base / "manifest.yaml").write_text(yaml.safe_dump(doc))
    (base / "calibration.yaml").write_text("clocks: {imu: {offset_ms: 5}}\n")
    (base / "imu.csv").write_text("t_ns,ax\n0,1.0\n")
    m = load_manifest(str(base / "manifest.yaml"))
    assert m.base_dir == str(base)
    assert m.resolve("imu.csv") == base / "imu.csv"
    from mmalign.schemas.calibration import load_calibration

    assert load_calibration(m.resolve(m.calibration)).clock("imu").offset_ns == 5_000_000
    doc["streams"][0]["files"] = ["missing.csv"]
    (base / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(str(base / "bad.yaml"))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(str(base / "nothing.yaml"))
