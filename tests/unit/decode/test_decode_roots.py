"""Decoders open nothing outside the allowed roots and nothing that can hang them.

Index lines naming images outside the roots (``..``, absolute paths, symlinks: paths are
resolved) are row letters and the target is never opened: the targets here are FIFOs, which
would block a reader forever. A FIFO inside the roots is an unreadable image, not a hang.
Playlists that would make FFmpeg open other files are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.audio import decode_audio_track
from mmalign.transforms.decode.stage import DecodeFile, DecodeRequest, decode_file
from mmalign.transforms.decode.video import decode_image_sequence, decode_video_container
from tests.media import ffmpeg_testsrc, png_bytes, write_srt

pytestmark = pytest.mark.timeout(60)          # a decoder that opened a FIFO would block


def run(gen) -> tuple[list[Chunk], list[DeadLetter]]:
    out = list(gen)
    return ([o for o in out if isinstance(o, Chunk)], [o for o in out if isinstance(o, DeadLetter)])


@pytest.fixture
def layout(tmp_path) -> tuple[Path, Path]:
    """root/ (allowed) with an image, links and a FIFO; outside/ with a FIFO and an image."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "cam").mkdir(parents=True)
    outside.mkdir()
    (root / "cam" / "a.png").write_bytes(png_bytes(99))
    (outside / "secret.png").write_bytes(png_bytes(99))
    os.mkfifo(outside / "fifo.png")
    os.mkfifo(root / "cam" / "pipe.png")
    (root / "cam" / "link.png").symlink_to(outside / "fifo.png")
    (root / "cam" / "ok_link.png").symlink_to(root / "cam" / "a.png")
    return root, outside


def test_index_lines_outside_the_roots_are_row_letters(layout):
    root, outside = layout
    index = root / "cam" / "index.txt"
    index.write_text("timestamp filename\n"
                     "1 a.png\n"
                     f"2 {outside / 'fifo.png'}\n"          # absolute, outside
                     "3 ../../outside/fifo.png\n"          # relative, outside
                     "4 link.png\n"                        # symlink inside -> FIFO outside
                     "5 ok_link.png\n"                     # symlink inside -> inside
                     "6 pipe.png\n")                       # a FIFO inside the roots
    chunks, dead = run(decode_image_sequence(str(index), session_id="s", stream_id="cam",
                                             roots=(str(root.resolve()),)))
    assert [v for c in chunks for v in c.data.column("pos").to_pylist()] == [0, 4]
    assert [(d.reason, d.position) for d in dead] == [
        ("path_outside_roots", "frame=1"), ("path_outside_roots", "frame=2"),
        ("path_outside_roots", "frame=3"), ("unreadable_image", "frame=5")]
    for d in dead[:3]:
        assert d.error_class == "PathOutsideRoots" and d.payload_format == "index-line"
        assert d.attrs["target"] == str((outside / "fifo.png").resolve())
        assert str(index) in d.message and "not read" in d.message
    assert dead[2].payload == b"4 link.png"
    assert "not a regular file" in dead[3].message
    assert sum(c.num_records for c in chunks) + sum(d.records for d in dead) == 6


def test_without_roots_the_image_folder_still_bounds_the_index(layout):
    root, outside = layout
    index = root / "cam" / "index.txt"
    index.write_text("1 a.png\n2 ../../outside/secret.png\n3 link.png\n4 pipe.png\n")
    chunks, dead = run(decode_image_sequence(str(index), session_id="s", stream_id="cam"))
    assert [(d.reason, d.position) for d in dead] == [
        ("bad_path", "frame=1"), ("bad_path", "frame=2"), ("unreadable_image", "frame=3")]


def test_image_dir_outside_the_roots_is_a_file_letter(layout):
    root, outside = layout
    index = root / "cam" / "index.txt"
    index.write_text("1 secret.png\n2 secret.png\n")
    opts = {"image_dir": "../../outside"}
    chunks, dead = run(decode_image_sequence(str(index), session_id="s", stream_id="cam",
                                             options=opts, roots=(str(root),)))
    assert chunks == [] and [(d.reason, d.position, d.records) for d in dead] == [
        ("path_outside_roots", "file", 2)]
    assert "options.image_dir" in dead[0].message
    chunks, dead = run(decode_image_sequence(str(index), session_id="s", stream_id="cam",
                                             options=opts, roots=(str(root), str(outside))))
    assert dead == [] and sum(c.num_records for c in chunks) == 2


def test_the_file_itself_outside_the_roots(layout, tmp_path):
    root, outside = layout
    srt = outside / "a.srt"
    write_srt(srt, [(1000, 2000, "hi")])
    (root / "a.srt").symlink_to(srt)
    s = Stream(id="sub", modality="text", files=["a.srt"])
    for p in (srt, root / "a.srt"):
        chunks, dead = run(decode_file(s, p, session_id="s", roots=(str(root),)))
        assert chunks == [] and [(d.reason, d.records) for d in dead] == [
            ("path_outside_roots", 1)]
    chunks, dead = run(decode_file(s, srt, session_id="s"))          # no roots: library use
    assert dead == [] and chunks[0].num_records == 1
    # the Beam element carries the roots too
    req = DecodeRequest("s", s, str(root / "a.srt"), roots=(str(root),))
    outs = list(DecodeFile().process(req))
    assert [o.value.reason for o in outs] == ["path_outside_roots"]


def test_playlists_and_concat_lists_are_refused(tmp_path):
    ts = tmp_path / "outside.ts"
    ffmpeg_testsrc(ts, 1, size="64x48", rate=10, pix_fmt=None)
    hls = tmp_path / "cam.m3u8"
    hls.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{ts}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "cam.mp4"
    concat.write_text(f"ffconcat version 1.0\nfile {ts}\n")
    for p in (hls, concat):
        chunks, dead = run(decode_video_container(str(p), session_id="s", stream_id="cam"))
        assert chunks == [] and [d.reason for d in dead] == ["unsupported_container"], p
        chunks, dead = run(decode_audio_track(str(p), session_id="s", stream_id="mic"))
        assert chunks == [] and [d.reason for d in dead] == ["unsupported_container"], p
    chunks, dead = run(decode_video_container(str(ts), session_id="s", stream_id="cam"))
    assert dead == [] and sum(c.num_records for c in chunks) == 10


def test_a_fifo_given_as_the_file_does_not_hang(layout):
    root, _ = layout
    for fn in (decode_video_container, decode_image_sequence):
        chunks, dead = run(fn(str(root / "cam" / "pipe.png"), session_id="s", stream_id="c"))
        assert chunks == [] and [d.reason for d in dead] == ["not_a_file"]
