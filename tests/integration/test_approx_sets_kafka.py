"""Approximate-time sets in the streaming job: a generated recording whose ticks are sets of
cam1 (an image sequence at ~20 fps) and imu (200 Hz), published to a real Kafka broker and
aligned by the streaming job on Beam Prism, gives the same sets, row for row, as the backfill
of the same manifest (``flush: true``, which is what the streaming job does at its stop)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mmalign.pipelines import backfill, stream
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.transforms.io.parquet import read_aligned
from tests.e2e_checks import assert_rows_equal

pytestmark = pytest.mark.slow

SETS = {"streams": ["cam1", "imu"], "max_span_ms": 3.0, "queue_size": 256, "flush": True}
SET_COLUMNS = ["tick_ns", "cam1__t_ns", "cam1__pos", "imu__t_ns", "imu__pos"]


@pytest.fixture(scope="module")
def run(kafka_broker, fresh_topics, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sets_stream")
    original = generate_recording(tmp / "rec", seed=9, duration_s=6.0)
    m = yaml.safe_load(original.read_text())
    m["alignment"]["ticks"] = {"sets": SETS}
    manifest = original.parent / "manifest_sets.yaml"
    manifest.write_text(yaml.safe_dump(m))
    backfill.run([manifest], tmp / "batch", run_id="batch")
    settings, tag = fresh_topics()
    publish(manifest, settings, run_id="publish")
    opts = stream.StreamOptions(group_id=f"g-{tag}", stop_after_idle_s=3.0)
    summary = stream.run([manifest], tmp / "stream", settings, opts, run_id="s1")
    return {"tmp": tmp, "summary": summary,
            "batch": read_aligned(tmp / "batch" / "aligned"),
            "stream": read_aligned(tmp / "stream" / "aligned")}


def test_streaming_sets_equal_the_backfill_sets(run):
    b = run["batch"].sort_by("tick_ns")
    s = run["stream"].sort_by("tick_ns")
    assert b.num_rows > 100
    for c in SET_COLUMNS:
        assert s.column(c).to_pylist() == b.column(c).to_pylist(), c
    span = np.abs(s.column("cam1__t_ns").to_numpy() - s.column("imu__t_ns").to_numpy())
    assert (span <= 3_000_000).all()
    assert len(set(s.column("imu__pos").to_pylist())) == s.num_rows


def test_the_other_streams_join_the_set_ticks_as_in_the_backfill(run):
    assert_rows_equal(run["stream"], run["batch"])
