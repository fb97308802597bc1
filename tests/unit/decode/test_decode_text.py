"""Text decoders on real files: SRT, WebVTT and JSONL, each with bad cues around good ones."""

from __future__ import annotations

import pyarrow as pa

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.text import ARROW_SCHEMA
from mmalign.transforms.decode.text import decode_srt, decode_text_jsonl, decode_vtt

S = 1_000_000_000
MS = 1_000_000


def run(gen) -> tuple[pa.Table, list[Chunk], list[DeadLetter]]:
    out = list(gen)
    chunks = [o for o in out if isinstance(o, Chunk)]
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert len(chunks) + len(dead) == len(out)
    return pa.Table.from_batches([c.data for c in chunks], schema=ARROW_SCHEMA), chunks, dead


SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> there\r\n\r\n"
    "2\n00:00:03,000 --> 00:00:04,000\n{\\an8}Top line\nsecond <b>line</b>\n\n"
    "3\n00:00:05,000 -> 00:00:06,000\nbroken arrow\n\n"
).encode() + b"4\n00:00:07,000 --> 00:00:08,000\nbad \xff\xfe bytes\n\n" + (
    "5\n01:02:03,004 --> 01:02:04,000\n<font color=\"red\">caf\u00e9</font>\n"
).encode()


def test_srt_with_bad_cues(tmp_path):
    p = tmp_path / "subs.srt"
    p.write_bytes(SRT)
    t, _chunks, dead = run(decode_srt(str(p), session_id="s", stream_id="sub"))
    assert t.column("pos").to_pylist() == [0, 1, 4]
    assert t.column("text").to_pylist() == ["Hello there", "Top line\nsecond line", "caf\u00e9"]
    assert t.column("t_ns").to_pylist() == [1 * S, 3 * S, 3723 * S + 4 * MS]
    assert t.column("t_end_ns").to_pylist() == [2500 * MS, 4 * S, 3724 * S]
    assert set(t.column("kind").to_pylist()) == {"segment"}
    assert [(d.reason, d.position) for d in dead] == [("bad_timing", "cue=2"),
                                                      ("invalid_utf8", "cue=3")]
    assert dead[1].payload == b"4\n00:00:07,000 --> 00:00:08,000\nbad \xff\xfe bytes"
    assert dead[1].payload_format == "srt-cue" and dead[1].error_class == "EncodingError"
    assert all(str(p) in d.message for d in dead)


VTT = """WEBVTT - a test file
Kind: captions

NOTE this is a comment
spanning two lines

STYLE
::cue { color: red }

intro
00:00.500 --> 00:02.000 align:start position:10%
<v Alice>Hi &amp; welcome</v>

00:00:02.000 --> 00:00:03.250
<c.yellow>Second</c> cue
<00:00:02.500>with a timestamp tag

00:00:04.000 --> 00:00:xx.000
bad timestamp

NOTE
closing note

00:00:05.000 --> 00:00:06.000
last
"""


def test_vtt_header_notes_settings_and_bad_cue(tmp_path):
    p = tmp_path / "subs.vtt"
    p.write_text(VTT)
    t, chunks, dead = run(decode_vtt(str(p), session_id="s", stream_id="sub"))
    assert t.column("pos").to_pylist() == [0, 1, 3]
    assert t.column("text").to_pylist() == ["Hi & welcome", "Second cue\nwith a timestamp tag",
                                            "last"]
    assert t.column("t_ns").to_pylist() == [500 * MS, 2 * S, 5 * S]
    assert t.column("t_end_ns").to_pylist() == [2 * S, 3250 * MS, 6 * S]
    assert [(d.reason, d.position, d.payload_format) for d in dead] == [
        ("bad_timing", "cue=2", "vtt-cue")]
    assert chunks[0].meta == {"format": "vtt"}


def test_vtt_without_header_is_a_file_dead_letter(tmp_path):
    p = tmp_path / "nohead.vtt"
    p.write_text("00:01.000 --> 00:02.000\nhi\n")
    _t, chunks, dead = run(decode_vtt(str(p), session_id="s", stream_id="sub"))
    assert chunks == [] and [(d.reason, d.position) for d in dead] == [("not_webvtt", "file")]


JSONL = b"\n".join([
    b'{"start": 0.1, "end": 0.35, "text": "hello", "kind": "word"}',
    b'{"start": 1700000000.123456789, "end": 1700000001, "text": "exact"}',
    b'',
    b'{"start_ns": 5, "end_ns": 9, "text": "ints", "kind": "segment"}',
    b'{"start": 1.0, "text": "no end"}',
    b'not json at all',
    b'{"start": 2, "end": 3, "text": "\xc3\x28 bad utf8"}',
    b'{"start": "2", "end": 3, "text": "string time"}',
    b'{"start_ns": 7.5, "end_ns": 9, "text": "float ns"}',
    b'[1, 2]',
    b'{"start": 4, "end": 5, "text": "tail"}',
]) + b"\n"


def test_jsonl_segments_and_words_with_bad_lines(tmp_path):
    p = tmp_path / "words.jsonl"
    p.write_bytes(JSONL)
    t, chunks, dead = run(decode_text_jsonl(str(p), session_id="s", stream_id="asr",
                                            options={"chunk_rows": 2}))
    assert t.column("pos").to_pylist() == [0, 1, 2, 9]
    assert t.column("t_ns").to_pylist() == [100 * MS, 1_700_000_000_123_456_789, 5, 4 * S]
    assert t.column("t_end_ns").to_pylist() == [350 * MS, 1_700_000_001 * S, 9, 5 * S]
    assert t.column("kind").to_pylist() == ["word", "segment", "segment", "segment"]
    assert [(d.reason, d.position) for d in dead] == [
        ("missing_field", "cue=3"), ("bad_json", "cue=4"), ("invalid_utf8", "cue=5"),
        ("bad_timestamp", "cue=6"), ("bad_timestamp", "cue=7"), ("bad_json", "cue=8")]
    assert dead[1].payload == b"not json at all" and dead[1].payload_format == "jsonl-row"
    assert [c.seq for c in chunks] == [0, 1]
    assert chunks[1].prev_t_ns == 1_700_000_000_123_456_789


def test_missing_and_oversize(tmp_path):
    p = tmp_path / "subs.srt"
    p.write_bytes(SRT)
    _, chunks, dead = run(decode_srt(str(p), session_id="s", stream_id="sub",
                                     options={"max_bytes": 10}))
    assert chunks == [] and [d.reason for d in dead] == ["oversize"]
    _, chunks, dead = run(decode_vtt(str(tmp_path / "nope.vtt"), session_id="s",
                                     stream_id="sub"))
    assert chunks == [] and [d.reason for d in dead] == ["missing_file"]
