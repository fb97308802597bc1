"""The SLIs on a real Prometheus (Debian's binary, started and stopped here on a free loopback
port): the streaming job runs on the real broker, its IMU stops halfway (the device dies: its
file ends, its producer declares no extent), Prometheus scrapes the job's --metrics-port and
evaluates rules made from the SLO code (a short window and ``for:``). Queried through the HTTP
API: the IMU's availability series drops while the other streams stay up, the DLQ-rate and
stage-latency series exist with their labels, the dead-modality alert fires
(/api/v1/alerts); the output keeps its rows with the gap marked."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from mmalign.infra import free_port, port_open
from mmalign.pipelines import stream
from mmalign.pipelines.observe import ObserveOptions, rules_yaml
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.pipelines.slo import load_slo
from mmalign.schemas import metrics

pytestmark = pytest.mark.slow
PROMETHEUS = shutil.which("prometheus")
DURATION_S = 40.0              # published in real time; the IMU stops at half of it
JOB = "mmalign-stream"


class Prometheus:
    """``prometheus`` on 127.0.0.1:<free port>, scraping ``target`` every second, evaluating
    ``rules`` every second; ``.query(q)``, ``.alerts()``, ``.stop()``."""

    def __init__(self, folder: Path, target: str, rules: str):
        self.folder, self.port = folder, free_port()
        (folder / "rules.yml").write_text(rules)
        (folder / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}]}))
        self.log = (folder / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("prometheus did not start: "
                                   + (folder / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)

    def _get(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def _ready(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, q: str) -> list[dict]:
        return self._get("/api/v1/query", query=q)["data"]["result"]

    def query_range(self, q: str, start: float, end: float) -> list[dict]:
        return self._get("/api/v1/query_range", query=q, start=start, end=end,
                         step=1)["data"]["result"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["data"]["alerts"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def test_slo_code_rules_for_a_short_test() -> None:
    # the rule file the test gives Prometheus is the committed one with shorter windows
    rules = yaml.safe_load(rules_yaml(_short_slo()))
    committed = yaml.safe_load(rules_yaml(load_slo()))
    assert [r.get("alert") or r["record"] for g in rules["groups"] for r in g["rules"]] == \
           [r.get("alert") or r["record"] for g in committed["groups"] for r in g["rules"]]


def _short_slo():
    slo = load_slo()
    short = {"for_": "3s"}
    return slo.model_copy(update={
        "window": "10s",
        "availability": {m: (a.model_copy(update=short) if a else None)
                         for m, a in slo.availability.items()}})


def truncate_imu(csv: Path, keep_s: float) -> int:
    """Keep the IMU rows of the first ``keep_s`` seconds of its own clock: the device dies."""
    lines = csv.read_text().splitlines()
    t0 = int(lines[1].split(",")[0])
    kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0]) - t0 < keep_s * 1e9]
    csv.write_text("\n".join(kept) + "\n")
    return len(kept) - 1


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package "
                    "prometheus; scripts/system-deps.sh installs it, CI has it)")
def test_a_stream_that_stops_is_seen_by_prometheus(kafka_broker, fresh_topics, tmp_path):
    manifest = generate_recording(tmp_path / "rec", seed=11, duration_s=DURATION_S,
                                  size=(160, 120), fps=15.0, session="obs-001")
    assert truncate_imu(manifest.parent / "imu.csv", DURATION_S / 2) > 1000
    settings, tag = fresh_topics()
    port = free_port()
    prom = Prometheus(tmp_path, f"127.0.0.1:{port}", rules_yaml(_short_slo()))
    seen: dict = {"alerts": [], "imu": [], "cam1": []}
    done = threading.Event()

    def publisher():            # a live producer: real time, no declared extents
        publish(manifest, settings, speed=1.0, declare_extents=False, run_id=f"pub-{tag}")

    def watch():                # what an operator sees while the job runs
        while not done.wait(1.0):
            try:
                seen["alerts"].append(prom.alerts())
                for s in ("imu", "cam1"):
                    r = prom.query(f'mmalign:stream_availability:ratio{{stream="{s}"}}')
                    seen[s] += [float(x["value"][1]) for x in r
                                if x["value"][1] != "NaN"]      # 0/0 between two buckets
            except OSError:
                pass

    metrics.reset_local()
    threads = [threading.Thread(target=publisher), threading.Thread(target=watch)]
    t_start = time.time()
    try:
        for t in threads:
            t.start()
        opts = stream.StreamOptions(group_id=f"g-{tag}", stop_after_idle_s=6.0)
        stream.run([manifest], tmp_path / "out", settings, opts, run_id="obs",
                   observe=ObserveOptions(metrics_host="127.0.0.1", metrics_port=port))
        t_end = time.time()
        time.sleep(1.0)
        done.set()
        for t in threads:
            t.join(120)

        # availability of the IMU: 1 while it sends, then falls (under the 0.9 target);
        # a camera that keeps sending stays available
        imu = prom.query_range('mmalign:stream_availability:ratio{stream="imu"}',
                               t_start, t_end)
        assert len(imu) == 1, imu
        labels = dict(imu[0]["metric"])
        labels.pop("__name__", None)
        assert labels == {"job": JOB, "session": "obs-001", "stream": "imu",
                          "modality": "sensor"}
        values = [float(v) for _, v in imu[0]["values"] if v != "NaN"]
        assert max(values) == pytest.approx(1.0) and min(values) < 0.9, values
        first_low = next(i for i, v in enumerate(values) if v < 0.9)
        assert first_low > 0 and max(values[:first_low]) == pytest.approx(1.0)
        cam1 = prom.query_range('mmalign:stream_availability:ratio{stream="cam1"}',
                                t_start, t_end)
        assert min(float(v) for _, v in cam1[0]["values"] if v != "NaN") >= 0.9

        # the dead modality's alert fired while the job ran, for the IMU only
        firing = [a for snap in seen["alerts"] for a in snap
                  if a["state"] == "firing" and a["labels"]["alertname"]
                  == "MmalignModalityUnavailable"]
        assert firing, seen["alerts"][-3:]
        assert {(a["labels"]["stream"], a["labels"]["modality"], a["labels"]["severity"])
                for a in firing} == {("imu", "sensor", "page")}
        assert "obs-001/imu (sensor)" in firing[0]["annotations"]["summary"]
        assert seen["imu"] and min(seen["imu"]) < 0.9

        # DLQ-rate and latency series exist with their labels (the generator plants bad rows)
        dlq = prom.query_range("mmalign:dead_letters:rate", t_start, t_end)
        assert dlq, "no dead-letter rate series"
        assert {"job", "stage", "reason", "modality"} <= set(dlq[0]["metric"])
        assert any(d["metric"]["stage"] == "validate" for d in dlq)
        for q, keys in (("mmalign_stage_seconds_bucket", {"stage", "modality", "le"}),
                        ("mmalign_output_latency_seconds_count", {"session"}),
                        ("mmalign_alignment_residual_seconds_count",
                         {"session", "stream", "modality"}),
                        ("mmalign:stage_seconds:p95", {"job", "stage"})):
            r = prom.query_range(q, t_start, t_end)
            assert r, q
            assert keys <= set(r[0]["metric"]), (q, r[0]["metric"])
        stages = {r["metric"]["stage"]
                  for r in prom.query_range("mmalign_stage_seconds_count", t_start, t_end)}
        assert {"validate", "clock", "align", "sink"} <= stages
    finally:
        done.set()
        prom.stop()
        metrics.reset_local()

    # rows kept flowing with the gap marked
    table = ds.dataset(tmp_path / "out" / "aligned", format="parquet").to_table(
        columns=["tick_ns", "imu__status"]).sort_by("tick_ns")
    status = table.column("imu__status").to_pylist()
    # (the last buckets stay open: a live producer declares no end, so the job's stop after
    # idling closes only what the watermark passed)
    assert len(status) > 0.6 * DURATION_S * 15
    quarter = len(status) // 4
    assert status[:quarter].count("ok") > 0.8 * quarter
    assert "ok" not in status[-quarter:] and set(status[-quarter:]) <= {
        "out_of_range", "gap_too_large", "no_sample_in_tolerance"}
