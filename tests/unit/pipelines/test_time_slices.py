"""The time-sliced backfill's planning: which chunks each slice reads, stream order, letter
parts (pipelines/time_slices.py; the end-to-end equality is in
tests/integration/test_backfill_slices.py)."""

from types import SimpleNamespace

import pytest

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.deadletter.record import DeadLetter
from mmalign.pipelines import time_slices as ts
from mmalign.schemas.manifest import Stream
from mmalign.transforms.decode.stage import DecodeRequest

B = 4_000_000_000


def ref(session: str, stream: str, buckets, extent=(0, 1)) -> ts.Spilled:
    return ts.Spilled((session, stream), f"/x/{session}-{stream}-{buckets}", extent=extent,
                      buckets=tuple(buckets))


def test_slices_hold_the_chunks_with_pieces_in_them():
    job = SimpleNamespace(bucket_ns=B)
    refs = [ref("a", "cam", [0, 1]), ref("a", "cam", [1, 2]), ref("a", "mic", [2, 3]),
            ref("a", "mic", [5]), ref("b", "cam", [-1, 0])]
    plan = ts.slice_plan(job, refs, 8.0)                # 2 buckets per slice
    got = [(s, (r.start, r.stop), [x.buckets for x in rs]) for s, r, rs in plan]
    assert got == [
        ("a", (0, 2), [(0, 1), (1, 2)]),
        ("a", (2, 4), [(1, 2), (2, 3)]),
        ("a", (4, 6), [(5,)]),
        ("b", (-2, 0), [(-1, 0)]),
        ("b", (0, 2), [(-1, 0)]),
    ]
    # every (session, bucket) a chunk reaches is in exactly one slice that reads the chunk
    for r in refs:
        for b in r.buckets:
            holders = [rs for s, rng, rs in plan if s == r.key[0] and b in rng]
            assert len(holders) == 1 and r in holders[0]


def test_a_stray_far_time_costs_one_slice_not_the_span():
    job = SimpleNamespace(bucket_ns=B)
    far = 10**18 // B                    # ~31 years of 4 s buckets away
    plan = ts.slice_plan(job, [ref("a", "imu", [0, 1]), ref("a", "imu", [far])], 60.0)
    assert len(plan) == 2 and plan[1][1].start <= far < plan[1][1].stop


def test_slice_length_is_whole_buckets_and_at_least_one():
    job = SimpleNamespace(bucket_ns=B)
    assert [len(r) for _, r, _ in ts.slice_plan(job, [ref("a", "x", [0])], 0.001)] == [1]
    assert [len(r) for _, r, _ in ts.slice_plan(job, [ref("a", "x", [0])], 61.0)] == [15]


def test_stream_extents_merge_every_chunk():
    refs = [ref("a", "cam", [0], (5, 9)), ref("a", "cam", [1], (10, 20)),
            ref("a", "mic", [0], (3, 4))]
    assert ts.stream_extents(refs) == {("a", "cam"): (5, 20), ("a", "mic"): (3, 4)}


def test_streams_are_pulled_slowest_kind_first(tmp_path):
    def req(sid, modality, size, name):
        p = tmp_path / name
        p.write_bytes(b"x" * size)
        return DecodeRequest("s", Stream(id=sid, modality=modality, files=[name]), str(p))

    job = SimpleNamespace(sources=[
        req("imu", "sensor", 900, "imu.csv"), req("txt", "text", 5000, "t.srt"),
        req("mic", "audio", 100, "mic.wav"), req("cam1", "video", 10, "idx.txt"),
        req("cam0", "video", 50, "a.mp4"), req("cam0", "video", 60, "b.mp4")])
    order = [[r.path.rsplit("/", 1)[1] for r in rs] for rs in ts.stream_order(job)]
    assert order == [["a.mp4", "b.mp4"], ["idx.txt"], ["mic.wav"], ["imu.csv"], ["t.srt"]]


def test_letter_parts_merge_into_one_sorted_file_per_session(tmp_path):
    def letter(session, stream, pos):
        return DeadLetter(stage="validate", error_class="NonFiniteValue", reason="nan_value",
                          message="m",
                          session_id=session, stream_id=stream, position=f"row={pos}",
                          run_id="r")

    parts = tmp_path / "parts"
    ts.letter_part("streams-0")(str(parts), "a", [letter("a", "imu", 7), letter("a", "cam", 2)])
    ts.letter_part("streams-1")(str(parts), "a", [letter("a", "imu", 3)])
    ts.letter_part("slices-0")(str(parts), "b", [letter("b", "imu", 1)])
    ts.merge_letters(parts, tmp_path / "out")
    t = read_dead_letters(tmp_path / "out")
    rows = list(zip(t.column("session_id").to_pylist(), t.column("stream_id").to_pylist(),
                    t.column("position").to_pylist()))
    assert sorted(rows) == sorted([("a", "cam", "row=2"), ("a", "imu", "row=3"),
                                   ("a", "imu", "row=7"), ("b", "imu", "row=1")])
    a = [r for r in rows if r[0] == "a"]
    assert a == [("a", "cam", "row=2"), ("a", "imu", "row=3"), ("a", "imu", "row=7")]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_slice_length_must_be_a_finite_positive_number(bad):
    job = SimpleNamespace(synced=False, set_plans={}, feature_store=False)
    with pytest.raises(ts.RunnerConfigError, match="--slice-s must be"):
        ts.resolve_slices(bad, job, "DirectRunner", None)


def test_auto_slices_a_stream_of_files_that_restart_at_zero(tmp_path):
    """A recorder that writes one WAV per 70 s: each file alone is short, the stream is 140 s
    (its files are consecutive segments), so auto slices it."""
    import numpy as np
    import soundfile as sf
    import yaml

    from mmalign.pipelines.core import prepare

    for name in ("part1.wav", "part2.wav"):
        sf.write(tmp_path / name, np.zeros(70 * 8000, np.float32), 8000)
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({
        "session": "parts",
        "streams": [{"id": "mic", "modality": "audio", "files": ["part1.wav", "part2.wav"]}],
        "alignment": {"ticks": {"rate_hz": 10}, "bucket_s": 4.0}}))
    job = prepare([tmp_path / "manifest.yaml"], tmp_path / "out")
    assert ts.probed_seconds(job) == pytest.approx(140.0)
    assert ts.resolve_slices(None, job, "DirectRunner", None) == ts.DEFAULT_SLICE_S
    one = prepare([tmp_path / "manifest.yaml"], tmp_path / "out")
    one.sources = one.sources[:1]
    assert ts.probed_seconds(one) == pytest.approx(70.0)
    assert ts.resolve_slices(None, one, "DirectRunner", None) is None


def test_spill_folders_of_gone_commands_are_removed(tmp_path):
    import os
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()                                      # reaped: its pid runs nothing
    orphan = tmp_path / f"{ts.SPILL_PREFIX}{gone.pid}-x1y2"
    (orphan / "raw").mkdir(parents=True)
    (orphan / "raw" / "c.pkl").write_bytes(b"spilled")
    mine = tmp_path / f"{ts.SPILL_PREFIX}{os.getpid()}-a1b2"     # this process runs
    mine.mkdir()
    init = tmp_path / f"{ts.SPILL_PREFIX}1-zz"                   # pid 1: not ours to judge
    init.mkdir()
    other = tmp_path / "mmalign-slices-notapid-q"
    other.mkdir()
    assert ts.remove_orphan_spills(tmp_path) == [orphan]
    assert not orphan.exists() and mine.is_dir() and init.is_dir() and other.is_dir()
