"""The backfill of a generated recording equals, row for row, what its ground truth implies.

The expectation is computed here, independently of the code under test: from
ground_truth.json, the manifest and calibration (read as YAML), and the source files read with
other tools (pandas for the CSV, soundfile for the WAV, the SRT and the image index as text,
ffprobe for the MP4), with the semantics the documentation states (README "The recording
manifest", "Outputs", "Failure handling"; the docstrings of transforms/align/policies.py,
schemas/aligned.py, schemas/clock.py). Nothing here calls the alignment kernels, the clock
stage or the decoders, and nothing is compared with an earlier output, so the test keeps
holding through refactors and fails on any change of meaning.

Where the documentation leaves a convention open, the implementation was read only to learn
it and the rule is re-implemented here; each such place says so in a comment.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from mmalign.deadletter.file_sink import read_dead_letters
from mmalign.pipelines import backfill
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.decode_options import DecodeOptions
from mmalign.transforms.io.parquet import read_aligned

pytestmark = pytest.mark.slow

SEED, DURATION_S = 11, 8.0
# README "The recording manifest": a stream without a policy gets its modality's default
# (video: nearest, 50 ms; sensor: interpolate, 50 ms; audio: audio_window, 200 ms; text)
DEFAULT_POLICY = {"video": "nearest", "sensor": "interpolate", "audio": "audio_window",
                  "text": "text_overlap"}
DEFAULT_PARAMS = {"tolerance_ms": 50.0, "max_gap_ms": 50.0, "window_ms": 200.0}
PNG_END = b"IEND\xaeB`\x82"
MISSING = None            # a value the output leaves null (status says why)
SHOW = 6                  # mismatching rows shown on failure


# -- the runs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed (scripts/system-deps.sh installs ffmpeg)")
    return generate_recording(tmp_path_factory.mktemp("expected") / "rec", seed=SEED,
                              duration_s=DURATION_S, bad_records=True)


@pytest.fixture(scope="module", params=["generated", "edges"])
def rec(request, recording):
    """One backfill per variant: the recording as generated, and the same recording with clocks
    and policies chosen so that the documented edge rules decide rows (``edge_variant``)."""
    manifest = recording if request.param == "generated" else edge_variant(recording)
    out = recording.parent.parent / f"out-{request.param}"
    backfill.run([manifest], out, run_id="expected")
    return {**load(manifest, out), "variant": request.param}


def inputs(manifest: Path) -> dict:
    """The recording's manifest, calibration and ground truth."""
    folder = manifest.parent
    man = yaml.safe_load(manifest.read_text())
    return {"dir": folder, "manifest": man, "gt": json.loads((folder / "ground_truth.json")
                                                             .read_text()),
            "calib": yaml.safe_load((folder / man["calibration"]).read_text())}


def load(manifest: Path, out: Path) -> dict:
    """``inputs`` plus the run's aligned rows (column -> values, in tick order) and letters."""
    table = read_aligned(out / "aligned")
    return {**inputs(manifest),
            "got": {name: table.column(name).to_pylist() for name in table.column_names},
            "dead": read_dead_letters(out / "deadletter").to_pylist(), "n_rows": table.num_rows}


def streams(rec) -> dict[str, dict]:
    return {s["id"]: s for s in rec["manifest"]["streams"]}


def policy(rec, sid: str) -> dict:
    given = (rec["manifest"]["alignment"].get("policies") or {}).get(sid) or {}
    return {"policy": DEFAULT_POLICY[streams(rec)[sid]["modality"]], **DEFAULT_PARAMS, **given}


def ms_ns(ms: float) -> int:
    return round(ms * 1e6)


