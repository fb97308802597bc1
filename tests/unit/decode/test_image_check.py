"""The structural image check (transforms/decode/image_check.py) against OpenCV's decoder, on
the real photos of Debian's opencv-doc (91 PNG and JPEG files from many encoders) and on a
corpus of damaged copies built here: whatever the check calls whole, the decoder decodes to
the same size; every damaged PNG is caught, and every cut JPEG."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from mmalign.transforms.decode.image_check import check_image
from tests.opencv_doc_data import opencv_doc_data


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    data = opencv_doc_data()
    files = sorted(p for p in data.iterdir() if p.suffix in (".png", ".jpg"))
    assert len(files) >= 60
    return {p.name: p.read_bytes() for p in files}


def _decoded_size(data: bytes) -> tuple[int, int] | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if img is None else (img.shape[1], img.shape[0])


def test_every_real_photo_is_whole_at_the_decoders_size(photos):
    for name, data in photos.items():
        verdict = check_image(data)
        assert verdict is not None and verdict.problem is None, (name, verdict)
        assert (verdict.width, verdict.height) == _decoded_size(data), name


def test_every_damaged_png_is_caught(photos):
    rng = random.Random(7)
    pngs = {k: v for k, v in photos.items() if k.endswith(".png")}
    caught = 0
    for name, data in pngs.items():
        damaged = [data[:round(len(data) * f)] for f in (0.1, 0.5, 0.9, 0.999)]
        damaged.append(data[:-12])                                   # IEND gone
        for _ in range(12):                                          # one flipped bit
            b = bytearray(data)
            i = rng.randrange(len(b) - 12)     # anywhere but IEND (a flip there can be benign)
            b[i] ^= 1 << rng.randrange(8)
            damaged.append(bytes(b))
        spliced = bytearray(data)                                    # a block zeroed
        spliced[len(data) // 2:len(data) // 2 + 64] = bytes(64)
        damaged.append(bytes(spliced))
        for bad in damaged:
            if bad == data:
                continue
            verdict = check_image(bad)
            if verdict is None:              # no PNG signature any more: the decoder decides
                assert _decoded_size(bad) is None, name
            else:
                assert verdict.problem, (name, len(bad))
                caught += 1
    assert caught > 15 * len(pngs)


def test_every_cut_jpeg_is_caught_and_a_whole_one_decodes(photos):
    jpegs = {k: v for k, v in photos.items() if k.endswith(".jpg")}
    for name, data in jpegs.items():
        for f in (0.02, 0.3, 0.7, 0.99):
            verdict = check_image(data[:round(len(data) * f)])
            assert verdict is not None and verdict.problem, (name, f)
            assert "JPEG" in verdict.problem
        for tail in (bytes(16), b"\xff\xd8appended by a phone\xff\xe1\x00\x10"):
            verdict = check_image(data + tail)          # data after EOI: not the image's
            assert verdict is not None and verdict.problem is None, name


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n", "truncated PNG"),
    (b"\xff\xd8\xff\xd9", "JPEG"),
])
def test_degenerate_files_name_their_problem(data, words):
    verdict = check_image(data)
    assert verdict is not None and words in verdict.problem


def test_other_formats_are_left_to_the_decoder():
    img = np.zeros((8, 8, 3), np.uint8)
    for ext in (".bmp", ".tiff"):
        assert check_image(cv2.imencode(ext, img)[1].tobytes()) is None
    assert check_image(b"not an image at all") is None
