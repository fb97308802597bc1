"""Progress of a running job, from the process-local mirror of the stage counters
(schemas/metrics.py): a live rich display on a terminal, a log line every few seconds
otherwise (CI logs, systemd, docker). Local runners (DirectRunner, Prism and Flink with
LOOPBACK workers) run the stages in this process; on remote workers the runner's UI shows the
same counters.

    backfill: decoded 12 480 records (video 3 600, sensor 8 800, ...), 41 dead, 312 ticks
              aligned, 312 rows written, 6.1 s
    stream:   1 840 msgs (61/s), 96 400 samples aligned, 12 dead letters (0.4/s), watermark
              3.2 s behind the newest event, committed offsets 1 830
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable

from mmalign.schemas.metrics import gauges, local_counts

log = logging.getLogger("mmalign.progress")


def _sum(counts: dict[str, int], prefix: str, suffix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(prefix) and k.endswith(suffix))


def backfill_line(c: dict[str, int], elapsed: float) -> str:
    decoded = _sum(c, "decode.", ".records")
    by_mod = {k.split(".")[1]: v for k, v in c.items()
              if k.startswith("decode.") and k.endswith(".records") and v}
    dead = _sum(c, "decode.", ".dead") + _sum(c, "validate.", ".dead")
    mods = ", ".join(f"{m} {n:,}" for m, n in sorted(by_mod.items()))
    return (f"backfill: decoded {decoded:,} records ({mods or '-'}), {dead:,} dead, "
            f"{c.get('align.ticks', 0):,} ticks aligned, {c.get('sink.aligned.rows', 0):,} rows "
            f"written, {elapsed:.0f} s")


class StreamRates:
    """Rates between two progress lines of the streaming job."""

    def __init__(self):
        self.last: tuple[float, int, int] | None = None

    def line(self, c: dict[str, int], elapsed: float) -> str:
        msgs = c.get("ingest.records", 0)
        dead = _sum(c, "deadletter.kafka.", "") - c.get("deadletter.kafka.already_sent", 0)
        now = time.monotonic()
        rate = dlq = 0.0
        if self.last is not None and now > self.last[0]:
            dt = now - self.last[0]
            rate, dlq = (msgs - self.last[1]) / dt, (dead - self.last[2]) / dt
        self.last = (now, msgs, dead)
        g = gauges()
        lag = g.get("ingest.watermark_lag_s")
        committed = g.get("stream.committed_offsets")
        return (f"stream: {msgs:,} msgs ({rate:.0f}/s), {_sum(c, 'align.', '.samples'):,} "
                f"samples aligned, {c.get('sink.aligned.rows', 0):,} rows written, {dead:,} dead "
                f"letters ({dlq:.1f}/s), watermark "
                + (f"{lag:.1f} s behind the newest event" if lag is not None else "not set yet")
                + (f", committed offsets {int(committed):,}" if committed is not None else "")
                + f", {elapsed:.0f} s")


class Progress:
    """A background reporter: ``with Progress(line, every_s): run()``. ``line(counts,
    elapsed)`` renders one line; on a terminal it is redrawn live (rich), else logged every
    ``every_s`` seconds. ``every`` (optional) is called each period too (e.g. the streaming
    job's offset commits); ``counts`` gives the counts to render (default: this process's);
    ``lock`` is held around each report (a worker pool forks while holding it, so no write is
    half done in the forked workers).
    """

    def __init__(self, line: Callable[[dict, float], str], every_s: float = 10.0,
                 enabled: bool = True, every: Callable[[], None] | None = None,
                 stream=None, counts: Callable[[], dict[str, int]] = local_counts,
                 lock: threading.Lock | None = None):
        self.line, self.every_s, self.enabled, self.every = line, every_s, enabled, every
        self.counts, self.lock = counts, lock or contextlib.nullcontext()
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def _text(self) -> str:
        return self.line(self.counts(), time.monotonic() - self._t0)

    def _run(self) -> None:
        live = None
        if self.enabled and self.stream.isatty():
            # lazy: rich draws only on a terminal
            from rich.console import Console
            from rich.live import Live
            with self.lock:
                live = Live(self._text(), console=Console(file=self.stream),
                            auto_refresh=False, transient=True)  # redrawn below, no thread
                live.start(refresh=True)
        last = time.monotonic()
        try:
            while not self._stop.wait(0.5 if live else self.every_s):
                with self.lock:
                    if self.every is not None and time.monotonic() - last >= self.every_s * 0.9:
                        last = time.monotonic()
                        try:
                            self.every()
                        except Exception as e:  # noqa: BLE001 - progress never stops the job
                            log.warning("periodic task failed: %s", e)
                    if live is not None:
                        live.update(self._text(), refresh=True)
                    elif self.enabled:
                        print(self._text(), file=self.stream, flush=True)
        finally:
            if live is not None:
                with self.lock:
                    live.stop()

    def __enter__(self) -> Progress:
        self._t0 = time.monotonic()
        if self.enabled or self.every is not None:
            self._thread = threading.Thread(target=self._run, name="mmalign-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