def clock_of(rec, sid: str) -> dict:
    """The stream's clock model from calibration.yaml (README "Calibration file"); a domain
    that is not listed runs on the reference clock."""
    domain = streams(rec)[sid].get("clock") or sid
    spec = (rec["calib"].get("clocks") or {}).get(domain) or {}
    assert set(spec) <= {"offset_ns", "offset_ms", "drift_ppm", "anchor_ns"}, spec
    off = spec["offset_ns"] if "offset_ns" in spec else ms_ns(spec.get("offset_ms", 0.0))
    return {"offset_ns": int(off), "drift_ppm": float(spec.get("drift_ppm", 0.0)),
            "anchor_ns": int(spec.get("anchor_ns", 0))}


def true_clock(rec, sid: str) -> bool:
    """Whether the calibration holds the generator's true clock for ``sid`` (then the reference
    times must equal ground_truth.json's true times)."""
    g = rec["gt"]["streams"][sid]["clock"]
    return clock_of(rec, sid) == {k: g[k] for k in ("offset_ns", "drift_ppm", "anchor_ns")}


def to_ref(t_dev, c: dict) -> np.ndarray:
    """t_ref = t_dev + offset + drift * (t_dev - anchor), the drift term rounded to the nearest
    ns (half to even) in float64, as schemas/clock.py ClockModel.to_ref does."""
    t = np.asarray(t_dev, np.int64)
    return t + c["offset_ns"] + np.rint(
        c["drift_ppm"] * 1e-6 * (t - c["anchor_ns"]).astype(np.float64)).astype(np.int64)


def bad(rec, sid: str) -> dict[str, tuple[str, str]]:
    return {b["position"]: (b["stage"], b["reason"]) for b in rec["gt"]["bad_records"]
            if b["stream"] == sid}


