"""Stage metrics: every Beam metric the pipelines report, named in one place (a contract:
the run summary, align-check, progress lines, the Prometheus exporter, the alert rules and the
Grafana dashboard read these names).

Two kinds, both created only here:

- **Stage counters** (``StageMetrics``): ``<stage>.<what>`` or, per modality,
  ``<stage>.<modality>.<what>`` (Beam namespace = the stage, name = the rest), so the run
  summary, align-check and dashboards read the same names. Each stage has one
  ``StageMetrics``; a counter object is created once per name and process, then reused.

      DECODE.count(RECORDS, n, modality="video")     ->  decode.video.records

  ``with DECODE.timed(modality="video", session=s, stream=st):`` (or ``timed_iter`` around a
  generator) times one element's processing in the stage: a Beam distribution
  ``<stage>/<modality>.process_us`` and the labelled histogram ``mmalign_stage_seconds``;
  when tracing is on (pipelines/observe.py installs a tracer) a sampled share of them become
  OpenTelemetry spans.
- **Labelled families** (``Family``, listed in ``FAMILIES``): the SLIs with Prometheus labels
  (availability per stream, alignment residuals, dead letters by stage/reason/modality,
  latencies, lags, embedding health, drift). ``STREAM_TICKS.inc(n, session=..., ...)`` goes to
  a Beam metric (namespace = the family's name, name = its labels as ``k=v,k=v``: counters,
  distributions of ints in ``Family.beam_unit``, gauges) and to the process-local mirror.

Every count and observation also goes to a process-local mirror (``local_counts``,
``gauges``, ``series``) that the progress reporter (pipelines/progress.py) and the Prometheus
exporter (pipelines/observe.py) of a local run read while the pipeline runs: the Beam metrics
stay the runner-native source (Flink's and Dataflow's UIs and reporters show them), the
exporter only mirrors them. Local runners (DirectRunner, Prism and Flink with LOOPBACK
workers) run the stages in the launching process.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from mmalign.schemas.chunk import MODALITIES

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
    """A process-local gauge (e.g. the streaming reader's watermark) for progress lines; the
    ones in ``GAUGE_FAMILIES`` are exported as that family too."""
    with _LOCK:
        _GAUGES[name] = value
    family = GAUGE_FAMILIES.get(name)
    if family is not None:
        family.set(value)


# what is counted
RECORDS = "records"      # records that entered the stage (rows of chunks)
VALID = "valid"          # records the stage passed on
DEAD = "dead"            # records the stage dead-lettered (a letter counts its ``records``)
SAMPLES = "samples"      # align: valid samples, each counted once (in the bucket owning it)
TICKS = "ticks"          # align: rows written, one per tick
ROWS = "rows"            # sink: rows written


# -- labelled families ------------------------------------------------------------------------

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

# histogram buckets (seconds)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0, 30.0)
RESIDUAL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05,
                    0.1, 0.25)
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                   600.0, 1800.0, 3600.0)

_series: dict[tuple[str, tuple[str, ...]], float] = {}           # counters and gauges
_hists: dict[tuple[str, tuple[str, ...]], list] = {}             # [bucket counts, sum, count]


@dataclass(frozen=True)
class Family:
    """One exported metric family: Prometheus name (counters without ``_total``: the exporter
    adds it), kind, help, label names, histogram buckets, and how values become Beam ints
    (``beam_scale``: a value times it, e.g. 1e6 for seconds as microseconds)."""
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    beam_scale: float = 1.0

    def exposed(self) -> tuple[str, ...]:
        """The series names Prometheus scrapes for this family."""
        if self.kind == COUNTER:
            return (f"{self.name}_total",)
        if self.kind == HISTOGRAM:
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)

    def _key(self, labels: dict) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labels)}")
        return tuple(str(labels[k]) if labels[k] is not None else "" for k in self.labels)

    def _beam_name(self, key: tuple[str, ...]) -> str:
        return ",".join(f"{k}={v}" for k, v in zip(self.labels, key)) or "value"

    def inc(self, n: float = 1, **labels) -> None:
        key = self._key(labels)
        _beam(self, key, COUNTER).inc(int(n))
        with _LOCK:
            _series[(self.name, key)] = _series.get((self.name, key), 0) + n

    def set(self, value: float, **labels) -> None:
        key = self._key(labels)
        _beam(self, key, GAUGE).set(int(round(value * self.beam_scale)))
        with _LOCK:
            _series[(self.name, key)] = float(value)

    def _hist(self, key: tuple[str, ...]) -> list:
        """[bucket counts, sum, count] of one series (under _LOCK)."""
        h = _hists.get((self.name, key))
        if h is None:
            h = _hists[(self.name, key)] = [np.zeros(len(self.buckets) + 1, np.int64), 0.0, 0]
        return h

    def observe(self, value: float, **labels) -> None:
        """One observation (a stage's time per element: no numpy for one value)."""
        v = float(value)
        if not math.isfinite(v):
            return
        key = self._key(labels)
        _beam(self, key, HISTOGRAM).update(round(v * self.beam_scale))
        i = bisect.bisect_left(self.buckets, v)       # = np.searchsorted(side="left")
        with _LOCK:
            h = self._hist(key)
            h[0][i] += 1
            h[1] += v
            h[2] += 1

    def observe_many(self, values: Iterable[float], **labels) -> None:
        """Many observations of one series (e.g. a bucket's |dt| of one stream)."""
        v = np.asarray(values if isinstance(values, np.ndarray) else list(values),
                       dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            return
        key = self._key(labels)
        dist = _beam(self, key, HISTOGRAM)
        for x in np.round(v * self.beam_scale).astype(np.int64).tolist():
            dist.update(x)
        counts = np.bincount(np.searchsorted(self.buckets, v, side="left"),
                             minlength=len(self.buckets) + 1)
        with _LOCK:
            h = self._hist(key)
            h[0] += counts
            h[1] += float(v.sum())
            h[2] += int(v.size)


_BEAM: dict[tuple[str, tuple[str, ...]], object] = {}


def _beam(family: Family, key: tuple[str, ...], kind: str):
    """The Beam metric object of one series (created once per process)."""
    m = _BEAM.get((family.name, key))
    if m is None:
        name = family._beam_name(key)
        m = _BEAM[(family.name, key)] = (
            beam.metrics.Metrics.counter(family.name, name) if kind == COUNTER else
            beam.metrics.Metrics.gauge(family.name, name) if kind == GAUGE else
            beam.metrics.Metrics.distribution(family.name, name))
    return m


STAGE_EVENTS = Family(
    "mmalign_stage_events", COUNTER,
    "Records in/out and other events of a stage: the stage counters (StageMetrics) "
    "<stage>.<modality>.<what> as labels (modality empty for a counter without one)",
    ("stage", "modality", "what"))
STAGE_SECONDS = Family(
    "mmalign_stage_seconds", HISTOGRAM,
    "Processing time of one element (chunk, bucket, file) in a stage", ("stage", "modality"),
    STAGE_BUCKETS, 1e6)
STREAM_TICKS = Family(
    "mmalign_stream_ticks", COUNTER,
    "Aligned ticks per stream by the stream's status at the tick (ok, partial_window: a value; "
    "others: why it is missing)", ("session", "stream", "modality", "status"))
RESIDUAL = Family(
    "mmalign_alignment_residual_seconds", HISTOGRAM,
    "|dt| between a tick and its matched sample, per stream (rows with a value)",
    ("session", "stream", "modality"), RESIDUAL_BUCKETS, 1e9)
DEAD_LETTERS = Family(
    "mmalign_dead_letters", COUNTER,
    "Records dead-lettered, by stage, reason and modality (a letter counts its records)",
    ("stage", "reason", "modality"))
OUTPUT_LATENCY = Family(
    "mmalign_output_latency_seconds", HISTOGRAM,
    "Event time -> output: wall-clock time a row is written minus its tick's wall-clock "
    "event time (rows whose session start is known)", ("session",), LATENCY_BUCKETS, 1e3)
WATERMARK_LAG = Family(
    "mmalign_watermark_lag_seconds", GAUGE,
    "Streaming: how far the watermark trails the newest event time read", (), (), 1e3)
CONSUMER_LAG = Family(
    "mmalign_kafka_consumer_lag", GAUGE,
    "Streaming: messages between the consumer group's committed offset and the partition's "
    "end", ("topic", "partition"))
COMMITTED_OFFSET = Family(
    "mmalign_kafka_committed_offset", GAUGE,
    "Streaming: the consumer group's committed offset per partition", ("topic", "partition"))
EMBEDDINGS = Family(
    "mmalign_embeddings", COUNTER,
    "Embeddings per stream by status (ok, or why there is none)",
    ("session", "stream", "modality", "status"))
DRIFT_MMD = Family(
    "mmalign_drift_mmd", GAUGE,
    "Embedding/feature drift against the baseline: squared MMD (RBF kernel)",
    ("stream", "modality"), (), 1e6)
DRIFT_P = Family(
    "mmalign_drift_p_value", GAUGE,
    "Permutation-test p-value of the drift MMD", ("stream", "modality"), (), 1e6)
DRIFT_PSI = Family(
    "mmalign_drift_psi", GAUGE,
    "Population stability index on the baseline's principal projections (max over them)",
    ("stream", "modality"), (), 1e6)
DRIFT_SAMPLES = Family(
    "mmalign_drift_samples", GAUGE,
    "Sample size of the current drift estimate", ("stream", "modality"))
CLOCK_RESIDUAL = Family(
    "mmalign_clock_fit_residual_seconds", GAUGE,
    "DTW-sync: RMS of the landmark residuals of the fitted clock (inliers)",
    ("session", "stream"), (), 1e9)
CLOCK_CONFIDENCE = Family(
    "mmalign_clock_fit_confidence", GAUGE,
    "DTW-sync: confidence of the fitted clock (0..1)", ("session", "stream"), (), 1e6)
RUN_SECONDS = Family(
    "mmalign_run_duration_seconds", GAUGE, "Wall time of the finished run", ("job",), (), 1e3)
RUN_FINISHED = Family(
    "mmalign_run_finished_timestamp_seconds", GAUGE,
    "Unix time the run finished (backfill textfile/pushgateway export)", ("job",))

FAMILIES: tuple[Family, ...] = (
    STAGE_EVENTS, STAGE_SECONDS, STREAM_TICKS, RESIDUAL, DEAD_LETTERS, OUTPUT_LATENCY,
    WATERMARK_LAG, CONSUMER_LAG, COMMITTED_OFFSET, EMBEDDINGS, DRIFT_MMD, DRIFT_P, DRIFT_PSI,
    DRIFT_SAMPLES, CLOCK_RESIDUAL, CLOCK_CONFIDENCE, RUN_SECONDS, RUN_FINISHED)

# process-local gauges (set_gauge) exported as a family
GAUGE_FAMILIES: dict[str, Family] = {"ingest.watermark_lag_s": WATERMARK_LAG}


def stage_event_labels(key: str) -> tuple[str, str, str]:
    """``decode.video.records`` -> (stage, modality, what); modality "" when the counter has
    none (``sink.aligned.rows`` -> ("sink", "", "aligned.rows"))."""
    stage, _, rest = key.partition(".")
    head, _, tail = rest.partition(".")
    if head in MODALITIES and tail:
        return stage, head, tail
    return stage, "", rest


def series() -> tuple[dict, dict]:
    """A copy of the mirror: ({(family, labels): value} for counters and gauges, with the
    stage counters as ``mmalign_stage_events``; {(family, labels): (bucket counts, sum,
    count)} for histograms)."""
    with _LOCK:
        values = dict(_series)
        hists = {k: (v[0].copy(), v[1], v[2]) for k, v in _hists.items()}
        local = dict(_LOCAL)
    for key, n in local.items():
        labels = stage_event_labels(key)
        values[(STAGE_EVENTS.name, labels)] = values.get((STAGE_EVENTS.name, labels), 0) + n
    return values, hists


def reset_local() -> None:
    """Forget this process's mirror (tests, benchmarks: one run after another)."""
    with _LOCK:
        _LOCAL.clear()
        _GAUGES.clear()
        _series.clear()
        _hists.clear()


# -- stage timing and spans -------------------------------------------------------------------

# set by pipelines/observe.py when tracing is on: (stage, attributes) -> a context manager
# (an OpenTelemetry span) or None when this element is not sampled
_TRACER: Callable[[str, dict], contextlib.AbstractContextManager | None] | None = None


def set_tracer(tracer: Callable[[str, dict], contextlib.AbstractContextManager | None] | None
               ) -> None:
    global _TRACER
    _TRACER = tracer


class StageMetrics:
    """The counters of one stage (Beam namespace = ``stage``)."""

    def __init__(self, stage: str):
        self.stage = stage
        self._counters: dict[str, object] = {}
        self._timers: dict[str, object] = {}

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

    def record_time(self, seconds: float, modality: str | None = None) -> None:
        """One element's processing time: Beam distribution ``<modality>.process_us`` (µs)
        and ``mmalign_stage_seconds{stage, modality}``."""
        name = self.name("process_us", modality)
        dist = self._timers.get(name)
        if dist is None:
            dist = self._timers[name] = beam.metrics.Metrics.distribution(self.stage, name)
        dist.update(int(seconds * 1e6))
        STAGE_SECONDS.observe(seconds, stage=self.stage, modality=modality or "")

    def _span(self, modality: str | None, attrs: dict):
        tracer = _TRACER
        if tracer is None:
            return None
        return tracer(self.stage, {"modality": modality, **attrs})

    @contextlib.contextmanager
    def timed(self, modality: str | None = None, **attrs) -> Iterator[None]:
        """Time the block as one element of this stage; ``attrs`` (session, stream, bucket,
        ...) go on its span when it is traced."""
        span = self._span(modality, attrs)
        t0 = time.perf_counter()
        try:
            if span is None:
                yield
            else:
                with span:
                    yield
        finally:
            self.record_time(time.perf_counter() - t0, modality)

    def timed_iter(self, items: Iterable, modality: str | None = None, **attrs) -> Iterator:
        """``items`` passed through, timing only the work of producing them (a DoFn's
        generator: what the stage's consumers do with each item is theirs, not this
        stage's); one element's time and span, as ``timed``."""
        span = self._span(modality, attrs)
        if span is not None:
            span.__enter__()
        spent = 0.0
        it = iter(items)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    spent += time.perf_counter() - t0
                    return
                spent += time.perf_counter() - t0
                yield item
        finally:
            if span is not None:
                span.__exit__(None, None, None)
            self.record_time(spent, modality)


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
