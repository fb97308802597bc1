"""`mmalign publish`: replay a recording (a manifest) into the ingest topics.

Every stream is decoded exactly as the backfill decodes it (transforms/decode.py); each chunk
becomes one message (schemas/message.py) on its modality's topic, keyed by the session id,
in event-time order across streams, at ``speed`` x real time (0 = as fast as possible).
A decoded chunk is cut into time slices of at most ``slice_s`` seconds and about
``slice_max_bytes`` of Arrow data (``slice_chunk``), as a live producer sends small messages:
a whole-recording sensor file is not one message, so the job's watermark moves as data arrives.
Each slice's ``prev_t_ns`` is the running maximum of the earlier rows of its file, so the
validation's order checks see the same history as in the backfill. The last message of each
stream says so (``eos``): the job may then close a finished session's last buckets on a stop.
Slices whose Arrow bytes still exceed ``inline_max_bytes`` are written to a spool file and sent
as a URI with a byte range. Decode failures (a corrupt frame, a bad file) go straight to the
dead-letter topic with stage "decode", as the backfill routes them to its dead-letter files.

Because a replayed recording is complete, the publisher also declares each stream's extent
on the reference clock (the calibration's clocks, after validation: exactly the backfill's
``StreamExtents``) in every message, so the streaming job can mark ticks beyond a stream's
data ``out_of_range`` as the backfill does.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from mmalign.deadletter.kafka_topic import DeadLetterProducer
from mmalign.deadletter.record import DeadLetter
from mmalign.pipelines.kafka_config import kafka_failure, settings_from_args
from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.chunk import Chunk
from mmalign.schemas.envelope import Envelope, batch_to_ipc, chunk_envelope, encode
from mmalign.schemas.kafka import KafkaConfigError, KafkaSettings
from mmalign.schemas.manifest import load_manifest
from mmalign.transforms.align.join import chunk_extent
from mmalign.transforms.clock.apply import apply_clock
from mmalign.transforms.decode.stage import decode_file, manifest_requests
from mmalign.transforms.validate.stage import validate_chunk
from mmalign.transforms.validate.timestamps import TimestampRule, implausible

DEFAULT_INLINE_MAX_BYTES = 900_000   # under Kafka's default 1 MB message limit
DEFAULT_SLICE_S = 1.0                # at most this much event time per message
DEFAULT_SLICE_MAX_BYTES = 256_000    # and about this much Arrow data (a single row may exceed it)


def slice_chunk(chunk: Chunk, max_span_ns: int, max_bytes: int) -> list[Chunk]:
    """Cut ``chunk`` into consecutive row ranges spanning at most ``max_span_ns`` of event time
    (from each range's first row, by the running maximum of t_ns, so out-of-order or missing
    stamps never make an empty or backwards range) and holding about ``max_bytes`` of Arrow
    data. Each slice keeps ``seq``, ``meta`` and ``source_uri``; its ``prev_t_ns`` is the max
    t_ns of the rows before it (and of the chunk's ``prev_t_ns``)."""
    n = chunk.data.num_rows
    if n == 0:
        return []
    if max_span_ns <= 0:
        raise ValueError(f"slice span must be positive, got {max_span_ns} ns")
    lo_i64 = np.iinfo(np.int64).min
    t = chunk.data.column("t_ns").fill_null(lo_i64).to_numpy(zero_copy_only=False)
    t = t.astype(np.int64)
    # rows implausible around the chunk's median (validate dead-letters them) do not move
    # the running maximum: one absurd time must not swallow the rest of the chunk
    t[implausible(t, None, TimestampRule())] = lo_i64
    run_max = np.maximum.accumulate(t)
    per_row = max(1, chunk.data.nbytes // n)
    rows_per_slice = max(1, max_bytes // per_row)
    cuts = [0]
    while cuts[-1] < n:
        start = cuts[-1]
        end = int(np.searchsorted(run_max, run_max[start] + max_span_ns, side="left"))
        end = min(max(end, start + 1), start + rows_per_slice, n)
        cuts.append(end)
    if len(cuts) == 2:
        return [chunk]
    out = []
    prev = chunk.prev_t_ns
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        out.append(chunk.with_data(chunk.data.slice(a, b - a), prev_t_ns=prev))
        m = int(run_max[b - 1])
        if m != lo_i64:
            prev = m if prev is None else max(prev, m)
    return out


@dataclass
class Prepared:
    """A recording turned into messages, ready to send."""
    session: str
    messages: list[tuple[str, Envelope, bytes]]      # (topic, envelope, arrow ipc bytes)
    dead: list[DeadLetter]
    extents: dict[str, list[int]]
    event_ns: list[int] = field(default_factory=list)  # each message's reference time


@dataclass
class PublishReport:
    session: str
    messages: dict[str, int] = field(default_factory=dict)   # per topic
    bytes: int = 0
    spooled: int = 0
    decode_dead: int = 0
    started_wall_ns: int = 0
    first_event_ns: int = 0
    speed: float = 0.0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def prepare(manifest_path: str | Path, settings: KafkaSettings,
            declare_extents: bool = True, *, slice_s: float = DEFAULT_SLICE_S,
            slice_max_bytes: int = DEFAULT_SLICE_MAX_BYTES) -> Prepared:
    """Decode the recording into envelopes (time slices of its chunks, sorted by event time;
    each stream's last one marked ``eos``) and decode dead letters."""
    m = load_manifest(manifest_path)
    cal = load_calibration(m.resolve(m.calibration, "calibration") if m.calibration else None)
    chunks: list[Chunk] = []
    ref_first: list[int] = []          # each chunk's first sample on the reference clock
    dead: list[DeadLetter] = []
    spans: dict[str, tuple[int, int]] = {}
    for req in manifest_requests(m):
        s = req.stream
        model = cal.clock(s.clock_domain)
        for out in decode_file(s, req.path, session_id=m.session, roots=req.roots,
                               time_offset_ns=req.time_offset_ns):
            if isinstance(out, DeadLetter):
                dead.append(out)
                continue
            if out.num_records == 0:
                continue
            for piece in slice_chunk(out, round(slice_s * 1e9), slice_max_bytes):
                chunks.append(piece)
                ref_first.append(_ref_time(_first_t(piece), model))
            good, _ = validate_chunk(out, s.options)
            if good is not None:
                _, (lo, hi) = chunk_extent(apply_clock(good, model))
                old = spans.get(s.id)
                spans[s.id] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    extents = {k: [int(a), int(b)] for k, (a, b) in sorted(spans.items())}
    seqs: dict[str, int] = {}
    messages = []
    # in reference-time order, as devices recording together send them: a device whose
    # clock runs ahead must not be sent ahead (nor one behind late) of the others
    order = sorted(range(len(chunks)), key=lambda i: (ref_first[i], chunks[i].stream_id, i))
    last = {chunks[i].stream_id: i for i in order}
    for i in order:
        c = chunks[i]
        seq = seqs.get(c.stream_id, 0)
        seqs[c.stream_id] = seq + 1
        env = chunk_envelope(c, seq, extents if declare_extents else None,
                             eos=last[c.stream_id] == i)
        messages.append((settings.topic_for(c.modality), env, batch_to_ipc(c.data)))
    return Prepared(m.session, messages, dead, extents, [ref_first[i] for i in order])


def _first_t(c: Chunk) -> int:
    """The message's event time: its earliest sample (the envelope's ``t_ns``)."""
    t = pc.min(c.data.column("t_ns")).as_py()
    return np.iinfo(np.int64).min if t is None else int(t)


def _ref_time(t_dev_ns: int, model) -> int:
    """A device time on the reference clock (the calibration's model); an absent or absurd
    time stays as it is (the sort puts it first; validation dead-letters its rows)."""
    if model is None or abs(t_dev_ns) > 2 ** 62:
        return t_dev_ns
    return int(model.to_ref([t_dev_ns])[0])


def publish(manifest_path: str | Path, settings: KafkaSettings, *, speed: float = 0.0,
            inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES, spool_dir: str | Path | None = None,
            declare_extents: bool = True, run_id: str = "publish",
            progress=None, slice_s: float = DEFAULT_SLICE_S,
            slice_max_bytes: int = DEFAULT_SLICE_MAX_BYTES) -> PublishReport:
    """Send the recording's messages (and its decode dead letters); returns counts."""
    from kafka import KafkaProducer  # lazy: kafka-python only where a broker is used

    prep = prepare(manifest_path, settings, declare_extents, slice_s=slice_s,
                   slice_max_bytes=slice_max_bytes)
    report = PublishReport(prep.session, speed=speed)
    producer = settings.make(KafkaProducer, acks="all", retries=20, linger_ms=5,
                             retry_backoff_ms=250, max_in_flight_requests_per_connection=1,
                             max_request_size=max(1_048_576, inline_max_bytes + 65_536))
    spool = None
    try:
        t0 = time.perf_counter()
        report.started_wall_ns = time.time_ns()
        report.first_event_ns = prep.event_ns[0] if prep.event_ns else 0
        for i, (topic, env, ipc) in enumerate(prep.messages):
            if speed > 0:        # paced on the reference clock, as the devices recorded
                due = (prep.event_ns[i] - report.first_event_ns) / 1e9 / speed
                wait = due - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
            if len(ipc) > inline_max_bytes:
                if spool_dir is None:
                    raise ValueError(f"chunk {env.stream}#{env.seq} is {len(ipc)} bytes, over "
                                     f"inline_max_bytes={inline_max_bytes}; give a spool "
                                     f"folder (--spool) for URI payloads")
                if spool is None:
                    spool = _Spool(Path(spool_dir) / f"{prep.session}.arrows")
                env = _with_payload(env, spool.append(ipc))
                ipc = b""
                report.spooled += 1
            value = encode(env, ipc)
            producer.send(topic, key=prep.session.encode(), value=value)
            report.messages[topic] = report.messages.get(topic, 0) + 1
            report.bytes += len(value)
            if progress is not None and i % 100 == 0:
                progress(i, len(prep.messages))
        producer.flush()
        if prep.dead:
            dlq = DeadLetterProducer(settings)
            try:
                for d in prep.dead:
                    dlq.send(d.with_run(run_id))
                dlq.flush()
            finally:
                dlq.close()
        report.decode_dead = len(prep.dead)
        report.elapsed_s = time.perf_counter() - t0
    finally:
        producer.close()
        if spool is not None:
            spool.close()
    return report


class _Spool:
    """An append-only file of Arrow IPC payloads referenced by byte range."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path.resolve()
        self.f = open(self.path, "ab")

    def append(self, data: bytes) -> dict:
        offset = self.f.tell()
        self.f.write(data)
        self.f.flush()
        return {"kind": "uri", "uri": self.path.as_uri(), "offset": offset, "length": len(data)}

    def close(self) -> None:
        self.f.close()


def _with_payload(env: Envelope, payload: dict) -> Envelope:
    return replace(env, payload=payload)


def cmd_publish(ns) -> int:
    """`mmalign publish`: exit 0 sent, 1 Kafka unreachable, 2 bad input."""
    from kafka.errors import KafkaError  # lazy: kafka-python only where a broker is used

    try:
        settings = settings_from_args(ns)
        shown = [0]

        def progress(i: int, n: int) -> None:
            if not ns.json and i - shown[0] >= 500:
                shown[0] = i
                print(f"  {i}/{n} messages", file=sys.stderr, flush=True)

        report = publish(ns.manifest, settings, speed=ns.speed, spool_dir=ns.spool,
                         declare_extents=not ns.no_extents, run_id=ns.run_id,
                         progress=progress)
    except (KafkaConfigError, ValueError) as e:
        print(f"mmalign publish: {e}", file=sys.stderr)
        return 2
    except KafkaError as e:
        print("mmalign publish: " + kafka_failure(
            settings, f"Kafka at {settings.bootstrap_servers} failed ({type(e).__name__}: {e}); "
            "is the broker up (make kafka-up)?"), file=sys.stderr)
        return 1
    if ns.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        sent = ", ".join(f"{t}: {n}" for t, n in sorted(report.messages.items()))
        print(f"published session {report.session}: {sent} ({report.bytes} bytes, "
              f"{report.spooled} spooled, {report.decode_dead} decode dead letters to "
              f"{settings.deadletter_topic}) in {report.elapsed_s:.2f} s")
    return 0