def ffprobe(path: Path, kind: str, entries: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{kind}:0",
                          "-show_entries", entries, "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def stream_info(path: Path, kind: str) -> dict:
    (info,) = ffprobe(path, kind, "stream=time_base,sample_rate")["streams"]
    return info


# -- the ticks ---------------------------------------------------------------------------

def anchor_frames(rec) -> tuple[np.ndarray, np.ndarray]:
    """cam0's frames (position, reference time): the ticks (``ticks: {anchor: cam0}``)."""
    sid = rec["manifest"]["alignment"]["ticks"]["anchor"]
    path = rec["dir"] / streams(rec)[sid]["files"][0]
    tb = Fraction(stream_info(path, "v")["time_base"])
    pts = sorted(int(f["pts"]) for f in ffprobe(path, "v", "frame=pts")["frames"])
    t_dev = [pts_i * tb * 1_000_000_000 for pts_i in pts]
    assert all(t.denominator == 1 for t in t_dev)        # the generator's pts are whole 100 us
    t_dev = np.array([int(t) for t in t_dev], np.int64)
    frames = rec["gt"]["streams"][sid]["frames"]
    assert t_dev.tolist() == frames["t_dev_ns"], "ffprobe and ground truth disagree on cam0 pts"
    ticks = to_ref(t_dev, clock_of(rec, sid))
    assert ticks.tolist() == frames["t_true_ns"] or not true_clock(rec, sid)
    return np.arange(len(ticks)), ticks


# -- per policy: brute force from the documented rules -------------------------------------

def expect_nearest(ticks, t, pos, files, tol, prefix):
    """policies.nearest: the closest sample if |dt| <= tol, ties to the earlier sample (and the
    first of equal times); outside [first, last] sample: out_of_range."""
    out = {k: [] for k in ("status", "dt_ns", "t_ns", "pos", "file")}
    for tick in ticks:
        d = np.abs(t - tick)
        j = int(np.argmin(d))            # t is sorted: the first minimum is the earliest sample
        if d[j] <= tol:
            row = ("ok", int(t[j] - tick), int(t[j]), int(pos[j]), files[j])
        else:
            status = "out_of_range" if tick < t[0] or tick > t[-1] else "no_sample_in_tolerance"
            row = (status, MISSING, MISSING, MISSING, MISSING)
        for k, v in zip(out, row):
            out[k].append(v)
    return {f"{prefix}__{k}": v for k, v in out.items()}


def expect_interpolate(ticks, t, pos, values, channels, max_gap, prefix):
    """policies.interpolate: a tick equal to a sample time takes it (the first of equal times);
    else the last sample before and the first after, used when at most max_gap apart:
    v = v_l + (v_r - v_l) * (tick - t_l) / (t_r - t_l). dt_ns = sample time - tick time (README
    "Outputs") of the nearer of the two samples, the earlier one on a tie (as nearest)."""
    out = {k: [] for k in ("status", *channels, "pos", "pos_right", "dt_ns")}
    for tick in ticks:
        eq = np.flatnonzero(t == tick)
        before, after = np.flatnonzero(t < tick), np.flatnonzero(t > tick)
        if eq.size:
            lj = rj = int(eq[0])
            v = values[lj]
        elif before.size and after.size and t[after[0]] - t[before[-1]] <= max_gap:
            lj, rj = int(before[-1]), int(after[0])
            frac = int(tick - t[lj]) / int(t[rj] - t[lj])
            v = values[lj] + (values[rj] - values[lj]) * frac
        else:
            status = "out_of_range" if tick < t[0] or tick > t[-1] else "gap_too_large"
            for k in out:
                out[k].append(status if k == "status" else MISSING)
            continue
        out["status"].append("ok")
        for c, x in zip(channels, v):
            out[c].append(float(x))
        out["pos"].append(int(pos[lj]))
        out["pos_right"].append(int(pos[rj]))
        near = lj if tick - t[lj] <= t[rj] - tick else rj
        out["dt_ns"].append(int(t[near] - tick))
    return {f"{prefix}__{k}": v for k, v in out.items()}


def audio_blocks(n_samples: int, rate: int, start_dev: int, clock: dict):
    """The decoder's blocks (documented in transforms/decode/audio.py: blocks of
    ``block_samples`` samples, t of a block = start + round(first_sample * 1e9 / rate), half up),
    moved onto the reference clock block by block, with their ends (policies.audio_blocks_end:
    contiguous blocks end where the next begins; the last after its nominal duration)."""
    block = DecodeOptions.model_fields["block_samples"].default
    first = np.arange(0, n_samples, block, dtype=np.int64)
    n = np.minimum(block, n_samples - first)
    half_up = (first * 2_000_000_000 + rate) // (2 * rate)    # round(first * 1e9 / rate)
    bt = to_ref(start_dev + half_up, clock)
    dur = np.array([round(Fraction(int(k) * 10**9, rate)) for k in n], np.int64)
    step = np.diff(bt)
    # every block continues the previous one, far inside the contiguity slack (max(one sample,
    # 0.1 % of a block)), so the exact threshold rule does not matter here
    assert np.all(np.abs(step - dur[:-1]) < max(1e9 / rate, dur[0] / 1000) / 2)
    end = np.append(bt[1:], bt[-1] + dur[-1])
    return bt, first, n, end


def expect_audio(ticks, bt, first, n, end, window_ns, rate, prefix):
    """policies.audio_window: window [tick - w//2, tick - w//2 + w); sample q of block k sits at
    t_k + q * (end_k - t_k) / n_k; [sample_start, sample_end) = source indices of the samples in
    the window; coverage = the window's time covered by blocks / w; ok (1), partial_window,
    empty_window, out_of_range (window wholly before the first block or after the last end)."""
    seg = end - bt
    k_of = np.repeat(np.arange(len(bt)), n)                 # every sample: its block ...
    q = np.arange(int(n.sum())) - np.repeat(first, n)      # ... and its index in the block
    src = np.repeat(first, n) + q                           # its source index
    tk, sk, nk = bt[k_of], seg[k_of], n[k_of]
    out = {k: [] for k in ("status", "sample_start", "sample_end", "coverage", "sample_rate")}
    for tick in ticks:
        a = int(tick) - window_ns // 2
        b = a + window_ns
        # a <= t_k + q*seg/n < b, in integers: (a - t_k)*n <= q*seg < (b - t_k)*n
        inside = ((a - tk) * nk <= q * sk) & (q * sk < (b - tk) * nk)
        covered = int(np.clip(np.minimum(end, b) - np.maximum(bt, a), 0, None).sum())
        if b <= bt[0] or a >= end[-1]:
            status = "out_of_range"
        elif covered == window_ns:
            status = "ok"
        elif covered > 0:
            status = "partial_window"
        else:
            status = "empty_window"
        idx = np.flatnonzero(inside)
        out["status"].append(status)
        out["sample_start"].append(int(src[idx[0]]) if idx.size else MISSING)
        out["sample_end"].append(int(src[idx[-1]]) + 1 if idx.size else MISSING)
        out["coverage"].append(covered / window_ns)
        out["sample_rate"].append(rate)
    return {f"{prefix}__{k}": v for k, v in out.items()}


def expect_text(ticks, start, end, pos, text, prefix):
    """policies.text_overlap: the cues whose closed [start, end] contains the tick, in segment
    order (time, then position); ok or no_overlap. Several cues' texts are joined with a newline
    (README is silent on it; transforms/align/join.py was read for that convention only)."""
    order = sorted(range(len(start)), key=lambda i: (start[i], pos[i]))
    out = {k: [] for k in ("status", "text", "cues")}
    for tick in ticks:
        hit = [i for i in order if start[i] <= tick <= end[i]]
        out["status"].append("ok" if hit else "no_overlap")
        out["text"].append("\n".join(text[i] for i in hit) if hit else MISSING)
        out["cues"].append([pos[i] for i in hit])
    return {f"{prefix}__{k}": v for k, v in out.items()}


# -- the source files, read independently --------------------------------------------------

def image_sequence(rec, sid):
    """(pos, t_ref, file) of the frames that decode: index lines ``<t_ns> <file>``; a PNG cut
    short (no IEND chunk) is the decoder's ``corrupt_image``."""
    index = rec["dir"] / streams(rec)[sid]["files"][0]
    rows, found = [], {}
    for k, line in enumerate(index.read_text().splitlines()):
        t, name = line.split()
        if not (index.parent / name).read_bytes().endswith(PNG_END):
            found[f"frame={k}"] = ("decode", "corrupt_image")
            continue
        rows.append((k, int(t), name))
    assert found == bad(rec, sid)
    pos, t_dev, files = (list(x) for x in zip(*rows))
    t = to_ref(t_dev, clock_of(rec, sid))
    f = rec["gt"]["streams"][sid]["frames"]
    assert pos == f["pos"] and (t.tolist() == f["t_true_ns"] or not true_clock(rec, sid))
    return np.array(pos), t, files


def sensor_rows(rec, sid):
    """(pos, t_ref, values[n, c], channels) of the rows that pass decode and validate: a cell
    that is no number is ``decode/non_numeric``; a non-finite value ``validate/non_finite``; a
    time equal to / before the previous accepted row's ``duplicate_timestamp`` /
    ``out_of_order``."""
    s = streams(rec)[sid]
    opts = s["options"]
    raw = pd.read_csv(rec["dir"] / s["files"][0], dtype=str, keep_default_na=False)
    channels = list(opts["channels"])
    rows, found, last = [], {}, None
    for k, r in enumerate(raw.itertuples(index=False)):
        cells = r._asdict()
        try:
            t = int(cells[opts["time_column"]])
            v = [float(cells[c]) for c in channels]
        except ValueError:
            found[f"row={k}"] = ("decode", "non_numeric")
            continue
        if not all(math.isfinite(x) for x in v):
            found[f"row={k}"] = ("validate", "non_finite")
            continue
        if last is not None and t <= last:
            found[f"row={k}"] = ("validate", "duplicate_timestamp" if t == last
                                 else "out_of_order")
            continue
        last = t
        rows.append((k, t, v))
    assert found == bad(rec, sid)
    pos = np.array([r[0] for r in rows])
    t = to_ref([r[1] for r in rows], clock_of(rec, sid))
    g = rec["gt"]["streams"][sid]["rows"]
    assert pos.tolist() == g["pos"] and (t.tolist() == g["t_true_ns"] or not true_clock(rec, sid))
    return pos, t, np.array([r[2] for r in rows], np.float64), channels


def srt_cues(rec, sid):
    """(pos, start_ref, end_ref, text) of the cues that pass: text that is not UTF-8 is
    ``decode/invalid_utf8``, an end before the start ``validate/end_before_start``."""
    path = rec["dir"] / streams(rec)[sid]["files"][0]
    blocks = [b for b in path.read_bytes().replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]

    def ns(stamp: str) -> int:
        hms, ms = stamp.strip().split(",")
        h, m, s = (int(x) for x in hms.split(":"))
        return ((h * 60 + m) * 60 + s) * 1_000_000_000 + int(ms) * 1_000_000

    cues, found = [], {}
    for k, blk in enumerate(blocks):
        lines = blk.split(b"\n")
        a, b = lines[1].decode("ascii").split("-->")
        try:
            text = b"\n".join(lines[2:]).decode("utf-8")
        except UnicodeDecodeError:
            found[f"cue={k}"] = ("decode", "invalid_utf8")
            continue
        if ns(b) < ns(a):
            found[f"cue={k}"] = ("validate", "end_before_start")
            continue
        cues.append((k, ns(a), ns(b), text))
    assert found == bad(rec, sid)
    c = clock_of(rec, sid)
    pos = [x[0] for x in cues]
    start = to_ref([x[1] for x in cues], c).tolist()
    end = to_ref([x[2] for x in cues], c).tolist()
    g = rec["gt"]["streams"][sid]["cues"]
    assert pos == g["pos"] and ((start, end) == (g["t_true_ns"], g["t_end_true_ns"])
                                or not true_clock(rec, sid))
    return pos, start, end, [x[3] for x in cues]


def wav_blocks(rec, sid):
    s = streams(rec)[sid]
    info = sf.info(str(rec["dir"] / s["files"][0]))
    start = int((s.get("options") or {}).get("start_ns", 0))   # README: WAV has no timestamps
    g = rec["gt"]["streams"][sid]
    assert (start, info.frames, info.samplerate) == \
        (g["first_sample_t_dev_ns"], g["n_samples"], g["sample_rate"])
    return (*audio_blocks(info.frames, info.samplerate, start, clock_of(rec, sid)),
            info.samplerate)


def track_blocks(rec, sid):
    """A container's audio track as decoded: every decoded sample (AAC priming included) from
    the first decoded frame's pts on (transforms/decode/audio.py's documented start), per
    ffprobe's decoded frames."""
    path = rec["dir"] / streams(rec)[sid]["files"][0]
    info = stream_info(path, "a")
    tb, rate = Fraction(info["time_base"]), int(info["sample_rate"])
    frames = ffprobe(path, "a", "frame=pts,nb_samples")["frames"]
    pts = [int(f["pts"]) for f in frames]
    start = round(pts[0] * tb * 1_000_000_000)
    # the decoder numbers samples on from the first frame; that is exact when frames follow
    # each other without gaps in pts, as here
    nb = np.array([int(f["nb_samples"]) for f in frames], np.int64)
    assert pts == (pts[0] + np.cumsum(nb) - nb).tolist()
    g = rec["gt"]["streams"][sid]            # the source samples are among the decoded ones
    assert rate == g["sample_rate"] and pts[0] <= g["first_sample_pts"] and \
        pts[0] + nb.sum() >= g["first_sample_pts"] + g["n_samples"]
    return (*audio_blocks(int(nb.sum()), rate, start, clock_of(rec, sid)), rate)


# -- the edge variant ----------------------------------------------------------------------

SHIFT_NS = 4_000_000_000   # half the recording: ticks before / after a shifted stream's extent
ODD_WINDOW_MS = 199.999999   # w = 199999999 ns: w // 2 rounds down


def edge_variant(manifest: Path) -> Path:
    """manifest_edges.yaml + calibration_edges.yaml next to ``manifest``: the same files, with
    clock offsets and policies computed from the data so that, as well as the usual rows,

    - cam1 (offset +4 s + d): the first half of the ticks are out_of_range; one tick lies exactly
      midway between two frames and the tolerance is exactly that half spacing (a tie at the
      inclusive limit: the earlier frame); ticks farther off: no_sample_in_tolerance;
    - imu (offset -4 s + d): the second half is out_of_range; one tick equals a sample time;
      max_gap is exactly one tick's bracket width (inclusive), wider brackets: gap_too_large;
    - transcript (offset + d): a cue ends exactly on a tick (closed interval);
    - mic (offset +4 s + d, window 199999999 ns): out_of_range, partial windows whose coverage
      depends on w // 2 to the ns, and a sample exactly on a window's (inclusive) start.
    """
    rec = inputs(manifest)
    _, ticks = anchor_frames(rec)
    clocks = {sid: clock_of(rec, sid) for sid in ("cam1", "imu", "transcript", "mic")}
    policies = dict(rec["manifest"]["alignment"]["policies"])

    def exact_ms(ns: int) -> float:
        assert ms_ns(ns / 1e6) == ns
        return ns / 1e6

    # cam1: a tie at the tolerance
    _, t, _ = image_sequence(rec, "cam1")
    t = t + SHIFT_NS
    for x in ticks[ticks > t[0] + 1_000_000_000]:      # the first tick between two frames
        j = int(np.searchsorted(t, x)) - 1               # whose midpoint is a whole ns
        if (t[j] + t[j + 1]) % 2 == 0:
            break
    clocks["cam1"]["offset_ns"] += SHIFT_NS + int(x) - int(t[j] + t[j + 1]) // 2
    policies["cam1"] = {"policy": "nearest", "tolerance_ms": exact_ms(int(t[j + 1] - t[j]) // 2)}

    # imu: an exact sample and a bracket exactly max_gap wide
    _, t, _, _ = sensor_rows(rec, "imu")
    t = t - SHIFT_NS
    inner = ticks[(ticks > t[0] + 500_000_000) & (ticks < t[-1] - 500_000_000)]
    hit = int(inner[len(inner) // 2])
    near = int(t[np.argmin(np.abs(t - hit))])
    t = t + (hit - near)
    clocks["imu"]["offset_ns"] += -SHIFT_NS + hit - near
    r = np.searchsorted(t, inner)
    width = np.sort((t[r] - t[r - 1])[inner != hit])
    policies["imu"] = {"policy": "interpolate", "max_gap_ms": exact_ms(int(width[len(width) // 2]))}

    # transcript: a cue end on a tick
    _, _, end, _ = srt_cues(rec, "transcript")
    d = min((int(x) - e for x in ticks for e in end), key=abs)
    clocks["transcript"]["offset_ns"] += d

    # mic: a block start (a sample) exactly on the start of a window
    w = ms_ns(ODD_WINDOW_MS)
    bt = wav_blocks(rec, "mic")[0] + SHIFT_NS
    x = int(ticks[ticks > bt[0] + 1_000_000_000][0])
    k = int(np.searchsorted(bt, x - w // 2))
    clocks["mic"]["offset_ns"] += SHIFT_NS + (x - w // 2) - int(bt[k])
    policies["mic"] = {"policy": "audio_window", "window_ms": ODD_WINDOW_MS}

    calib = dict(rec["calib"])
    calib["clocks"] = {**calib["clocks"], **{
        sid: {"offset_ns": int(c["offset_ns"]), "drift_ppm": c["drift_ppm"],
              "anchor_ns": c["anchor_ns"]} for sid, c in clocks.items()}}
    (manifest.parent / "calibration_edges.yaml").write_text(yaml.safe_dump(calib))
    man = dict(rec["manifest"], calibration="calibration_edges.yaml")
    man["alignment"] = dict(man["alignment"], policies=policies)
    out = manifest.parent / "manifest_edges.yaml"
    out.write_text(yaml.safe_dump(man, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def expected(rec):
    return build_expected(rec)


def build_expected(rec) -> dict[str, list]:
    """Column name -> expected values, one per cam0 frame (tick), in tick order."""
    pos0, ticks = anchor_frames(rec)
    exp = {"tick_ns": ticks.tolist(), "tick_pos": pos0.tolist(),
           # a bucket owns the ticks in [b*B, (b+1)*B) (policies.py "Bucketing")
           "bucket": (ticks // ms_ns(rec["manifest"]["alignment"]["bucket_s"] * 1000)).tolist(),
           "session_id": [rec["manifest"]["session"]] * len(ticks)}
    for sid, s in streams(rec).items():
        pol = policy(rec, sid)
        p = pol["policy"]
        if p == "nearest" and s["modality"] == "video":
            if sid == rec["manifest"]["alignment"]["ticks"]["anchor"]:
                pos, t, files = pos0, ticks, [MISSING] * len(ticks)   # a container: no __file
            else:
                pos, t, files = image_sequence(rec, sid)
            exp.update(expect_nearest(ticks, t, pos, files, ms_ns(pol["tolerance_ms"]), sid))
        elif p == "interpolate":
            pos, t, v, ch = sensor_rows(rec, sid)
            exp.update(expect_interpolate(ticks, t, pos, v, ch, ms_ns(pol["max_gap_ms"]), sid))
        elif p == "audio_window":
            ext = Path(s["files"][0]).suffix.lower()
            blocks = wav_blocks(rec, sid) if ext == ".wav" else track_blocks(rec, sid)
            exp.update(expect_audio(ticks, *blocks[:4], ms_ns(pol["window_ms"]), blocks[4],
                                    sid))
        elif p == "text_overlap":
            pos, start, end, text = srt_cues(rec, sid)
            exp.update(expect_text(ticks, start, end, pos, text, sid))
        else:
            raise AssertionError(f"{sid}: policy {p} is not covered by this test")
    return exp


# -- comparison --------------------------------------------------------------------------

def _norm(x):
    if isinstance(x, float) and math.isnan(x):
        return MISSING
    if isinstance(x, np.generic):
        return x.item()
    return x


def _same(e, g, rel: float | None) -> bool:
    e, g = _norm(e), _norm(g)
    if e is None or g is None:
        return e is None and g is None
    if rel is not None:
        return math.isclose(e, g, rel_tol=rel, abs_tol=0.0) or e == g
    return e == g and type(e) is type(g)


def compare(rec, expected, columns: dict[str, float | None], got=None):
    """Assert every column equals its expectation row for row; ``columns``: name -> relative
    tolerance (None: exact). On failure, the first mismatching rows with their tick."""
    got = got if got is not None else rec["got"]
    assert rec["n_rows"] == len(expected["tick_ns"]), \
        f"{rec['n_rows']} aligned rows, expected {len(expected['tick_ns'])} (cam0's frames)"
    bad_rows = []
    for col, rel in columns.items():
        assert col in got, f"column {col} missing from the output"
        for i, (e, g) in enumerate(zip(expected[col], got[col], strict=True)):
            if not _same(e, g, rel):
                bad_rows.append((i, col, e, g))
    if bad_rows:
        lines = [f"  row {i} (tick_ns={expected['tick_ns'][i]}) {col}: expected {e!r}, "
                 f"got {g!r}" for i, col, e, g in bad_rows[:SHOW]]
        pytest.fail(f"{len(bad_rows)} mismatching values in {sorted({b[1] for b in bad_rows})}"
                    f"; first {min(SHOW, len(bad_rows))}:\n" + "\n".join(lines))


# -- the tests ---------------------------------------------------------------------------

def test_dead_letters_are_exactly_the_planted_bad_records(rec):
    got = sorted((d["stage"], d["reason"], d["stream_id"], d["position"]) for d in rec["dead"])
    want = sorted((b["stage"], b["reason"], b["stream"], b["position"])
                  for b in rec["gt"]["bad_records"])
    assert got == want
    assert {(d["session_id"], d["run_id"]) for d in rec["dead"]} == \
        {(rec["manifest"]["session"], "expected")}


def test_ticks_are_the_anchor_frames(rec, expected):
    compare(rec, expected, {"tick_ns": None, "tick_pos": None, "bucket": None,
                            "session_id": None})
    assert len(set(expected["bucket"])) >= 2         # really bucketed


NEAREST_COLS = ("status", "dt_ns", "t_ns", "pos", "file")


@pytest.mark.parametrize("sid", ["cam0", "cam1"])
def test_nearest_stream(rec, expected, sid):
    compare(rec, expected, {f"{sid}__{c}": None for c in NEAREST_COLS})


def test_interpolated_stream(rec, expected):
    sid = "imu"
    cols = {f"{sid}__{c}": None for c in ("status", "pos", "pos_right")}
    cols.update({f"{sid}__{c}": 1e-9 for c in streams(rec)[sid]["options"]["channels"]})
    compare(rec, expected, cols)
    # |dt| = the distance to the nearer bracketing sample; its sign: the test below
    exp, got = (dict(x) for x in (expected, rec["got"]))
    for d in (exp, got):
        d["imu__abs_dt_ns"] = [None if x is None else abs(x) for x in d["imu__dt_ns"]]
    compare(rec, exp, {"imu__abs_dt_ns": None}, got)


def test_interpolate_dt_is_signed(rec, expected):
    compare(rec, expected, {"imu__dt_ns": None})


@pytest.mark.parametrize("sid", ["mic", "cam0_audio"])
def test_audio_window_stream(rec, expected, sid):
    cols = {f"{sid}__{c}": None for c in ("status", "sample_start", "sample_end",
                                          "sample_rate")}
    cols[f"{sid}__coverage"] = 1e-12
    compare(rec, expected, cols)


def test_text_stream(rec, expected):
    compare(rec, expected, {f"transcript__{c}": None for c in ("status", "text", "cues")})


def test_edge_variant_reaches_the_edge_rules(rec, expected):
    """The edges run really decides rows by the rules it was built for (so a change of the
    generator cannot quietly leave them unchecked)."""
    if rec["variant"] != "edges":
        pytest.skip("only the edges variant is built to reach them")
    statuses = {sid: set(expected[f"{sid}__status"]) for sid in ("cam1", "imu", "mic")}
    assert statuses == {"cam1": {"ok", "out_of_range", "no_sample_in_tolerance"},
                        "imu": {"ok", "out_of_range", "gap_too_large"},
                        "mic": {"ok", "partial_window", "out_of_range"}}
    tol = ms_ns(policy(rec, "cam1")["tolerance_ms"])
    assert -tol in expected["cam1__dt_ns"]                       # the tie, at the limit
    assert any(p is not None and p == r for p, r in zip(expected["imu__pos"],
                                                        expected["imu__pos_right"]))
    gap = ms_ns(policy(rec, "imu")["max_gap_ms"])
    _, t, _, _ = sensor_rows(rec, "imu")
    widths = {int(t[r] - t[r - 1]) for r in np.searchsorted(t, expected["tick_ns"])
              if 0 < r < len(t)}
    assert gap in widths                                         # a bracket exactly max_gap
    _, _, end, _ = srt_cues(rec, "transcript")
    assert set(end) & set(expected["tick_ns"])                   # a cue ends on a tick
