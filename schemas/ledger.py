"""One line of the streaming job's read log: a Kafka record the reader claimed.

``OUT/_stream/<group>/read-<topic>-<partition>.jsonl`` holds one JSON object per line, with
one-letter keys so that a long-running job's log stays small (pipelines/stream_ledger.py):

    o      offset                        run   the run that read it
    s      session          st  stream   (the envelope's header; absent: unreadable value)
    t      device time of the first sample, tl  of the last sample, te  the latest
           interval end (ns, null when the message has none)
    eos    1: the stream's end-of-stream message, x  the session's declared streams
    late   1: judged too late (dead-lettered)
    w      the reader's watermark after the poll that read it (us)

e.g. ``{"o":12,"run":"r1","s":"demo-001","st":"imu","t":1000,"tl":1900,"te":null,"w":-3}``.
A record with a readable header always writes s, st, t, tl and te; optional flags only when
set. ``LedgerLine.from_dict(line).to_dict() == line`` for every line the job writes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LedgerLine:
    offset: int
    run: str
    session: str | None = None
    stream: str | None = None
    t_ns: int | None = None             # first sample's device time
    t_last_ns: int | None = None        # last sample's device time
    t_end_ns: int | None = None         # latest interval end (text cues)
    eos: bool = False                   # the stream's end-of-stream message
    extents: tuple[str, ...] = ()       # with eos: the session's declared streams
    late: bool = False                  # judged too late by the reader
    watermark_us: int | None = None     # the reader's watermark after the poll

    @classmethod
    def of_header(cls, offset: int, run: str, header: dict | None, late: bool = False
                  ) -> LedgerLine:
        """The line of a claimed record whose envelope header is ``header`` (None when the
        value could not be read)."""
        if not header:
            return cls(offset, run, late=late)
        eos = bool(header.get("eos"))
        return cls(offset, run, header.get("session"), header.get("stream"),
                   header.get("t_ns"), header.get("t_last_ns"), header.get("t_end_ns"),
                   eos, tuple(sorted(header.get("extents") or ())) if eos else (), late)

    @property
    def has_header(self) -> bool:
        return self.session is not None or self.stream is not None or self.t_ns is not None

    def to_dict(self) -> dict:
        """The compact on-disk form (keys as in the module docstring)."""
        d: dict = {"o": self.offset, "run": self.run}
        if self.has_header:
            d |= {"s": self.session, "st": self.stream, "t": self.t_ns, "tl": self.t_last_ns,
                  "te": self.t_end_ns}
        if self.eos:
            d |= {"eos": 1, "x": list(self.extents)}
        if self.late:
            d["late"] = 1
        if self.watermark_us is not None:
            d["w"] = self.watermark_us
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LedgerLine:
        """A line as written by ``to_dict`` (or by any earlier version of the job)."""
        def num(key):
            v = d.get(key)
            return None if v is None else int(v)

        return cls(int(d["o"]), d["run"], d.get("s"), d.get("st"), num("t"), num("tl"),
                   num("te"), bool(d.get("eos")), tuple(d.get("x") or ()),
                   bool(d.get("late")), num("w"))
