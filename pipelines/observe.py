"""Observability: the SLIs of a running job on Prometheus, sampled OpenTelemetry traces, drift
gauges, and the alert rules made from the SLO file.

    mmalign stream ... --metrics-port 9464 [--trace-sample 0.1] [--drift-baseline B.json]
    mmalign backfill ... --metrics-port 9464 | --metrics-textfile F.prom | --pushgateway URL

Where the numbers come from: schemas/metrics.py creates every Beam metric (stage counters,
the labelled SLI families) and mirrors each update in a process-local store. This module adds
no second set of counters: its DoFns *observe* the pipeline's outputs (aligned buckets, dead
letters, DTW-sync results) through those families, and ``MirrorCollector`` serves the mirror
in Prometheus's format when scraped (``prometheus-client``, the ``[observe]`` extra; imported
only when asked for). Local runners (DirectRunner, Prism and Flink with LOOPBACK workers) run
the stages in this process, so the endpoint shows them live; on remote workers the runner's
own metrics (Flink's reporters, Dataflow's monitoring) carry the same Beam metrics.

SLIs (names: schemas/metrics.py ``FAMILIES``; README "Operating it"):

- availability: ``mmalign_stream_ticks_total{session,stream,modality,status}``, the recording
  rule ``mmalign:stream_availability:ratio`` (ticks with a value / ticks, per stream);
- alignment residual: ``mmalign_alignment_residual_seconds`` (|dt| per stream, histogram);
  clock fits: ``mmalign_clock_fit_residual_seconds``, ``mmalign_clock_fit_confidence``;
- dead letters: ``mmalign_dead_letters_total{stage,reason,modality}``;
- latency: ``mmalign_stage_seconds{stage,modality}`` (processing time per element),
  ``mmalign_output_latency_seconds`` (event time -> output), ``mmalign_watermark_lag_seconds``,
  ``mmalign_kafka_consumer_lag{topic,partition}``;
- throughput: ``mmalign_stage_events_total{stage,modality,what}`` (the stage counters);
- embeddings: ``mmalign_embeddings_total{...,status}``; drift: ``mmalign_drift_mmd``,
  ``_p_value``, ``_psi``, ``_samples`` per stream against ``--drift-baseline``.

Traces: ``--trace-sample P`` makes a span of each stage (decode, validate, clock, align,
register, encode, sink) for a share P of the buckets (chunks before bucketing), chosen by a
hash of (run, session, bucket), so one bucket's spans share one trace id across stages and
workers; attributes session/bucket/stream/modality. Exporter: console (stderr), ``otlp``
(OTLP/HTTP, ``OTEL_EXPORTER_OTLP_ENDPOINT``), or a file of JSON spans.

``python -m mmalign.pipelines.observe rules`` writes the alert rules made from the SLO file
(deploy/prometheus/alerts.yml is that output), ``table`` README's SLO table, ``names`` the
exported series names.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from mmalign.pipelines import drift
from mmalign.pipelines.slo import Slo, load_slo, slo_table
from mmalign.schemas import metrics
from mmalign.schemas.aligned import (
    DT_NS,
    EMB_STATUS,
    STATUS,
    TICK_TIME,
    VALUE_STATUSES,
    column,
    stream_ids,
)
from mmalign.schemas.manifest import ManifestError

log = logging.getLogger("mmalign.observe")
EXTRA = "pip install 'mmalign[observe]'"


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class ObserveOptions:
    """What a run exports. Nothing set: the pipeline is built exactly as without this
    module (no observing branches, no server)."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None          # serve /metrics while the job runs (0: any port)
    textfile: str | None = None              # at the end: node_exporter textfile format
    pushgateway: str | None = None           # at the end: push to this Pushgateway
    trace_sample: float = 0.0                # share of buckets traced
    trace_exporter: str = "console"          # console | otlp | a file path (JSON lines)
    drift_baseline: str | None = None        # align-check --save-baseline file
    slo: str | None = None                   # SLO file (default: the packaged one)
    drift_every_s: float = 30.0              # streaming: drift re-estimated this often

    @property
    def enabled(self) -> bool:
        return (self.metrics_port is not None or bool(self.textfile) or bool(self.pushgateway)
                or self.trace_sample > 0 or bool(self.drift_baseline))


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not [HOST:]PORT") from None
    if not 0 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"port {p} is out of range 0..65535")
    return host.strip("[]") or "0.0.0.0", p


