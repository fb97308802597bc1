"""What the end-to-end tests compare, in one place: aligned tables row for row, the online
store against the last aligned tick, and waiting for a condition a background job makes true."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa


def assert_rows_equal(got: pa.Table, want: pa.Table, min_rows: int = 100, where: str = ""
                      ) -> None:
    """``got`` has ``want``'s columns, in order, each equal value for value (``want`` has
    more than ``min_rows`` rows, so the comparison means something)."""
    assert want.num_rows > min_rows, (where, want.num_rows)
    assert got.schema.names == want.schema.names, where
    for name in want.schema.names:
        assert got.column(name).equals(want.column(name)), (where, name)


def assert_online_holds(got: dict, last: dict, streams: Sequence[str]) -> None:
    """Feast's online read (``encoders.feature_store.read_online`` for one session) holds the
    aligned row ``last``: its tick, each stream's model id and embedding (None where the
    embedding was not ok), and the fused embedding when there is one."""
    assert got["tick_ns"] == [last["tick_ns"]]
    for s in streams:
        assert got[f"{s}__model_id"] == [last[f"{s}__model_id"]], s
        if last[f"{s}__emb_status"] == "ok":
            np.testing.assert_array_equal(np.array(got[f"{s}__emb"][0], np.float32),
                                          np.array(last[f"{s}__emb"], np.float32), err_msg=s)
        else:
            assert got[f"{s}__emb"] == [None], s
    if "fused__emb" in last:
        np.testing.assert_array_equal(np.array(got["fused__emb"][0], np.float32),
                                      np.array(last["fused__emb"], np.float32))


def wait_until(cond: Callable[[], object], timeout_s: float, every_s: float = 0.2) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every_s)
    return False
