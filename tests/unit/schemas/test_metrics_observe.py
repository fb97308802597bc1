"""One observation at a time (``Family.observe``, no numpy) fills a histogram exactly as
``observe_many`` does with the same values (schemas/metrics.py)."""

import numpy as np

from mmalign.schemas import metrics
from mmalign.schemas.metrics import STAGE_SECONDS


def _hist():
    _, hists = metrics.series()
    (counts, total, n), = hists.values()
    return counts.tolist(), total, n


def test_observe_one_by_one_equals_observe_many():
    edges = list(STAGE_SECONDS.buckets)
    values = [*edges, *(np.nextafter(e, -1) for e in edges), *(np.nextafter(e, 2) for e in edges),
              0.0, -1.0, edges[-1] * 10, 1e-9, float("nan"), float("inf"), -float("inf")]
    labels = {"stage": "validate", "modality": "audio"}
    metrics.reset_local()
    try:
        STAGE_SECONDS.observe_many(values, **labels)
        many = _hist()
        metrics.reset_local()
        for v in values:
            STAGE_SECONDS.observe(v, **labels)
        one = _hist()
    finally:
        metrics.reset_local()
    assert one[0] == many[0] and one[2] == many[2] == len(values) - 3
    assert abs(one[1] - many[1]) < 1e-9 * max(1.0, abs(many[1]))
