"""pipelines/drift.py: the MMD² permutation test, PSI/KL, sample-size behaviour, features of
aligned rows and baseline files (plain numpy; no pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from mmalign.pipelines import drift
from mmalign.pipelines.slo import load_slo

CFG = load_slo().drift
KW = {"max_mmd": CFG.max_mmd, "max_p_value": CFG.max_p_value, "min_samples": CFG.min_samples,
      "max_samples": CFG.max_samples, "permutations": CFG.permutations}


def gaussian(seed: int, n: int, shift: float = 0.0, d: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift
    return x


def baseline_of(x: np.ndarray) -> drift.StreamBaseline:
    return drift.fit("imu", "sensor", drift.VALUES, [f"c{i}" for i in range(x.shape[1])], x,
                     CFG.max_samples)


def brute_mmd2(x: np.ndarray, y: np.ndarray, bw: float) -> float:
    """The unbiased MMD² written out term by term (an independent implementation)."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bw * bw))
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_mmd2_equals_the_textbook_estimator() -> None:
    x, y = gaussian(1, 25), gaussian(2, 31, shift=0.7)
    observed, p = drift.mmd2_permutation(x, y, 1.3, permutations=40)
    assert observed == pytest.approx(brute_mmd2(x, y, 1.3), rel=1e-5, abs=1e-7)
    assert 1 / 41 <= p <= 1.0


def test_same_distribution_passes_with_p_above_005() -> None:
    base = baseline_of(gaussian(100, 300))
    r = drift.compare(base, gaussian(101, 300), **KW)
    assert r.status == drift.OK_DRIFT and r.p_value > 0.05, r.message
    assert r.n == r.n_baseline == 300
    assert abs(r.mmd2) < CFG.max_mmd and 0 <= r.psi < 0.25


def test_p_values_under_the_null_are_spread_not_small() -> None:
    # independent samples of one distribution: no stream drifts, and the permutation test's
    # p-values look uniform (a biased test piles them up near 0)
    ps = []
    for seed in range(12):
        r = drift.compare(baseline_of(gaussian(2 * seed, 200)), gaussian(2 * seed + 1, 200),
                          **KW)
        assert r.status == drift.OK_DRIFT, r.message
        ps.append(r.p_value)
    assert sum(p <= 0.05 for p in ps) <= 2, ps
    assert 0.3 < float(np.mean(ps)) < 0.7, ps


def test_a_shifted_distribution_fails() -> None:
    base = baseline_of(gaussian(7, 300))
    r = drift.compare(base, gaussian(8, 300, shift=1.0), **KW)
    assert r.status == drift.DRIFTED, r.message
    assert r.mmd2 > CFG.max_mmd and r.p_value < CFG.max_p_value
    assert r.p_value == pytest.approx(1 / (1 + CFG.permutations))   # no shuffle reached it
    assert r.psi > 0.25 and r.kl > 0
    same = drift.compare(base, gaussian(9, 300), **KW)
    assert r.psi > 3 * same.psi and r.mmd2 > 10 * max(same.mmd2, 1e-3)


def test_sample_size_behaviour() -> None:
    # too few rows on either side: reported, never judged
    base = baseline_of(gaussian(3, 300))
    few = drift.compare(base, gaussian(4, CFG.min_samples - 1, shift=3.0), **KW)
    assert few.status == drift.TOO_FEW and few.mmd2 is None and few.p_value is None
    assert f"fewer than {CFG.min_samples}" in few.message
    small_base = baseline_of(gaussian(3, CFG.min_samples - 1))
    assert drift.compare(small_base, gaussian(4, 300), **KW).status == drift.TOO_FEW

    # one moderate shift (0.5 sd on one of 3 features) at 30 and at 300 rows per side: the
    # p-value is what grows with n (significant at 300 rows every time, mostly not at 30);
    # the unbiased MMD² estimates the same quantity at both sizes, its spread shrinks with n
    def runs(n):
        return [drift.compare(baseline_of(gaussian(50 + s, n)), gaussian(80 + s, n, 0.5), **KW)
                for s in range(6)]
    small, large = runs(30), runs(300)
    assert all(r.p_value < CFG.max_p_value for r in large), [r.p_value for r in large]
    assert sum(r.p_value < CFG.max_p_value for r in small) <= 2, [r.p_value for r in small]
    assert np.std([r.mmd2 for r in small]) > 3 * np.std([r.mmd2 for r in large])
    # ... and below the MMD threshold a detectable shift is not a drift: large samples make
    # any difference significant, the MMD² says whether it matters
    assert all(r.status == drift.OK_DRIFT and r.mmd2 < CFG.max_mmd for r in large)
    # PSI on decile bins is biased upwards on small samples (empty and crowded bins)
    null_small = [drift.compare(baseline_of(gaussian(s, 30)), gaussian(s + 9, 30), **KW).psi
                  for s in range(4)]
    null_large = [drift.compare(baseline_of(gaussian(s, 300)), gaussian(s + 9, 300), **KW).psi
                  for s in range(4)]
    assert min(null_small) > max(null_large)


