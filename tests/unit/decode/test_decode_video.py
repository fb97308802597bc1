"""Video decoders on real media: PyAV-encoded H.264/VP8 containers and image sequences."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pytest

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.video import ARROW_SCHEMA
from mmalign.transforms.decode.video import (
    decode_image_sequence,
    decode_video_container,
    file_packet_index,
    frame_to_rgb,
    load_frames,
    packet_index,
)

W, H = 64, 48


def frame_image(i: int) -> np.ndarray:
    """A frame whose content encodes its index (a bar of width i, a grey level)."""
    img = np.full((H, W, 3), (i * 7) % 200 + 20, np.uint8)
    img[:, : (i % W)] = 250
    img[: H // 2, :, 1] = 40
    return img


def write_video(path: Path, pts: np.ndarray, *, codec: str = "libx264",
                time_base: Fraction = Fraction(1, 90000)) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = time_base
        if codec == "libx264":
            s.options = {"g": "10", "bf": "2"}
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
            f.pts, f.time_base = int(p), time_base
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)


def vfr_pts(n: int, seed: int = 0) -> np.ndarray:
    """Jittered variable-frame-rate pts in 1/90000 s: gaps 20..45 ms."""
    gaps = np.random.default_rng(seed).integers(1800, 4050, n - 1)
    return np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)


def run(gen) -> tuple[list[Chunk], list[DeadLetter]]:
    out = list(gen)
    assert all(isinstance(o, (Chunk, DeadLetter)) for o in out)
    return ([o for o in out if isinstance(o, Chunk)], [o for o in out if isinstance(o, DeadLetter)])


def rows(chunks: list[Chunk]) -> pa.Table:
    return pa.Table.from_batches([c.data for c in chunks], schema=ARROW_SCHEMA)


@pytest.fixture(scope="module")
def vfr_mp4(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("v") / "vfr.mp4"
    pts = vfr_pts(60)
    write_video(path, pts)
    return path, pts


def test_vfr_mp4_exact_times_and_chunks(vfr_mp4):
    path, pts = vfr_mp4
    chunks, dead = run(decode_video_container(str(path), session_id="s", stream_id="cam",
                                              chunk_frames=16))
    assert dead == []
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert [c.num_records for c in chunks] == [16, 16, 16, 12]
    t = rows(chunks)
    assert t.column("pts").to_pylist() == pts.tolist()
    # exact: pts * 1/90000 s in ns, rounded to the nearest ns
    assert t.column("t_ns").to_pylist() == [round(Fraction(int(p) * 10**9, 90000)) for p in pts]
    assert t.column("pos").to_pylist() == list(range(60))
    assert set(t.column("width").to_pylist()) == {W} and set(t.column("height").to_pylist()) == {H}
    assert t.column("keyframe").to_pylist()[0] is True
    assert t.column("image").null_count == 60
    assert chunks[0].prev_t_ns is None
    for prev, c in itertools.pairwise(chunks):
        assert c.prev_t_ns == int(prev.t_ns().max())
    m = chunks[0].meta
    assert (m["codec"], m["width"], m["height"], m["time_base"]) == ("h264", W, H, "1/90000")
    assert m["frames"] == 60 and m["avg_rate"] > 0
    assert all(c.modality == "video" and c.clock == "device" for c in chunks)


def test_inline_images_are_jpeg_of_the_frame(vfr_mp4):
    path, _ = vfr_mp4
    chunks, dead = run(decode_video_container(str(path), session_id="s", stream_id="cam",
                                              inline_images=True))
    assert dead == []
    jpg = rows(chunks).column("image")[5].as_py()
    assert jpg[:2] == b"\xff\xd8"
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    assert np.abs(rgb.astype(int) - frame_image(5)).mean() < 12


@pytest.mark.parametrize("ext,codec", [(".mkv", "libx264"), (".webm", "libvpx")])
def test_mkv_and_webm(tmp_path, ext, codec):
    path = tmp_path / f"v{ext}"
    pts = vfr_pts(30, seed=3) // 90      # ms, the Matroska time base
    write_video(path, pts, codec=codec, time_base=Fraction(1, 1000))
    chunks, dead = run(decode_video_container(str(path), session_id="s", stream_id="cam"))
    assert dead == []
    t = rows(chunks)
    assert t.column("t_ns").to_pylist() == (pts * 1_000_000).tolist()
    assert chunks[0].meta["codec"] == {"libx264": "h264", "libvpx": "vp8"}[codec]


def corrupt_copy(src: Path, dst: Path, packet_numbers: list[int]) -> list[int]:
    """Overwrite the payload of some packets (in demux order); returns their pts."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        pk = [(p.pos, p.size, p.pts) for p in c.demux(c.streams.video[0]) if p.size]
    hit = []
    for n in packet_numbers:
        pos, size, p = pk[n]
        data[pos:pos + size] = b"\xff" * size
        hit.append(p)
    dst.write_bytes(bytes(data))
    return hit


