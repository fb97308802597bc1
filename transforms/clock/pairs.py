"""Which features of two streams are compared, and how (per pair of modalities).

A ``Pair`` names a feature of the stream (``dev``) and one of the reference (``ref``) from
their ``signals`` sets (transforms/clock/features.py), a weight in the coarse search, and what
the fine stage makes of it (``use``):

- ``windows``: continuous signals, cross-correlated window by window along the coarse line
  (each window one landmark pair, timed to a fraction of a grid step);
- ``events``: impulse features, their peaks paired (as the ``events`` family always did);
- ``marks``: known marks of the stream (subtitle cue starts, ends and boundaries) against the
  edges of the reference's voice activity, the boundary of touching cues placed inside the
  pause it falls in (its position there fitted with the clock: ``fine.marks_pairs``);
- ``coarse``: the coarse search only.

``view`` says how a feature becomes the signal that is correlated: ``raw`` (standardised),
``deriv`` (its time derivative), ``envelope`` (a 1 s moving average), ``starts`` / ``onsets``
(an impulse train at its marks: starts and boundaries / rises only).

Audio against audio also refines on the waveforms (``WAVE_RATE_HZ``), see ``fine.waveform``.
Modality pairs without an entry use the single-feature families (``events`` / ``activity``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy  # its submodules load on first use: not in a run without DTW-sync

from mmalign.transforms.clock.features import Feature, condition, highpass


@dataclass(frozen=True)
class Pair:
    dev: str
    ref: str
    weight: float = 1.0
    use: str = "windows"            # windows | events | marks | coarse
    dev_view: str = "raw"
    ref_view: str = "raw"

    @property
    def name(self) -> str:
        return f"{self.dev}~{self.ref}"


def _swap(pairs: list[Pair]) -> list[Pair]:
    return [Pair(p.ref, p.dev, p.weight, p.use, p.ref_view, p.dev_view) for p in pairs]


_AUDIO = [Pair("audio_loudness", "audio_loudness"),
          Pair("audio_flux", "audio_flux"),
          Pair("audio_onset", "audio_onset", 0.5, "events")]
_MOTION = [Pair("flow_speed", "sensor_norm"),
           Pair("flow_speed", "sensor_norm", 1.0, "windows", "deriv", "deriv"),
           Pair("frame_diff", "sensor_norm", 0.5, "coarse"),
           Pair("video_motion", "sensor_magnitude", 0.5, "events")]
_TEXT = [Pair("text_activity", "speech_activity", 1.0, "marks", "starts", "onsets"),
         Pair("speech_rate", "audio_flux", 0.5, "coarse", "raw", "envelope"),
         Pair("text_activity", "speech_activity", 0.5, "coarse")]

PAIRS: dict[tuple[str, str], list[Pair]] = {
    ("audio", "audio"): _AUDIO,
    ("video", "audio"): [Pair("video_motion", "audio_onset", 1.0, "events")],
    ("sensor", "audio"): [Pair("sensor_magnitude", "audio_onset", 1.0, "events")],
    ("video", "sensor"): _MOTION,
    ("video", "video"): [Pair("flow_speed", "flow_speed"),
                         Pair("flow_speed", "flow_speed", 1.0, "windows", "deriv", "deriv"),
                         Pair("frame_diff", "frame_diff", 0.5),
                         Pair("video_motion", "video_motion", 0.5, "events")],
    ("sensor", "sensor"): [Pair("sensor_norm", "sensor_norm"),
                           Pair("sensor_norm", "sensor_norm", 1.0, "windows", "deriv", "deriv"),
                           Pair("sensor_magnitude", "sensor_magnitude", 0.5, "events")],
    ("text", "audio"): _TEXT,
}
PAIRS[("audio", "video")] = _swap(PAIRS[("video", "audio")])
PAIRS[("audio", "sensor")] = _swap(PAIRS[("sensor", "audio")])
PAIRS[("sensor", "video")] = _swap(_MOTION)
PAIRS[("audio", "text")] = _swap(_TEXT)

# the per-axis comparison with an unknown rotation between the two devices: these channel
# groups are mapped onto each other by a fitted linear map (fine.axis_map) before windows
AXES = {"video": ("flow_x", "flow_y", "flow_rot"), "sensor": None}   # sensor: its ch:* set


def pairs_for(modality: str, reference_modality: str) -> list[Pair] | None:
    """The pairs of the ``signals`` family for these modalities, None when there is none."""
    return PAIRS.get((modality, reference_modality))


def wants_waveform(modality: str, reference_modality: str) -> bool:
    return modality == "audio" and reference_modality == "audio"


def axis_channels(modality: str, features: dict) -> list[str]:
    """The per-axis channels of a stream's signals (video flow, every sensor channel)."""
    if modality == "video":
        return [n for n in AXES["video"] if n in features]
    if modality == "sensor":
        return sorted(n for n in features if n.startswith("ch:"))
    return []


# ---------------------------------------------------------------- signals to correlate


def view(f: Feature, how: str) -> np.ndarray:
    """The signal of feature ``f`` that is correlated (``Pair.dev_view`` / ``ref_view``), on its
    grid, finite; standardised (zero median, unit robust scale) except impulse trains."""
    rate = f.rate_hz
    if how in ("starts", "onsets"):
        v = np.zeros(len(f.values))
        if f.marks is not None and len(f.marks):
            keep = f.mark_sign >= 0 if how == "starts" else f.mark_sign > 0
            pos = f.marks[keep]
            k = np.floor(pos).astype(np.int64)
            w = pos - k
            ok = (k >= 0) & (k + 1 < len(v))
            np.add.at(v, k[ok], 1 - w[ok])
            np.add.at(v, k[ok] + 1, w[ok])
        return scipy.ndimage.gaussian_filter1d(v, max(1.0, 0.05 * rate), mode="constant")
    if f.kind == "impulse":
        return condition(f)[0]
    x = np.asarray(f.values, np.float64)
    if f.kind == "level":
        x = scipy.ndimage.gaussian_filter1d(x, 1.0, mode="nearest")
    if how == "deriv":
        x = scipy.ndimage.gaussian_filter1d(x, max(1.0, 0.02 * rate), mode="nearest")
        x = np.gradient(x) * rate
    elif how == "envelope":
        x = scipy.ndimage.uniform_filter1d(x, max(1, round(rate)), mode="nearest")
    elif f.kind == "continuous":
        x = highpass(x, rate, 20.0)
    return standardise(x)


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero median, unit robust scale (MAD, else std), clipped at +-6."""
    x = np.asarray(x, np.float64)
    x = x - np.median(x)
    s = 1.4826 * np.median(np.abs(x))
    if not s > 1e-12:
        s = float(np.std(x))
    if not s > 1e-12:
        return np.zeros_like(x)
    return np.clip(x / s, -6.0, 6.0)
