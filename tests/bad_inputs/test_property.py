"""Property: any timestamps at all (huge, negative, duplicate, unsorted, at the int64 edges)
go through decode -> validate -> clock -> bucket -> align for every modality without an
exception escaping and without a record lost: every input record ends up aligned (counted by
the bucket that owns it) or in a dead letter, and the work stays bounded."""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.clock import MAX_ABS_TIME_NS, ClockModel
from mmalign.schemas.manifest import ManifestError, load_manifest
from mmalign.transforms.align.buckets import chunk_pieces
from mmalign.transforms.align.join import align_bucket, plan_from_manifest
from mmalign.transforms.clock.apply import apply_clock
from mmalign.transforms.decode.stage import decode_file
from mmalign.transforms.validate.stage import validate_chunk
from mmalign.transforms.validate.timestamps import TimestampRule, chunk_centre, weighted_median

I64 = 2**63 - 1
EDGES = [0, 1, -1, I64, -I64 - 1, 2**62, -(2**62), 2**62 + 1, 9 * 10**18, 10**15, 86_400 * 10**9]
times = st.one_of(st.sampled_from(EDGES), st.integers(-I64 - 1, I64),
                  st.integers(0, 10 * 10**9), st.integers(-(10**12), 10**12))
# sorted runs with duplicates, unsorted, mixed with absurd values
time_lists = st.lists(times, min_size=0, max_size=40).map(
    lambda xs: xs) | st.lists(st.integers(0, 4 * 10**9), min_size=1, max_size=40).map(sorted)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _png() -> bytes:
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"\x00\x00\x00\x00\x00"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw * 2)) + chunk(b"IEND", b""))


def _manifest(d: Path, stream: dict) -> Path:
    doc = {"session": "prop", "streams": [stream],
           "alignment": {"ticks": {"rate_hz": 10}, "bucket_s": 4.0}}
    p = d / "manifest.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _write(d: Path, modality: str, ts: list[int]) -> tuple[dict, int]:
    """A source of ``modality`` whose records carry the times ``ts``; (stream, records in)."""
    if modality == "sensor":
        (d / "s.csv").write_text("t_ns,x\n" + "".join(f"{t},{i * 0.5}\n"
                                                      for i, t in enumerate(ts)))
        return {"id": "s", "modality": "sensor", "files": ["s.csv"],
                "options": {"time_unit": "ns"}}, len(ts)
    if modality == "video":
        png = _png()
        for i in range(len(ts)):
            (d / f"{i}.png").write_bytes(png)
        (d / "index.txt").write_text("".join(f"{t} {i}.png\n" for i, t in enumerate(ts)))
        return {"id": "v", "modality": "video", "files": ["index.txt"],
                "options": {"time_unit": "ns"}}, len(ts)
    if modality == "text":
        (d / "t.jsonl").write_text("".join(
            f'{{"start_ns": {t}, "end_ns": {t + 10**8 if abs(t) < 2**62 else t}, '
            f'"text": "w{i}"}}\n' for i, t in enumerate(ts)))
        return {"id": "t", "modality": "text", "files": ["t.jsonl"]}, len(ts)
    # audio: the one time is the start of sample 0
    start = ts[0] if ts else 0
    sf.write(str(d / "a.wav"), np.zeros(3000, np.float32), 8000, subtype="PCM_16")
    return {"id": "a", "modality": "audio", "files": ["a.wav"],
            "options": {"start_ns": start}}, 3                   # 3000 / 1024 blocks


def run_through(d: Path, modality: str, ts: list[int], drift_ppm: float, offset_ns: int):
    stream_doc, records_in = _write(d, modality, ts)
    try:
        manifest = load_manifest(_manifest(d, stream_doc))
    except ManifestError as e:           # an absurd configured time is refused up front
        assert modality == "audio" and abs(ts[0]) > MAX_ABS_TIME_NS, e
        return
    stream = manifest.streams[0]
    plan = plan_from_manifest(manifest)
    decoded, dead = [], 0
    for out in decode_file(stream, manifest.resolve(stream.paths[0]), session_id="prop",
                           roots=(str(d),)):
        if isinstance(out, DeadLetter):
            dead += out.records
        else:
            decoded.append(out)
    assert sum(c.num_records for c in decoded) + dead == records_in
    rule = TimestampRule()
    centre = weighted_median(chunk_centre(c.t_ns(), rule) for c in decoded)
    good = []
    for c in decoded:
        g, letters = validate_chunk(c, stream.options, rule=rule, centre=centre)
        dead += sum(x.records for x in letters)
        assert (g.num_records if g else 0) + sum(x.records for x in letters) == c.num_records
        if g is not None:
            good.append(g)
    model = ClockModel.declared(offset_ns, drift_ppm)
    pieces = defaultdict(list)
    owned = 0
    for g in good:
        clocked = apply_clock(g, model)
        sp = plan.streams[0]
        n_pieces = 0
        for b, piece in chunk_pieces(clocked, bucket_ns=plan.bucket_ns,
                                     margin_ns=sp.margin_ns(), is_anchor=False):
            pieces[b].append(piece)
            owned += piece.owned
            n_pieces += 1
        assert n_pieces <= 3 * clocked.num_records + 24 * 3600 // 4 + 3   # bounded work
    for b, ps in pieces.items():
        table = align_bucket(plan, b, ps)
        assert table.num_rows <= 4 * 10 + 2                   # 10 Hz ticks in a 4 s bucket
    assert owned + dead == records_in, (owned, dead, records_in)


@SETTINGS
@given(ts=time_lists, drift=st.sampled_from([0.0, 80.0, -2000.0]),
       offset=st.sampled_from([0, 5 * 10**9, -(10**12)]))
def test_sensor_times(tmp_path_factory, ts, drift, offset):
    run_through(tmp_path_factory.mktemp("s"), "sensor", ts, drift, offset)


@SETTINGS
@given(ts=time_lists, drift=st.sampled_from([0.0, 80.0]), offset=st.sampled_from([0, 10**9]))
def test_video_index_times(tmp_path_factory, ts, drift, offset):
    run_through(tmp_path_factory.mktemp("v"), "video", ts, drift, offset)


@SETTINGS
@given(ts=time_lists, drift=st.sampled_from([0.0, -150.0]), offset=st.sampled_from([0, 10**9]))
def test_text_times(tmp_path_factory, ts, drift, offset):
    run_through(tmp_path_factory.mktemp("t"), "text", ts, drift, offset)


@SETTINGS
@given(ts=st.lists(times, min_size=1, max_size=1), drift=st.sampled_from([0.0, 200.0]),
       offset=st.sampled_from([0, -(10**9)]))
def test_audio_start_times(tmp_path_factory, ts, drift, offset):
    run_through(tmp_path_factory.mktemp("a"), "audio", ts, drift, offset)
