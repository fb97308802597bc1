"""Stage metrics: every Beam counter the pipelines report, named in one place (a contract:
the run summary, align-check, progress lines and dashboards read these names).

A counter is ``<stage>.<what>`` or, per modality, ``<stage>.<modality>.<what>`` (Beam
namespace = the stage, name = the rest), so the run summary, align-check and dashboards read
the same names. Each stage has one ``StageMetrics``; a counter object is created once per
name and process, then reused.

    DECODE.count(RECORDS, n, modality="video")     ->  decode.video.records

Every count also goes to a process-local mirror (``local_counts``, ``gauges``) that the
progress reporter of a local run reads while the pipeline runs (pipelines/progress.py); on a
remote runner the runner's own UI shows the Beam counters.
"""

from __future__ import annotations

import threading
from collections import Counter

import apache_beam as beam

_LOCAL: Counter = Counter()           # "<stage>.<name>" -> count, in this process
_GAUGES: dict[str, float] = {}        # "<name>" -> latest value, in this process
_LOCK = threading.Lock()


def local_counts() -> dict[str, int]:
    """A copy of this process's counts so far (for progress lines)."""
    with _LOCK:
        return dict(_LOCAL)


def gauges() -> dict[str, float]:
    with _LOCK:
        return dict(_GAUGES)


def set_gauge(name: str, value: float) -> None:
    """A process-local gauge (e.g. the streaming reader's watermark) for progress lines."""
    with _LOCK:
        _GAUGES[name] = value

# what is counted
RECORDS = "records"      # records that entered the stage (rows of chunks)
VALID = "valid"          # records the stage passed on
DEAD = "dead"            # records the stage dead-lettered (a letter counts its ``records``)
SAMPLES = "samples"      # align: valid samples, each counted once (in the bucket owning it)
TICKS = "ticks"          # align: rows written, one per tick
ROWS = "rows"            # sink: rows written


class StageMetrics:
    """The counters of one stage (Beam namespace = ``stage``)."""

    def __init__(self, stage: str):
        self.stage = stage
        self._counters: dict[str, object] = {}

    @staticmethod
    def name(what: str, modality: str | None = None) -> str:
        return f"{modality}.{what}" if modality else what

    def count(self, what: str, n: int = 1, *, modality: str | None = None) -> None:
        name = self.name(what, modality)
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = beam.metrics.Metrics.counter(self.stage, name)
        counter.inc(n)
        with _LOCK:
            _LOCAL[f"{self.stage}.{name}"] += n

    def key(self, what: str, modality: str | None = None) -> str:
        """The counter's full name as the run summary lists it."""
        return f"{self.stage}.{self.name(what, modality)}"


INGEST = StageMetrics("ingest")
DECODE = StageMetrics("decode")
VALIDATE = StageMetrics("validate")
SYNC = StageMetrics("sync")
CLOCK = StageMetrics("clock")
ALIGN = StageMetrics("align")
REGISTER = StageMetrics("register")
ENCODE = StageMetrics("encode")
SINK = StageMetrics("sink")
DEADLETTER = StageMetrics("deadletter")
STREAM = StageMetrics("stream")
