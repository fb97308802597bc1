"""Arrow batches and tables pickle as IPC streams (schemas/arrow_pickle.py): a slice pickles
only its rows, and everything comes back equal (types, nulls, dictionaries, nested lists,
schema metadata, empty and sliced data)."""

import pickle

import numpy as np
import pyarrow as pa
import pytest

import mmalign.schemas.chunk  # noqa: F401 -- registers the reducers as every pipeline does
from mmalign.schemas.chunk import Chunk


def _batch(n: int) -> pa.RecordBatch:
    rng = np.random.default_rng(0)
    return pa.record_batch({
        "t_ns": pa.array(np.arange(n, dtype=np.int64) * 1000),
        "x": pa.array(rng.random(n)),
        "maybe": pa.array([None if i % 7 == 0 else i for i in range(n)], pa.int32()),
        "src": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                              pa.array(["file:///a.csv"])),
        "pcm": pa.array([[float(i), -1.0] for i in range(n)], pa.list_(pa.float32())),
        "text": pa.array([f"cue {i}" for i in range(n)]),
    }).replace_schema_metadata({b"mmalign": b"1"})


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_slices_round_trip_and_pickle_only_their_rows(protocol):
    whole = _batch(20_000)
    part = whole.slice(12_000, 50)
    back = pickle.loads(pickle.dumps(part, protocol=protocol))
    assert back.equals(part) and back.schema.metadata == part.schema.metadata
    assert len(pickle.dumps(part, protocol=protocol)) < len(pickle.dumps(whole)) / 50


def test_tables_empty_data_and_chunks_round_trip():
    b = _batch(100)
    table = pa.Table.from_batches([b.slice(0, 10), b.slice(90, 10)])
    assert pickle.loads(pickle.dumps(table)).equals(table)
    empty = b.slice(0, 0)
    assert pickle.loads(pickle.dumps(empty)).schema == b.schema
    assert pickle.loads(pickle.dumps(table.slice(0, 0))).num_rows == 0
    chunk = Chunk(session_id="s", stream_id="imu", modality="sensor", seq=3,
                  data=b.slice(5, 5), source_uri="file:///a.csv")
    again = pickle.loads(pickle.dumps(chunk))
    assert again.data.equals(chunk.data) and again.key == chunk.key and again.seq == 3
