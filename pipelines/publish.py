"""`mmalign publish`: replay a recording (a manifest) into the ingest topics.

Every stream is decoded exactly as the backfill decodes it (transforms/decode.py); each chunk
becomes one message (schemas/message.py) on its modality's topic, keyed by the session id,
in event-time order across streams, at ``speed`` x real time (0 = as fast as possible).
Chunks whose Arrow bytes exceed ``inline_max_bytes`` are written to a spool file and sent as
a URI with a byte range. Decode failures (a corrupt frame, a bad file) go straight to the
dead-letter topic with stage "decode", as the backfill routes them to its dead-letter files.

Because a replayed recording is complete, the publisher also declares each stream's extent
on the reference clock (the calibration's clocks, after validation: exactly the backfill's
``StreamExtents``) in every message, so the streaming job can mark ticks beyond a stream's
data ``out_of_range`` as the backfill does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from deadletter.kafka_topic import DeadLetterProducer
from deadletter.record import DeadLetter
from pipelines.kafka_config import KafkaSettings
from schemas.calibration import load_calibration
from schemas.envelope import Chunk
from schemas.manifest import load_manifest
from schemas.message import Envelope, batch_to_ipc, chunk_envelope, encode
from transforms.align import chunk_extent
from transforms.clock import apply_clock
from transforms.decode import decode_file
from transforms.validate import validate_chunk

DEFAULT_INLINE_MAX_BYTES = 900_000   # under Kafka's default 1 MB message limit


@dataclass
class Prepared:
    """A recording turned into messages, ready to send."""
    session: str
    messages: list[tuple[str, Envelope, bytes]]      # (topic, envelope, arrow ipc bytes)
    dead: list[DeadLetter]
    extents: dict[str, list[int]]


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
            declare_extents: bool = True) -> Prepared:
    """Decode the recording into envelopes (sorted by event time) and decode dead letters."""
    m = load_manifest(manifest_path)
    cal = load_calibration(m.resolve(m.calibration, "calibration") if m.calibration else None)
    chunks: list[Chunk] = []
    dead: list[DeadLetter] = []
    spans: dict[str, tuple[int, int]] = {}
    for s in m.streams:
        model = cal.clock(s.clock_domain)
        for i, f in enumerate(s.files):
            path = m.resolve(f, f"streams[{s.id}].files[{i}]")
            for out in decode_file(s, path, session_id=m.session):
                if isinstance(out, DeadLetter):
                    dead.append(out)
                    continue
                if out.num_records == 0:
                    continue
                chunks.append(out)
                good, _ = validate_chunk(out, s.options)
                if good is not None:
                    _, (lo, hi) = chunk_extent(apply_clock(good, model))
                    old = spans.get(s.id)
                    spans[s.id] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    extents = {k: [int(a), int(b)] for k, (a, b) in sorted(spans.items())}
    seqs: dict[str, int] = {}
    messages = []
    for c in sorted(chunks, key=lambda c: (int(c.t_ns().min()), c.stream_id, c.seq)):
        seq = seqs.get(c.stream_id, 0)
        seqs[c.stream_id] = seq + 1
        env = chunk_envelope(c, seq, extents if declare_extents else None)
        messages.append((settings.topic_for(c.modality), env, batch_to_ipc(c.data)))
    return Prepared(m.session, messages, dead, extents)


def publish(manifest_path: str | Path, settings: KafkaSettings, *, speed: float = 0.0,
            inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES, spool_dir: str | Path | None = None,
            declare_extents: bool = True, run_id: str = "publish",
            progress=None) -> PublishReport:
    """Send the recording's messages (and its decode dead letters); returns counts."""
    from kafka import KafkaProducer

    prep = prepare(manifest_path, settings, declare_extents)
    report = PublishReport(prep.session, speed=speed)
    producer = KafkaProducer(**settings.common(), acks="all", retries=20, linger_ms=5,
                             retry_backoff_ms=250, max_in_flight_requests_per_connection=1,
                             max_request_size=max(1_048_576, inline_max_bytes + 65_536))
    spool = None
    try:
        t0 = time.perf_counter()
        report.started_wall_ns = time.time_ns()
        report.first_event_ns = prep.messages[0][1].t_ns if prep.messages else 0
        for i, (topic, env, ipc) in enumerate(prep.messages):
            if speed > 0:
                due = (env.t_ns - report.first_event_ns) / 1e9 / speed
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
    from dataclasses import replace
    return replace(env, payload=payload)


def cmd_publish(ns) -> int:
    """`mmalign publish`: exit 0 sent, 1 Kafka unreachable, 2 bad input."""
    import json
    import sys

    from kafka.errors import KafkaError

    from pipelines.kafka_config import KafkaConfigError, settings_from_args
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
        print(f"mmalign publish: Kafka at {settings.bootstrap_servers} failed "
              f"({type(e).__name__}: {e}); is the broker up (make kafka-up)?", file=sys.stderr)
        return 1
    if ns.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        sent = ", ".join(f"{t}: {n}" for t, n in sorted(report.messages.items()))
        print(f"published session {report.session}: {sent} ({report.bytes} bytes, "
              f"{report.spooled} spooled, {report.decode_dead} decode dead letters to "
              f"{settings.deadletter_topic}) in {report.elapsed_s:.2f} s")
    return 0