def test_at_most_max_samples_rows_evenly_spaced() -> None:
    x = np.arange(1000, dtype=float)[:, None]
    s = drift.spaced(x, 300)
    assert len(s) == 300 and s[0, 0] == 0 and s[-1, 0] == 999
    assert np.all(np.diff(s[:, 0]) > 0)                      # time order kept
    assert np.ptp(np.diff(s[:, 0])) <= 1                     # evenly spaced
    assert len(drift.spaced(x[:10], 300)) == 10
    base = baseline_of(gaussian(1, 5000))
    assert base.n_rows == 5000 and len(base.sample) == CFG.max_samples
    r = drift.compare(base, gaussian(2, 5000), **KW)
    assert r.n == CFG.max_samples and r.n_baseline == CFG.max_samples


def test_features_are_standardised_with_the_baseline() -> None:
    # a feature on a scale 1000x the others does not swamp the kernel
    x = gaussian(1, 300)
    x[:, 2] *= 1000.0
    y = gaussian(2, 300, shift=1.0)
    y[:, 2] *= 1000.0
    assert drift.compare(baseline_of(x), y, **KW).status == drift.DRIFTED


def test_baseline_file_round_trip_gives_the_same_verdict(tmp_path) -> None:
    base = baseline_of(gaussian(1, 300))
    path = drift.save_baselines(tmp_path / "b" / "base.json", {"imu": base}, "/some/out")
    assert drift.is_baseline_file(path)
    loaded = drift.load_baselines(path)["imu"]
    assert loaded.columns == base.columns and loaded.n_rows == 300
    for y in (gaussian(2, 300), gaussian(3, 300, shift=1.0)):
        a, b = drift.compare(base, y, **KW), drift.compare(loaded, y, **KW)
        assert a.status == b.status
        assert a.mmd2 == pytest.approx(b.mmd2, abs=1e-5) and a.p_value == b.p_value


def test_bad_baseline_files_are_refused(tmp_path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    assert not drift.is_baseline_file(other)
    with pytest.raises(ValueError, match="not a drift baseline"):
        drift.load_baselines(other)
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps({"format": drift.BASELINE_FORMAT, "streams": {"x": {}}}))
    with pytest.raises(ValueError, match="damaged"):
        drift.load_baselines(damaged)
    with pytest.raises(ValueError, match="not a drift baseline"):
        drift.load_baselines(tmp_path / "missing.json")


def test_a_different_feature_count_is_not_judged() -> None:
    r = drift.compare(baseline_of(gaussian(1, 100)), gaussian(2, 100, d=4), **KW)
    assert r.status == drift.TOO_FEW and "4 features, the baseline has 3" in r.message


def test_table_features_embeddings_ok_only_and_sensor_values_with_a_value() -> None:
    t = pa.table({
        "t_ns": [0, 1, 2, 3],
        "cam0__status": ["ok"] * 4,
        "cam0__emb": [[1.0, 2.0], [3.0, 4.0], None, [5.0, 6.0]],
        "cam0__emb_status": ["ok", "ok", "no_frame", "decode_error"],
        "imu__status": ["ok", "partial_window", "gap_too_large", "ok"],
        "imu__dt_ns": [1, 2, 3, 4],
        "imu__ax": [0.1, 0.2, np.nan, 0.4],
        "imu__ay": [1.0, 2.0, 3.0, np.inf],
        "mic__status": ["ok"] * 4,
        "mic__rms": [0.1, 0.2, 0.3, 0.4],
    })
    f = drift.table_features(t, {"cam0": "video", "imu": "sensor", "mic": "audio"})
    assert set(f) == {"cam0", "imu"}                     # audio without embeddings: none
    mod, src, cols, x = f["cam0"]
    assert (mod, src, cols) == ("video", drift.EMBEDDING, ["cam0__emb"])
    assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    mod, src, cols, x = f["imu"]
    assert (mod, src, cols) == ("sensor", drift.VALUES, ["imu__ax", "imu__ay"])
    assert x.tolist() == [[0.1, 1.0], [0.2, 2.0]]        # status with a value, finite rows
    bad = pa.table({"cam0__status": ["ok", "ok"], "cam0__emb": [[1.0], [1.0, 2.0]]})
    with pytest.raises(ValueError, match="different sizes"):
        drift.table_features(bad, {"cam0": "video"})
