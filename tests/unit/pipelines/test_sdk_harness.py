"""The in-process SDK harness's state sampler wakes at least every 20 ms (pipelines/
sdk_harness.py), so a bundle's end no longer waits out a sleep of up to 200 ms."""

from __future__ import annotations

from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory

import mmalign.pipelines.core  # noqa: F401 -- the jobs' import applies it
from mmalign.pipelines import sdk_harness


def test_the_jobs_import_caps_the_sampler_period():
    sampler = statesampler.StateSampler("stage", CounterFactory())
    assert sampler.sampling_period_ms == sdk_harness.SAMPLING_PERIOD_MS == 20
    sampler.start()
    sampler.stop()                       # still a working sampler


def test_an_unexpected_sampler_is_left_alone(monkeypatch):
    class Other:
        def __init__(self, prefix, counter_factory, sampling_period_ms=200, ratio=1.2):
            pass
    monkeypatch.setattr(statesampler, "StateSampler", Other)
    assert sdk_harness.shorten_sampling() is False
    assert Other.__init__.__defaults__ == (200, 1.2)