def test_corrupt_packets_give_frame_dead_letters_and_the_rest(vfr_mp4, tmp_path):
    path, pts = vfr_mp4
    bad = tmp_path / "bad.mp4"
    hit = corrupt_copy(path, bad, [25, 41])
    chunks, dead = run(decode_video_container(str(bad), session_id="s", stream_id="cam"))
    t = rows(chunks)
    good_pts = set(t.column("pts").to_pylist())
    bad_positions = {int(np.searchsorted(pts, p)) for p in hit}
    assert len(dead) >= 2
    assert all(d.stage == "decode" and d.position.startswith("frame=") for d in dead)
    assert all(d.reason in {"corrupt_frame", "frame_lost"} for d in dead)
    dead_pos = {int(d.position.split("=")[1]) for d in dead}
    assert bad_positions <= dead_pos
    assert all(str(bad) in d.message for d in dead)
    # nothing silently dropped: every frame is a row or a dead letter, and most are rows
    assert good_pts.isdisjoint(set(pts[sorted(dead_pos)].tolist()))
    assert len(good_pts) + len(dead_pos) == 60
    assert len(good_pts) >= 50
    # positions of the good rows still point at the right frames
    assert t.column("pos").to_pylist() == [int(np.searchsorted(pts, p)) for p in
                                            t.column("pts").to_pylist()]


def test_truncated_and_garbage_files_are_file_dead_letters(vfr_mp4, tmp_path):
    path, _ = vfr_mp4
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    for p, reason in ((trunc, "corrupt_file"), (garbage, "corrupt_file"),
                      (tmp_path / "absent.mp4", "missing_file")):
        chunks, dead = run(decode_video_container(str(p), session_id="s", stream_id="cam"))
        assert chunks == [] and len(dead) == 1
        assert dead[0].reason == reason and dead[0].position == "file"
        assert str(p) in dead[0].message


def test_oversize_file(vfr_mp4):
    path, _ = vfr_mp4
    chunks, dead = run(decode_video_container(str(path), session_id="s", stream_id="cam",
                                              options={"max_bytes": 1000}))
    assert chunks == [] and [d.reason for d in dead] == ["oversize"]


def test_load_frames_by_pos_matches_sequential_decode(vfr_mp4):
    path, _ = vfr_mp4
    with av.open(str(path)) as c:
        decoded = list(c.decode(video=0))
        all_frames = [frame_to_rgb(f) for f in decoded]
        swscale = [f.to_ndarray(format="rgb24") for f in decoded]
    want = [57, 3, 30, 31, 0, 3]       # unsorted, repeated, across GOPs (g=10)
    got = load_frames(str(path), want)
    assert got.shape == (6, H, W, 3) and got.dtype == np.uint8
    for k, p in enumerate(want):
        assert np.array_equal(got[k], all_frames[p])
        # the fast BT.601 path is FFmpeg's conversion up to chroma upsampling
        assert np.abs(got[k].astype(int) - swscale[p].astype(int)).max() <= 3
    small = load_frames(str(path), [10], size=(32, 24))
    assert small.shape == (1, 24, 32, 3)
    with pytest.raises(ValueError, match="out of range"):
        load_frames(str(path), [60])


