"""audio_window under clock drift (issue 19): a drifting recorder's blocks, put on the reference
clock by its ClockModel exactly as the clock stage does, tile the time without holes, so a
window they cover is ``ok`` with coverage 1 at any drift a model may carry, and holds
``w * rate / (1 + drift)`` device samples (the window and the coverage are measured on the same
clock). Holes in the samples (dropped blocks) are still ``partial_window``."""

from __future__ import annotations

import numpy as np
import pytest

from mmalign.schemas.clock import MAX_DRIFT, ClockModel
from mmalign.transforms.align import policies as ap
from mmalign.transforms.align.policies import Status

MS = 1_000_000
T0 = 1_700_000_000_000_000_000          # an epoch-like device time


def drifting_blocks(sr: int, block: int, n_blocks: int, drift: float, drop=()):
    """Block starts of a contiguous recording on the reference clock (via ClockModel.to_ref:
    ns-rounded like the pipeline's), with the blocks in ``drop`` missing."""
    pos = np.arange(n_blocks, dtype=np.int64) * block
    t_dev = T0 + (pos * 1_000_000_000 + sr // 2) // sr
    model = ClockModel(-913_000_000, drift, T0 + 3_000_000_000, "estimated")
    t_ref = model.to_ref(t_dev)
    keep = np.ones(n_blocks, bool)
    keep[list(drop)] = False
    return t_ref[keep], pos[keep], np.full(keep.sum(), block, np.int64)


DRIFTS_PPM = [-MAX_DRIFT * 1e6, -50_000, -2_000, -200, -150, -50, 0, 50, 80, 150, 200, 999,
              1_000, 1_001, 2_000, 50_000, 100_000 - 1]


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("block", [1024, 4096])
def test_full_windows_are_ok_at_any_allowed_drift(sr, block):
    w = 200 * MS
    for ppm in DRIFTS_PPM:
        drift = ppm * 1e-6
        t, pos, n = drifting_blocks(sr, block, max(40, round(6 * sr / block)), drift)
        end = ap.audio_blocks_end(t, pos, n, sr)
        assert np.array_equal(end[:-1], t[1:]), ppm          # contiguous: no holes
        ticks = np.arange(t[0] + w // 2, end[-1] - w // 2, 33_366_667, dtype=np.int64)
        s0, s1, cov, st = ap.audio_window(ticks, t, pos, n, sr, w)
        assert np.all(st == Status.OK), (ppm, np.unique(st))
        assert np.all(cov == 1.0), (ppm, cov.min())
        # the window's samples, counted in the device clock: w * sr / (1 + drift), +-1 (away
        # from the last block, which ends after its nominal duration: the drift is unknown here)
        want = w * 1e-9 * sr / (1 + drift)
        inner = ticks - w // 2 + w <= t[-1]
        assert inner.sum() > 10
        assert np.all(np.abs((s1 - s0)[inner] - want) <= 1.0), (ppm, (s1 - s0).min(), want)


def test_issue_19_recorder_window_is_ok():
    """The report: 44.1 kHz, 200 ms windows; the recorder's true drift (-150 ppm) and the
    clipped estimate the old fit produced (+1000 ppm) both give full windows."""
    for ppm in (-150.0, 1000.0):
        t, pos, n = drifting_blocks(44100, 1024, 400, ppm * 1e-6)
        ticks = np.arange(t[0] + 100 * MS, t[-1] - 100 * MS, 33_333_333, dtype=np.int64)
        s0, s1, cov, st = ap.audio_window(ticks, t, pos, n, 44100, 200 * MS)
        assert np.all(st == Status.OK) and np.all(cov == 1.0)
        assert np.all(np.abs((s1 - s0) - 8820 / (1 + ppm * 1e-6)) <= 1)


@pytest.mark.parametrize("ppm", [-100_000 + 1, -2000, 0, 2000, 100_000 - 1])
def test_dropped_blocks_are_still_partial_or_empty(ppm):
    sr, block, w = 16000, 1024, 200 * MS
    t, pos, n = drifting_blocks(sr, block, 200, ppm * 1e-6, drop=[50, 120, 121, 122, 123, 124])
    end = ap.audio_blocks_end(t, pos, n, sr)
    assert (end[:-1] < t[1:]).sum() == 2                     # exactly the two holes
    ticks = np.arange(t[0] + w, end[-1] - w, 10 * MS, dtype=np.int64)
    s0, s1, cov, st = ap.audio_window(ticks, t, pos, n, sr, w)
    hole1 = (end[49], t[50])                                  # t[50] is block 51 (50 dropped)
    touches = (ticks - w // 2 < hole1[1]) & (ticks - w // 2 + w > hole1[0])
    assert np.all(st[touches] != Status.OK) and np.all(cov[touches] < 1)
    assert (st == Status.EMPTY_WINDOW).any()                   # inside the 5-block hole
    assert np.all((st == Status.OK) == (cov == 1.0))


@pytest.mark.parametrize("ppm", [-100_000 + 1, 40_000, 100_000 - 1])
def test_bucketed_equals_whole_session_at_large_drift(ppm):
    """The bucket margin (two blocks) still covers a block stretched by the drift."""
    sr, block, w = 8000, 1024, 100 * MS
    t, pos, n = drifting_blocks(sr, block, 120, ppm * 1e-6, drop=[30, 31, 70])
    end = ap.audio_blocks_end(t, pos, n, sr)
    bounds = (int(t[0]), int(end[-1]))
    ticks = np.arange(t[0] - 300 * MS, end[-1] + 300 * MS, 37 * MS, dtype=np.int64)
    whole = ap.audio_window(ticks, t, pos, n, sr, w, bounds=bounds)
    M = ap.required_margin_ns("audio_window", window_ns=w,
                              block_ns=round(block * 1e9 / sr))
    B = 1000 * MS
    for b in np.unique(ticks // B):
        own = (ticks >= b * B) & (ticks < (b + 1) * B)
        sel = (t >= b * B - M) & (t < (b + 1) * B + M)
        got = ap.audio_window(ticks[own], t[sel], pos[sel], n[sel], sr, w, bounds=bounds)
        for g, want in zip(got, whole):
            assert np.array_equal(g, want[own])
