"""Stage metrics: every Beam counter the pipelines report, named in one place.

A counter is ``<stage>.<what>`` or, per modality, ``<stage>.<modality>.<what>`` (Beam
namespace = the stage, name = the rest), so the run summary, align-check and dashboards read
the same names. Each stage has one ``StageMetrics``; a counter object is created once per
name and process, then reused.

    DECODE.count(RECORDS, n, modality="video")     ->  decode.video.records
"""

from __future__ import annotations

import apache_beam as beam

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