def _share(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{v} is not a share between 0 and 1")
    return v


def add_observe_arguments(p: argparse.ArgumentParser) -> None:
    """The observability options of `mmalign backfill`, `demo` and `stream`."""
    g = p.add_argument_group("observability (README 'Operating it')")
    g.add_argument("--metrics-port", type=_host_port, default=None, metavar="[HOST:]PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics while the job "
                        "runs (HOST default 0.0.0.0; PORT 0: a free port, printed)")
    g.add_argument("--metrics-textfile", default=None, metavar="FILE",
                   help="at the end, write the run's metrics to FILE (Prometheus text format, "
                        "for node_exporter's textfile collector)")
    g.add_argument("--pushgateway", default=None, metavar="URL",
                   help="at the end, push the run's metrics to a Prometheus Pushgateway")
    g.add_argument("--trace-sample", type=_share, default=0.0, metavar="SHARE",
                   help="trace this share of buckets with OpenTelemetry spans per stage "
                        "(default 0: off)")
    g.add_argument("--trace-exporter", default="console", metavar="console|otlp|FILE",
                   help="where spans go: console (stderr, default), otlp "
                        "(OTEL_EXPORTER_OTLP_ENDPOINT), or a file of JSON spans")
    g.add_argument("--drift-baseline", default=None, metavar="FILE",
                   help="drift gauges per stream against these baseline statistics "
                        "(align-check OUT --save-baseline FILE)")
    g.add_argument("--slo", default=None, metavar="FILE",
                   help="SLO file for the drift settings (default: the packaged "
                        "deploy/slo.yaml)")


def options_from_args(ns) -> ObserveOptions:
    """ObserveOptions from parsed arguments (attributes missing: defaults)."""
    port = getattr(ns, "metrics_port", None)
    opts = ObserveOptions(
        metrics_host=port[0] if port else "0.0.0.0", metrics_port=port[1] if port else None,
        textfile=getattr(ns, "metrics_textfile", None),
        pushgateway=getattr(ns, "pushgateway", None),
        trace_sample=getattr(ns, "trace_sample", 0.0) or 0.0,
        trace_exporter=getattr(ns, "trace_exporter", "console") or "console",
        drift_baseline=getattr(ns, "drift_baseline", None), slo=getattr(ns, "slo", None))
    check_options(opts)
    return opts


def check_options(opts: ObserveOptions) -> None:
    """Bad observability input is exit 2 (a ManifestError) before the job starts."""
    if opts.slo is not None:
        load_slo(opts.slo)
    if opts.drift_baseline is not None:
        try:
            drift.load_baselines(opts.drift_baseline)
        except ValueError as e:
            raise ManifestError(f"--drift-baseline: {e}") from None


# ---------------------------------------------------------------- Prometheus exposition


class MirrorCollector:
    """A prometheus-client collector over schemas/metrics.py's process-local mirror: every
    family of ``metrics.FAMILIES`` with the series seen so far (histogram buckets cumulative,
    ``+Inf`` included), read at scrape time."""

    def collect(self):
        from prometheus_client.core import (  # lazy: the [observe] extra
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        values, hists = metrics.series()
        for fam in metrics.FAMILIES:
            labels = list(fam.labels)
            if fam.kind == metrics.HISTOGRAM:
                out = HistogramMetricFamily(fam.name, fam.help, labels=labels)
                for (name, key), (counts, total, _n) in sorted(hists.items()):
                    if name != fam.name:
                        continue
                    cum = np.cumsum(counts)
                    buckets = [(_le(b), float(c)) for b, c in zip(fam.buckets, cum[:-1])]
                    buckets.append(("+Inf", float(cum[-1])))
                    out.add_metric(list(key), buckets, total)
            else:
                cls = CounterMetricFamily if fam.kind == metrics.COUNTER else GaugeMetricFamily
                out = cls(fam.name, fam.help, labels=labels)
                for (name, key), v in sorted(values.items()):
                    if name == fam.name:
                        out.add_metric(list(key), float(v))
            yield out


def _le(b: float) -> str:
    return repr(float(b))


def registry():
    """A prometheus-client registry holding only the mirror (no process/GC collectors)."""
    try:
        from prometheus_client import CollectorRegistry  # lazy: the [observe] extra
    except ImportError:
        raise ManifestError(f"Prometheus export needs prometheus-client ({EXTRA})") from None
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MirrorCollector())
    return reg


def exposition() -> str:
    """The mirror in Prometheus's text format, now."""
    from prometheus_client import generate_latest  # lazy: the [observe] extra
    return generate_latest(registry()).decode()


def exported_names() -> list[str]:
    """Every series name the exporter can show (for dashboards and rules to be checked)."""
    return sorted(n for fam in metrics.FAMILIES for n in fam.exposed())


class MetricsServer:
    """/metrics on (host, port) in a daemon thread: ``.port``, ``.url``, ``.stop()``."""

    def __init__(self, host: str, port: int):
        from prometheus_client import start_http_server  # lazy: the [observe] extra
        self.reg = registry()
        try:
            self.httpd, self.thread = start_http_server(port, addr=host, registry=self.reg)
        except OSError as e:
            raise ManifestError(f"--metrics-port {host}:{port}: cannot listen ({e.strerror}); "
                                "use a free port (0 picks one)") from None
        self.host, self.port = host, self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_textfile(path: str | Path) -> Path:
    """The mirror as a node_exporter textfile (written atomically)."""
    from prometheus_client import write_to_textfile  # lazy: the [observe] extra
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(p), registry())
    return p


