"""Beam's Python SDK harness where it runs in this process (the local runner, Prism's and
Flink's LOOPBACK workers, the sliced backfill's forked workers).

Each bundle the harness runs starts a state-sampler thread (the per-step msec counters) and
ends by joining it. The thread sleeps between samples, from 2 ms growing 1.2x per sample up to
``sampling_period_ms`` (200 ms), and checks whether to stop only when it wakes, so the bundle's
end waits out the sleep in progress: 2.7 ms after a 50 ms bundle, 55 ms after a 0.6 s one, up
to 200 ms after longer ones (measured with Beam 2.77's Cython sampler). Every stage of a job
ends that way, and the stream job's first bundle (a backlog's first poll) is on the path to
its first buckets. :func:`shorten_sampling` caps the sleep at ``SAMPLING_PERIOD_MS``: the
wait is then at most that, and the counters are sampled more finely. Beam has no option for
it: the period is the sampler's constructor default, which the harness never overrides.
"""

from __future__ import annotations

SAMPLING_PERIOD_MS = 20


def shorten_sampling(period_ms: int = SAMPLING_PERIOD_MS) -> bool:
    """Make ``period_ms`` the state sampler's default period; False (and nothing changed)
    where the sampler is not as described above (another Beam version)."""
    from apache_beam.runners.worker import statesampler
    init = getattr(getattr(statesampler, "StateSampler", None), "__init__", None)
    defaults = getattr(init, "__defaults__", None)
    if not isinstance(defaults, tuple) or len(defaults) != 1 \
            or not isinstance(defaults[0], int):
        return False
    init.__defaults__ = (int(period_ms),)
    return True