@pytest.mark.parametrize("tags", [
    {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709"},
    {"color_range": "pc"},
])
def test_frames_not_bt601_limited_convert_through_ffmpeg(tmp_path, tags):
    """BT.709 or full-range frames take swscale, which reads their tags, not the BT.601
    limited-range fast path."""
    path = tmp_path / "tagged.mp4"
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (H, W, 3), np.uint8)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30, options=dict(tags))
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        for pkt in [*vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")), *vs.encode()]:
            out.mux(pkt)
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
    assert (int(f.colorspace), int(f.color_range)) != (2, 0)
    want = f.to_ndarray(format="rgb24")
    assert np.array_equal(frame_to_rgb(f), want)
    assert np.array_equal(load_frames(str(path), [0])[0], want)


def test_packet_index_is_read_once_per_file_version(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, vfr_pts(12))
    first = file_packet_index(str(path))
    assert file_packet_index(str(path)) is first and len(first.pts) == 12
    write_video(path, vfr_pts(20))               # rewritten: new size/mtime, new index
    assert len(file_packet_index(str(path)).pts) == 20
    assert len(load_frames(str(path), [19])) == 1


def test_packet_index_counts_every_frame(vfr_mp4):
    path, pts = vfr_mp4
    idx = packet_index(str(path))
    assert idx.complete and idx.pts.tolist() == pts.tolist()
    assert idx.key_pts[0] == 0 and len(idx.key_pts) >= 6


# ---------------------------------------------------------------- image sequences

def make_sequence(folder: Path, n: int = 10, header: bool = True, sep: str = ",") -> Path:
    (folder / "rgb").mkdir(parents=True)
    lines = ["# recorded by test", "timestamp,filename"] if header else []
    for i in range(n):
        name = f"rgb/{i:04d}.png"
        if i == 4:
            png = cv2.imencode(".png", frame_image(i))[1].tobytes()
            (folder / name).write_bytes(png[:len(png) // 3])           # cut short
        elif i != 7:                                                   # 7 is missing
            cv2.imwrite(str(folder / name), cv2.cvtColor(frame_image(i), cv2.COLOR_RGB2BGR))
        lines.append(f"1700000000.{i * 33_333_333:09d}{sep}{name}")
    index = folder / "rgb.txt"
    index.write_text("\n".join(lines) + "\n")
    return index


def test_image_sequence_with_corrupt_and_missing_image(tmp_path):
    index = make_sequence(tmp_path)
    chunks, dead = run(decode_image_sequence(str(index), session_id="s", stream_id="cam",
                                             chunk_frames=3))
    t = rows(chunks)
    assert t.column("pos").to_pylist() == [0, 1, 2, 3, 5, 6, 8, 9]
    assert t.column("t_ns").to_pylist() == [1_700_000_000_000_000_000 + p * 33_333_333
                                            for p in t.column("pos").to_pylist()]
    assert t.column("file").to_pylist()[0] == "rgb/0000.png"
    assert set(t.column("width").to_pylist()) == {W}
    assert t.column("pts").null_count == 8
    assert {(d.reason, d.position) for d in dead} == {("corrupt_image", "frame=4"),
                                                      ("missing_image", "frame=7")}
    assert {d.source_uri for d in dead} == {str(tmp_path / "rgb/0004.png"),
                                            str(tmp_path / "rgb/0007.png")}
    corrupt = next(d for d in dead if d.reason == "corrupt_image")
    assert "truncated PNG" in corrupt.message and "no IEND chunk" in corrupt.message
    assert chunks[0].meta["width"] == W and chunks[0].meta["kind"] == "image_sequence"
    assert [c.prev_t_ns for c in chunks][:2] == [None, int(chunks[0].t_ns().max())]


def test_image_sequence_units_bad_lines_and_escape(tmp_path):
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", frame_image(1))[1].tobytes())
    index = tmp_path / "index.txt"
    index.write_bytes(b"100 a.png\n"
                      b"1.5 a.png\n"
                      b"oops a.png\n"
                      b"200\n"
                      b"300 ../outside.png\n"
                      b"\xff\xfe 400 a.png\n")
    chunks, dead = run(decode_image_sequence(str(index), session_id="s", stream_id="cam"))
    assert rows(chunks).column("t_ns").to_pylist() == [100, 1_500_000_000]
    assert [(d.reason, d.position) for d in dead] == [
        ("bad_timestamp", "frame=2"), ("bad_index_line", "frame=3"), ("bad_path", "frame=4"),
        ("bad_index_line", "frame=5")]
    assert dead[0].payload == b"oops a.png" and dead[0].payload_format == "index-line"
    chunks, _ = run(decode_image_sequence(str(index), session_id="s", stream_id="cam",
                                          options={"time_unit": "ms"}))
    assert rows(chunks).column("t_ns").to_pylist() == [100_000_000, 1_500_000]


def test_load_frames_from_image_sequence(tmp_path):
    index = make_sequence(tmp_path, header=False, sep=" ")
    got = load_frames(str(index), [9, 0], kind="image_sequence")
    assert got.shape == (2, H, W, 3)
    assert np.array_equal(got[0], frame_image(9)) and np.array_equal(got[1], frame_image(0))
    with pytest.raises(ValueError, match="frame 7"):
        load_frames(str(index), [7], kind="image_sequence")


def test_decode_file_dispatches_video_streams(vfr_mp4, tmp_path):
    from mmalign.schemas.manifest import Stream
    from mmalign.transforms.decode.stage import decode_file

    path, _ = vfr_mp4
    index = make_sequence(tmp_path)
    cam = Stream(id="cam", modality="video", files=[str(path)], options={"chunk_frames": 100})
    chunks, dead = run(decode_file(cam, path, session_id="s"))
    assert dead == [] and [c.num_records for c in chunks] == [60]
    seq = Stream(id="cam", modality="video", files=[str(index)], options={"inline_images": True})
    chunks, dead = run(decode_file(seq, index, session_id="s"))
    assert len(dead) == 2 and rows(chunks).column("image")[0].as_py()[:4] == b"\x89PNG"