def push(url: str, job: str) -> None:
    """The mirror pushed to a Pushgateway (grouping key: job)."""
    from prometheus_client import push_to_gateway  # lazy: the [observe] extra
    push_to_gateway(url, job=job, registry=registry())


# ---------------------------------------------------------------- tracing


def _trace_ids(run_id: str, key: str) -> tuple[int, int]:
    h = hashlib.sha256(f"{run_id}|{key}".encode()).digest()
    return (int.from_bytes(h[:16], "big") or 1), (int.from_bytes(h[16:24], "big") or 1)


class Tracing:
    """OpenTelemetry spans per stage for a sampled share of buckets (module docstring).
    Installs itself as schemas/metrics.py's tracer hook between ``start`` and ``stop``."""

    def __init__(self, sample: float, exporter: str, run_id: str, service: str):
        self.sample, self.exporter, self.run_id, self.service = (sample, exporter, run_id,
                                                                 service)
        self.provider = None
        self._out = None
        self.spans = 0

    def _exporter(self):
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # lazy: [observe]
        if self.exporter == "console":
            return ConsoleSpanExporter(out=sys.stderr)
        if self.exporter == "otlp":
            try:   # lazy: OTLP only when asked for
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise ManifestError(f"--trace-exporter otlp needs the OTLP exporter "
                                    f"({EXTRA})") from None
            return OTLPSpanExporter()
        self._out = open(self.exporter, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop
        return ConsoleSpanExporter(out=self._out,
                                   formatter=lambda s: s.to_json(indent=None) + "\n")

    def start(self) -> Tracing:
        try:   # lazy: the [observe] extra
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ManifestError(f"--trace-sample needs opentelemetry-sdk ({EXTRA})") from None
        self.provider = TracerProvider(resource=Resource.create(
            {"service.name": self.service, "mmalign.run_id": self.run_id}))
        self.provider.add_span_processor(BatchSpanProcessor(self._exporter()))
        self.tracer = self.provider.get_tracer("mmalign")
        metrics.set_tracer(self.span)
        return self

    def sampled(self, key: str) -> bool:
        return zlib.crc32(f"{self.run_id}|{key}".encode()) < self.sample * 2 ** 32

    def span(self, stage: str, attrs: dict):
        """A span for this stage element when its bucket (or chunk) is sampled, else None."""
        session = attrs.get("session")
        if attrs.get("bucket") is not None:
            key = f"{session}|b{attrs['bucket']}"
        else:
            key = f"{session}|{attrs.get('stream')}|{attrs.get('seq')}|{attrs.get('file')}"
        if not self.sampled(key):
            return None
        from opentelemetry import trace  # lazy: the [observe] extra
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        trace_id, span_id = _trace_ids(self.run_id, key)
        parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        span = self.tracer.start_span(
            f"mmalign.{stage}", context=parent,
            attributes={f"mmalign.{k}": (v if isinstance(v, (bool, int, float)) else str(v))
                        for k, v in attrs.items() if v is not None} | {"mmalign.stage": stage})
        self.spans += 1
        return trace.use_span(span, end_on_exit=True)

    def stop(self) -> None:
        metrics.set_tracer(None)
        if self.provider is not None:
            self.provider.force_flush()
            self.provider.shutdown()
        if self._out is not None:
            self._out.close()


# ---------------------------------------------------------------- drift


class DriftMonitor:
    """Per stream, the recent feature rows of the aligned output against its baseline;
    ``estimate()`` sets the drift gauges (in a background thread every ``every_s``, and once
    more at the end of a run)."""

    def __init__(self, baselines: dict[str, drift.StreamBaseline], cfg, recent: int | None):
        self.baselines, self.cfg = baselines, cfg
        self.rows: dict[str, deque] = {s: deque(maxlen=recent) for s in baselines}
        self.lock = threading.Lock()
        self.results: dict[str, drift.DriftResult] = {}

    def add(self, stream: str, x: np.ndarray) -> None:
        if stream in self.rows and len(x):
            with self.lock:
                self.rows[stream].extend(np.asarray(x, np.float64))

    def estimate(self) -> dict[str, drift.DriftResult]:
        for s, base in self.baselines.items():
            with self.lock:
                x = np.array(self.rows[s]) if self.rows[s] else np.zeros((0, 0))
            if not len(x):
                continue
            c = self.cfg
            r = drift.compare(base, x, max_mmd=c.max_mmd, max_p_value=c.max_p_value,
                              min_samples=c.min_samples, max_samples=c.max_samples,
                              permutations=c.permutations)
            self.results[s] = r
            labels = {"stream": s, "modality": base.modality}
            metrics.DRIFT_SAMPLES.set(r.n, **labels)
            if r.mmd2 is not None:
                metrics.DRIFT_MMD.set(r.mmd2, **labels)
                metrics.DRIFT_P.set(r.p_value, **labels)
                metrics.DRIFT_PSI.set(r.psi, **labels)
        return self.results


_MONITORS: dict[str, DriftMonitor] = {}      # baseline path -> this process's monitor
_MONITORS_LOCK = threading.Lock()


def monitor_for(path: str, slo_path: str | None, recent: int | None) -> DriftMonitor:
    with _MONITORS_LOCK:
        m = _MONITORS.get(path)
        if m is None:
            m = _MONITORS[path] = DriftMonitor(drift.load_baselines(path),
                                               load_slo(slo_path).drift, recent)
        return m


# ---------------------------------------------------------------- the observing DoFns


class ObserveBucketsFn(beam.DoFn):
    """((session, bucket), aligned table) -> nothing: per stream the ticks by status, |dt|,
    embedding statuses, the rows' event time -> output latency, drift rows."""

    def __init__(self, modalities: dict[tuple[str, str], str], baseline: str | None = None,
                 slo: str | None = None, recent: int | None = None):
        self.modalities = modalities
        self.baseline, self.slo, self.recent = baseline, slo, recent
        self.monitor: DriftMonitor | None = None

    def setup(self):
        if self.baseline:
            self.monitor = monitor_for(self.baseline, self.slo, self.recent)

    def process(self, element):
        (session, _bucket), table = element
        if table is None or table.num_rows == 0:
            return
        names = table.column_names
        mods = {}
        for s in stream_ids(names):
            mod = self.modalities.get((session, s), "")
            mods[s] = mod
            labels = {"session": session, "stream": s, "modality": mod}
            status = table.column(column(s, STATUS)).cast(pa.string())
            for item in pc.value_counts(status).to_pylist():
                metrics.STREAM_TICKS.inc(item["counts"], status=item["values"] or "null",
                                         **labels)
            dt = column(s, DT_NS)
            if dt in names:
                has = pc.is_in(status, pa.array(VALUE_STATUSES)).fill_null(False)
                v = table.column(dt).filter(has).to_numpy(zero_copy_only=False)
                metrics.RESIDUAL.observe_many(np.abs(v.astype(np.float64)) / 1e9, **labels)
            es = column(s, EMB_STATUS)
            if es in names:
                for item in pc.value_counts(table.column(es).cast(pa.string())).to_pylist():
                    metrics.EMBEDDINGS.inc(item["counts"], status=item["values"] or "null",
                                           **labels)
        if TICK_TIME in names:
            t = table.column(TICK_TIME).drop_null().cast(pa.int64()).to_numpy()
            if t.size:
                metrics.OUTPUT_LATENCY.observe_many((time.time_ns() - t) / 1e9,
                                                    session=session)
        if self.monitor is not None:
            for s, (_mod, _src, _cols, x) in drift.table_features(table, mods).items():
                self.monitor.add(s, x)


class ObserveDeadFn(beam.DoFn):
    """DeadLetter -> nothing: ``mmalign_dead_letters_total{stage,reason,modality}`` (records)."""

    def process(self, d):
        metrics.DEAD_LETTERS.inc(d.records, stage=d.stage, reason=d.reason,
                                 modality=d.modality or "")


class ObserveSyncFn(beam.DoFn):
    """(session, stream, SyncResult) -> nothing: the clock fit's residual and confidence."""

    def process(self, element):
        session, stream, r = element
        labels = {"session": session, "stream": stream}
        metrics.CLOCK_CONFIDENCE.set(float(r.confidence), **labels)
        if r.residual_rms_ms == r.residual_rms_ms:          # not NaN
            metrics.CLOCK_RESIDUAL.set(float(r.residual_rms_ms) / 1e3, **labels)


def attach(opts: ObserveOptions | None, job, aligned, dead, sync=None, *,
           streaming: bool = False) -> None:
    """The observing branches on a job's outputs (nothing when ``opts`` asks for nothing):
    ``aligned`` ((session, bucket), table), ``dead`` (DeadLetters), ``sync`` (DTW results)."""
    if opts is None or not opts.enabled:
        return
    modalities = {(m.session, s.id): s.modality for m in job.manifests for s in m.streams}
    recent = None
    if opts.drift_baseline:
        cfg = load_slo(opts.slo).drift
        recent = 4 * cfg.max_samples if streaming else 50_000
    aligned | "ObserveBuckets" >> beam.ParDo(ObserveBucketsFn(
        modalities, opts.drift_baseline, opts.slo, recent))
    dead | "ObserveDead" >> beam.ParDo(ObserveDeadFn())
    if sync is not None:
        sync | "ObserveSync" >> beam.ParDo(ObserveSyncFn())


# ---------------------------------------------------------------- Kafka lag


def record_kafka_lag(settings, committed: dict[str, int]) -> dict[str, int]:
    """``mmalign_kafka_consumer_lag`` / ``_committed_offset`` per partition from the group's
    committed offsets (``{"topic/partition": offset}``) and the partitions' end offsets."""
    from kafka import KafkaConsumer, TopicPartition  # lazy: kafka-python only with a broker
    tps = {k: TopicPartition(k.rpartition("/")[0], int(k.rpartition("/")[2])) for k in committed}
    if not tps:
        return {}
    consumer = settings.make(KafkaConsumer, enable_auto_commit=False)
    try:
        ends = consumer.end_offsets(list(tps.values()))
    finally:
        consumer.close()
    lag = {}
    for k, tp in tps.items():
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        lag[k] = max(0, int(ends.get(tp, committed[k])) - int(committed[k]))
        metrics.CONSUMER_LAG.set(lag[k], **labels)
        metrics.COMMITTED_OFFSET.set(int(committed[k]), **labels)
    return lag


# ---------------------------------------------------------------- a run's session


@dataclass
class Observer:
    """What ``session`` started; ``kafka_lag`` for the streaming job's periodic task."""
    opts: ObserveOptions
    job: str
    server: MetricsServer | None = None
    tracing: Tracing | None = None
    drift: dict = field(default_factory=dict)

    def kafka_lag(self, settings, committed: dict[str, int]) -> None:
        if self.opts.enabled:
            try:
                record_kafka_lag(settings, committed)
            except Exception as e:  # noqa: BLE001 - a lag probe never stops the job
                log.warning("consumer lag not measured: %s", e)


@contextmanager
def session(opts: ObserveOptions | None, run_id: str, job: str) -> Iterator[Observer]:
    """Around a run: the /metrics server and tracing while it runs; at the end the final
    drift estimate, the run's duration, the textfile and the Pushgateway push."""
    opts = opts or ObserveOptions()
    obs = Observer(opts, job)
    if not opts.enabled:
        yield obs
        return
    t0 = time.time()
    stop = threading.Event()
    ok = False
    try:
        if opts.metrics_port is not None:
            obs.server = MetricsServer(opts.metrics_host, opts.metrics_port)
            print(f"mmalign {job}: metrics at {obs.server.url}", file=sys.stderr, flush=True)
        if opts.trace_sample > 0:
            obs.tracing = Tracing(opts.trace_sample, opts.trace_exporter, run_id,
                                  f"mmalign-{job}").start()
        if opts.drift_baseline:
            def every():
                while not stop.wait(opts.drift_every_s):
                    m = _MONITORS.get(opts.drift_baseline)
                    if m is not None:
                        m.estimate()
            threading.Thread(target=every, name="mmalign-drift", daemon=True).start()
        yield obs
        ok = True
    finally:
        stop.set()
        try:
            m = _MONITORS.get(opts.drift_baseline) if opts.drift_baseline else None
            if m is not None:
                obs.drift = {s: r.as_dict() for s, r in m.estimate().items()}
            if ok:
                metrics.RUN_SECONDS.set(time.time() - t0, job=job)
                metrics.RUN_FINISHED.set(time.time(), job=job)
                _export(f"write {opts.textfile}", opts.textfile, write_textfile, opts.textfile)
                _export(f"push to {opts.pushgateway}", opts.pushgateway, push, opts.pushgateway,
                        f"mmalign_{job}")
        finally:
            if obs.tracing is not None:
                obs.tracing.stop()
            if obs.server is not None:
                obs.server.stop()


def _export(what: str, wanted, fn, *args) -> None:
    """A final export; its failure is one line on stderr, never the run's failure (the
    outputs are already written)."""
    if not wanted:
        return
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - metrics export never loses a run
        print(f"mmalign: metrics not exported: could not {what} ({type(e).__name__}: {e})",
              file=sys.stderr, flush=True)


# ---------------------------------------------------------------- alert rules from the SLO


_AVAILABLE = "|".join(VALUE_STATUSES)
_BY_STREAM = "job, session, stream, modality"


def recording_rules(slo: Slo) -> list[dict]:
    w = slo.window
    ticks = f"rate(mmalign_stream_ticks_total[{w}])"
    ok = f'rate(mmalign_stream_ticks_total{{status=~"{_AVAILABLE}"}}[{w}])'
    records_in = (f'rate(mmalign_stage_events_total{{stage=~"decode|ingest",what="records"}}'
                  f'[{w}])')
    return [
        {"record": "mmalign:stream_availability:ratio",
         "expr": f"(sum by ({_BY_STREAM}) ({ok})\n  or sum by ({_BY_STREAM}) ({ticks}) * 0)\n"
                 f"/ sum by ({_BY_STREAM}) ({ticks})"},
        {"record": "mmalign:dead_letters:rate",
         "expr": f"sum by (job, stage, reason, modality) "
                 f"(rate(mmalign_dead_letters_total[{w}]))"},
        {"record": "mmalign:dead_letter_ratio:by_modality",
         "expr": f"sum by (job, modality) (rate(mmalign_dead_letters_total[{w}]))\n"
                 f"/ sum by (job, modality) ({records_in})"},
        *({"record": f"mmalign:stage_seconds:p{q}",
           "expr": f"histogram_quantile(0.{q}, sum by (job, stage, le) "
                   f"(rate(mmalign_stage_seconds_bucket[{w}])))"} for q in ("50", "95", "99")),
        {"record": "mmalign:output_latency_seconds:p95",
         "expr": f"histogram_quantile(0.95, sum by (job, le) "
                 f"(rate(mmalign_output_latency_seconds_bucket[{w}])))"},
    ]


def _runbook(alert: str) -> str:
    return f"README.md#runbook-{alert.lower()}"


def alert_rules(slo: Slo) -> list[dict]:
    out = []
    for mod, a in slo.availability.items():
        if a is None:
            continue
        out.append({
            "alert": "MmalignModalityUnavailable",
            "expr": f'mmalign:stream_availability:ratio{{modality="{mod}"}} < {a.target:g}',
            "for": a.for_,
            "labels": {"severity": "page", "slo": "availability", "modality": mod,
                       "objective": f"{a.target:g}"},
            "annotations": {
                "summary": "{{ $labels.session }}/{{ $labels.stream }} (" + mod + ") has a "
                           "value at {{ $value | humanizePercentage }} of its ticks (SLO "
                           f"{a.target:.0%})",
                "runbook": _runbook("MmalignModalityUnavailable")}})
    d = slo.dead_letters
    out.append({
        "alert": "MmalignDeadLetterRatioHigh",
        "expr": f"mmalign:dead_letter_ratio:by_modality > {d.max_ratio:g}",
        "for": d.for_, "labels": {"severity": "ticket", "slo": "dead_letters"},
        "annotations": {
            "summary": "{{ $labels.modality }}: {{ $value | humanizePercentage }} of records "
                       f"in are dead-lettered (SLO {d.max_ratio:.0%})",
            "runbook": _runbook("MmalignDeadLetterRatioHigh")}})
    w = slo.window
    rate = f"sum by (job) (rate(mmalign_dead_letters_total[{w}]))"
    out.append({
        "alert": "MmalignDeadLetterSpike",
        "expr": f"{rate} > {d.spike_factor:g} * sum by (job) "
                f"(rate(mmalign_dead_letters_total[1h] offset {w}))\n"
                f"and {rate} > {d.spike_min_per_s:g}",
        "for": w, "labels": {"severity": "ticket", "slo": "dead_letters"},
        "annotations": {
            "summary": "{{ $labels.job }}: dead letters at {{ $value | humanize }}/s, over "
                       f"{d.spike_factor:g}x the past hour's rate",
            "runbook": _runbook("MmalignDeadLetterSpike")}})
    wl = slo.watermark_lag
    out.append({
        "alert": "MmalignWatermarkLagHigh",
        "expr": f"max by (job, instance) (mmalign_watermark_lag_seconds) > {wl.max_seconds:g}",
        "for": wl.for_, "labels": {"severity": "page", "slo": "latency"},
        "annotations": {
            "summary": "{{ $labels.instance }}: the watermark trails the newest event by "
                       "{{ $value | humanizeDuration }}",
            "runbook": _runbook("MmalignWatermarkLagHigh")}})
    cl = slo.consumer_lag
    lag = "sum by (job, topic) (mmalign_kafka_consumer_lag)"
    out.append({
        "alert": "MmalignConsumerLagGrowing",
        "expr": f"{lag} > {cl.min_messages}\n"
                f"and sum by (job, topic) (deriv(mmalign_kafka_consumer_lag[{cl.for_}])) > 0",
        "for": cl.for_, "labels": {"severity": "page", "slo": "latency"},
        "annotations": {
            "summary": "{{ $labels.topic }}: consumer lag {{ $value }} messages and growing",
            "runbook": _runbook("MmalignConsumerLagGrowing")}})
    dr = slo.drift
    out.append({
        "alert": "MmalignEmbeddingDrift",
        "expr": f"mmalign_drift_mmd > {dr.max_mmd:g}\n"
                f"and mmalign_drift_p_value < {dr.max_p_value:g}\n"
                f"and mmalign_drift_samples >= {dr.min_samples}",
        "for": dr.for_, "labels": {"severity": "ticket", "slo": "drift"},
        "annotations": {
            "summary": "{{ $labels.stream }} ({{ $labels.modality }}) drifted from its "
                       "baseline: MMD² {{ $value }}",
            "runbook": _runbook("MmalignEmbeddingDrift")}})
    return out


def rules_document(slo: Slo) -> dict:
    return {"groups": [{"name": "mmalign-slis", "rules": recording_rules(slo)},
                       {"name": "mmalign-alerts", "rules": alert_rules(slo)}]}


class _Literal(str):
    pass


def _literal(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                   style="|" if "\n" in data else None)


def rules_yaml(slo: Slo, source: str = "deploy/slo.yaml") -> str:
    """The Prometheus rule file made from ``slo`` (deploy/prometheus/alerts.yml)."""
    class Dumper(yaml.SafeDumper):
        pass
    Dumper.add_representer(str, _literal)
    head = (f"# Generated from {source} by `python -m mmalign.pipelines.observe rules`; do not "
            "edit:\n# change the SLO file and regenerate (tests/unit/observe/"
            "test_observe_slo.py checks they agree).\n")
    return head + yaml.dump(rules_document(slo), Dumper=Dumper, sort_keys=False, width=1000)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmalign.pipelines.observe",
                                description="Alert rules and README's SLO table from the SLO "
                                            "file; the exported metric names.")
    p.add_argument("what", choices=["rules", "table", "names"])
    p.add_argument("--slo", default=None, help="SLO file (default: deploy/slo.yaml)")
    a = p.parse_args(argv)
    try:
        slo = load_slo(a.slo)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 2
    if a.what == "rules":
        sys.stdout.write(rules_yaml(slo, a.slo or "deploy/slo.yaml"))
    elif a.what == "table":
        sys.stdout.write(slo_table(slo))
    else:
        sys.stdout.write("\n".join(exported_names()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
