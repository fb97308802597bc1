"""The clock stage: chunks rewritten from their device clock onto the session's reference
clock with the stream's ``ClockModel`` (schemas/clock.py)."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from mmalign.schemas import metrics
from mmalign.schemas.clock import ClockModel
from mmalign.schemas.metrics import CLOCK

TIME_COLUMNS = ("t_ns", "t_end_ns")   # columns rewritten onto the reference clock


def apply_clock(chunk, model: ClockModel):
    """The chunk with its times on the reference clock; device times kept as ``t_dev_ns``."""
    if chunk.clock == "reference":
        return chunk
    data = chunk.data
    dev = data.column("t_ns")
    for name in TIME_COLUMNS:
        if name in data.schema.names:
            i = data.schema.get_field_index(name)
            ref = model.to_ref(data.column(name).to_numpy(zero_copy_only=False))
            data = data.set_column(i, name, pa.array(ref, pa.int64()))
    data = data.append_column("t_dev_ns", dev)
    prev = None if chunk.prev_t_ns is None else int(model.to_ref([chunk.prev_t_ns])[0])
    return chunk.with_data(data, clock="reference", prev_t_ns=prev,
                           meta={**chunk.meta, "clock": model.to_dict()})


class ApplyClockFn(beam.DoFn):
    """Chunks onto the reference clock. Models by (session, stream): the ``estimated`` side
    input (DTW-sync) wins over the ``declared`` ones (calibration file); else identity."""

    def __init__(self, declared: dict):
        self.declared = declared

    def process(self, chunk, estimated=None):
        key = (chunk.session_id, chunk.stream_id)
        model = (estimated or {}).get(key) or self.declared.get(key) or ClockModel()
        CLOCK.count(metrics.RECORDS, chunk.num_records, modality=chunk.modality)
        with CLOCK.timed(chunk.modality, session=chunk.session_id, stream=chunk.stream_id,
                         seq=chunk.seq):             # processing time + sampled span
            out = apply_clock(chunk, model)
        yield out
