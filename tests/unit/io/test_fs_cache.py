"""The source cache for remote inputs (transforms/io/source_cache.py) and the decode stage
reading through it (transforms/decode/stage.py), on fsspec's in-memory store: one download
per object while it is unchanged, a changed object fetched again, nothing outside the roots
read, and every cache path in the outputs written back as the object's URI."""

from __future__ import annotations

import uuid

import cv2
import numpy as np
import pytest

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.fs import UriPath
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.stage import decode_file
from mmalign.transforms.io.source_cache import OutsideRoots, SourceCache


@pytest.fixture
def bucket() -> UriPath:
    return UriPath(f"memory://cache-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> SourceCache:
    monkeypatch.setenv("MMALIGN_SOURCE_CACHE", str(tmp_path / "cache"))
    from mmalign.transforms.io import source_cache

    monkeypatch.setattr(source_cache, "_DEFAULT", None)
    return source_cache.default_cache()


def test_fetch_once_then_again_only_when_the_object_changed(bucket, cache):
    uri = bucket / "rec" / "imu.csv"
    uri.write_text("t_ns,ax\n0,1\n")
    local = cache.fetch(uri, [str(bucket / "rec")])
    assert local == cache.local_path(uri) and local.read_text() == "t_ns,ax\n0,1\n"
    assert cache.fetch(uri) == local
    assert (cache.downloads, cache.hits) == (1, 1)
    uri.write_text("t_ns,ax\n0,1\n1,2\n")            # another size (and mtime)
    assert cache.fetch(uri).read_text().endswith("1,2\n")
    assert cache.downloads == 2
    other = SourceCache(cache.root)                  # another worker process, same machine
    assert other.fetch(uri) == local and (other.downloads, other.hits) == (0, 1)


def test_nothing_outside_the_roots_is_read(bucket, cache):
    secret = bucket / "secret" / "key.csv"
    secret.write_text("x")
    for roots in ([str(bucket / "rec")], [str(bucket / "re")], ["/tmp"]):
        with pytest.raises(OutsideRoots):
            cache.fetch(secret, roots)
    assert not cache.local_path(secret).exists() and cache.downloads == 0
    with pytest.raises(FileNotFoundError):
        cache.fetch(bucket / "rec" / "missing.csv")


def test_paths_map_back_to_uris(bucket, cache):
    uri = bucket / "rec" / "a b" / "imu.csv"
    local = cache.local_path(uri)
    assert cache.uri_of(local) == str(uri) and cache.uri_of("/elsewhere/x") is None
    assert cache.local_roots([str(bucket / "rec"), "/data"]) == \
        (str(cache.local_path(bucket / "rec")), "/data")
    assert cache.uris(f"{local}: row 3 is bad ('{local.parent}')") == \
        f"{uri}: row 3 is bad ('{uri.parent}')"


def test_a_remote_sensor_file_decodes_with_uris_in_its_chunks_and_letters(bucket, cache):
    uri = bucket / "rec" / "imu.csv"
    uri.write_text("t_ns,ax\n0,1.0\n1000000,ERR\n2000000,3.0\n")
    stream = Stream(id="imu", modality="sensor", files=[str(uri)],
                    options={"time_column": "t_ns", "time_unit": "ns"})
    out = list(decode_file(stream, str(uri), session_id="s1", roots=(str(bucket / "rec"),)))
    chunks = [o for o in out if not isinstance(o, DeadLetter)]
    letters = [o for o in out if isinstance(o, DeadLetter)]
    assert sum(c.num_records for c in chunks) == 2 and len(letters) == 1
    assert {c.source_uri for c in chunks} == {str(uri)}
    assert letters[0].source_uri == str(uri) and letters[0].reason == "non_numeric"
    assert str(uri) in letters[0].message and str(cache.root) not in letters[0].message
    # outside the roots: one letter, nothing read
    out = list(decode_file(stream, str(uri), session_id="s1", roots=(str(bucket / "other"),)))
    assert [o.reason for o in out] == ["path_outside_roots"] and cache.downloads == 1
    # missing: the same letter as a missing local file
    out = list(decode_file(stream, str(bucket / "rec" / "gone.csv"), session_id="s1"))
    assert [o.reason for o in out] == ["missing_file"]


def test_an_image_sequence_fetches_only_the_images_the_decoder_may_open(bucket, cache):
    png = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    rec = bucket / "rec"
    for name in ("cam1/0.png", "cam1/1.png", "outside.png"):
        (rec / name).write_bytes(png)
    (bucket / "secret.png").write_bytes(png)
    (rec / "cam1" / "index.txt").write_text(
        "0 0.png\n100000000 1.png\n200000000 ../outside.png\n300000000 ../../secret.png\n")
    stream = Stream(id="cam1", modality="video", files=[str(rec / "cam1" / "index.txt")])
    out = list(decode_file(stream, str(rec / "cam1" / "index.txt"), session_id="s1",
                           roots=(str(rec),)))
    frames = sum(o.num_records for o in out if not isinstance(o, DeadLetter))
    letters = [o for o in out if isinstance(o, DeadLetter)]
    assert frames == 2                                 # images outside the image folder: letters
    assert len(letters) == 2 and all(str(cache.root) not in d.message for d in letters)
    assert cache.downloads == 3                        # the index and its two images
    assert not cache.local_path(bucket / "secret.png").exists()
    assert not cache.local_path(rec / "outside.png").exists()
    assert {o.source_uri for o in out if not isinstance(o, DeadLetter)} == \
        {str(rec / "cam1" / "index.txt")}
