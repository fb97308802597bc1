"""Two sessions recorded at different wall-clock times, each with device clocks that start at
0, through one streaming job on a real broker: they share one clock (their starts), so the
later session is not 'too late' behind the earlier one, and the outputs carry UTC times."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from mmalign.deadletter.kafka_topic import read_topic
from mmalign.pipelines import backfill, stream
from mmalign.pipelines.publish import publish
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.manifest import parse_utc_ns
from mmalign.transforms.io.parquet import read_aligned
from tests.e2e_checks import assert_rows_equal

pytestmark = pytest.mark.slow
# (an MP4 creation_time has whole seconds)
STARTS = {"morning": "2026-03-02T08:00:00Z", "noon": "2026-03-02T12:00:01Z"}


@pytest.fixture(scope="module")
def run(kafka_broker, fresh_topics, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sessions")
    manifests = [generate_recording(tmp / s, seed=i, duration_s=6.0, session=s,
                                    bad_records=False, start_time=t)
                 for i, (s, t) in enumerate(STARTS.items())]
    backfill.run(manifests, tmp / "batch", run_id="batch")
    settings, tag = fresh_topics()
    for m in manifests:                          # one after the other, both from device 0
        publish(m, settings, run_id="publish")
    opts = stream.StreamOptions(group_id=f"g-{tag}", stop_after_idle_s=3.0)
    summary = stream.run(manifests, tmp / "stream", settings, opts, run_id="s1")
    return {"tmp": tmp, "settings": settings, "summary": summary}


def test_no_session_is_too_late_behind_the_other(run):
    letters = [r.letter for r in read_topic(run["settings"])]
    assert not [d for d in letters if d.reason == "too_late"]


def test_streamed_rows_equal_the_backfill_and_carry_utc(run):
    streamed = read_aligned(run["tmp"] / "stream" / "aligned")
    batch = read_aligned(run["tmp"] / "batch" / "aligned")
    assert set(streamed.column("session_id").to_pylist()) == set(STARTS)
    assert_rows_equal(streamed, batch)
    for session, start in STARTS.items():
        rows = streamed.filter(pc.equal(streamed.column("session_id"), session))
        utc = rows.column("tick_time").cast("int64").to_pylist()
        rel = rows.column("tick_ns").to_pylist()
        assert rel[0] < 10**10                              # device-relative: seconds
        assert utc == [parse_utc_ns(start) + t for t in rel]  # and the same instant in UTC
