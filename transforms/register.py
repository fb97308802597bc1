"""The register stage: per-tick camera registration (and sensor point projection) as a Beam shell.

Input elements: ``(session_id, tick_ns, {camera_id: frame ndarray})`` and optionally a fourth item
``{sensor_id: (N, 3) points in the sensor frame}``. Output per tick, a dict::

    {"session_id", "tick_ns", "reference_camera",
     "cameras": {camera_id: {"status": "reference" | "ok" | "flagged", "flags": [...],
                             "homography": 9 floats (camera px -> reference px) or None,
                             "transform_tick_ns", "n_matches", "n_inliers", "inlier_ratio",
                             "rmse_px", "ecc_cc", "refined"}},
     "points": {sensor_id: {camera_id: {"u": [...], "v": [...], "depth": [...],
                                         "visible": [...]}}}}      # when a rig is given

Each non-reference camera of a tick is one registration: ok, flagged (kept the last good
transform) or a DeadLetter (stage "register") on the "dead" output; counters register.ok,
register.flagged, register.dead add up to the registrations attempted. The last good transform per
(session, camera) lives in Beam keyed state, so elements are keyed by session.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from deadletter.record import DeadLetter
from schemas.camera_calibration import CameraRig
from transforms.projection import project_sensor_points
from transforms.registration import RegistrationConfig, RegistrationImpossible, RegistrationTracker

DEAD = "dead"


def _dead(reason: str, message: str, session_id: str | None, tick_ns: int | None,
          stream_id: str | None, run_id: str, error_class: str = "RegistrationImpossible",
          **attrs: str) -> DeadLetter:
    return DeadLetter(stage="register", error_class=error_class, reason=reason, message=message,
                      run_id=run_id, session_id=session_id, stream_id=stream_id,
                      modality="video" if stream_id else None,
                      position=None if tick_ns is None else f"tick={tick_ns}",
                      event_time_ns=tick_ns, attrs=attrs)


def _project(points: dict, rig: CameraRig, camera_ids: list[str], session_id: str,
             tick_ns: int, run_id: str) -> tuple[dict, list[DeadLetter]]:
    out, dead = {}, []
    for sensor_id, pts in points.items():
        try:
            arr = np.asarray(pts, dtype=np.float64)
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise ValueError(f"points of sensor {sensor_id!r} have shape {arr.shape}; "
                                 f"expected (N, 3)")
            rig.to_reference(sensor_id)
        except (ValueError, TypeError, KeyError) as e:
            reason = "unknown_sensor" if isinstance(e, KeyError) else "bad_points"
            dead.append(_dead(reason, str(e).strip("'\""), session_id, tick_ns, sensor_id,
                              run_id, error_class=type(e).__name__))
            continue
        per_cam = {}
        for cam in camera_ids:
            pr = project_sensor_points(arr, rig, sensor_id, cam)
            per_cam[cam] = {"u": pr.uv[:, 0].tolist(), "v": pr.uv[:, 1].tolist(),
                            "depth": pr.depth.tolist(), "visible": pr.visible.tolist()}
        out[sensor_id] = per_cam
    return out, dead


def register_tick(tracker: RegistrationTracker, session_id: str, tick_ns: int,
                  frames: dict, reference_camera: str, points: dict | None = None,
                  rig: CameraRig | None = None, run_id: str = ""
                  ) -> tuple[dict | None, list[DeadLetter], dict[str, int]]:
    """Register every camera of one tick onto the reference camera.

    Returns (result dict or None when no camera could be registered, dead letters, counts with
    keys ok / flagged / dead / points_dead).
    """
    counts = {"ok": 0, "flagged": 0, "dead": 0, "points_dead": 0}
    dead: list[DeadLetter] = []
    others = sorted(c for c in frames if c != reference_camera)
    ref = frames.get(reference_camera)
    cameras: dict[str, dict] = {}
    if ref is None:
        for cam in others:
            dead.append(_dead("missing_reference_frame",
                              f"tick has no frame of reference camera {reference_camera!r} "
                              f"(cameras {sorted(frames)}); nothing to register {cam!r} onto",
                              session_id, tick_ns, cam, run_id))
        counts["dead"] = len(others)
        return None, dead, counts
    cameras[reference_camera] = {"status": "reference", "flags": [],
                                 "homography": np.eye(3).ravel().tolist(),
                                 "transform_tick_ns": int(tick_ns)}
    for cam in others:
        try:
            res = tracker.step(cam, tick_ns, frames[cam], ref)
        except RegistrationImpossible as e:
            dead.append(_dead(e.reason, f"camera {cam!r} onto {reference_camera!r}: {e}",
                              session_id, tick_ns, cam, run_id,
                              reference_camera=reference_camera))
            counts["dead"] += 1
            continue
        cameras[cam] = res.as_dict()
        counts[res.status] += 1
    if counts["ok"] + counts["flagged"] == 0 and others:
        return None, dead, counts
    result = {"session_id": session_id, "tick_ns": int(tick_ns),
              "reference_camera": reference_camera, "cameras": cameras}
    if rig is not None and points:
        cams = [c for c in sorted(frames) if c in rig.cameras]
        result["points"], pdead = _project(points, rig, cams, session_id, tick_ns, run_id)
        dead += pdead
        counts["points_dead"] = len(pdead)
    return result, dead, counts


LAST_GOOD = ReadModifyWriteStateSpec("last_good", PickleCoder())   # {camera_id: (H, tick_ns)}
_LAST_GOOD_PARAM = beam.DoFn.StateParam(LAST_GOOD)


class RegisterFn(beam.DoFn):
    """Stateful shell over ``register_tick``; input ``(session_id, (tick_ns, frames, points))``."""

    def __init__(self, reference_camera: str, cfg: RegistrationConfig | None = None,
                 rig: CameraRig | None = None, run_id: str = ""):
        self.reference_camera = reference_camera
        self.cfg = cfg or RegistrationConfig()
        self.rig = rig
        self.run_id = run_id
        self.counters = {k: beam.metrics.Metrics.counter("register", f"register.{k}")
                         for k in ("ok", "flagged", "dead", "points_dead")}

    def process(self, element, last_good=_LAST_GOOD_PARAM):
        session_id, (tick_ns, frames, points) = element
        if frames is None:      # malformed element, reported by _key
            d = points
            self.counters["dead"].inc()
            yield beam.pvalue.TaggedOutput(DEAD, d)
            return
        tracker = RegistrationTracker.from_state(self.cfg, last_good.read())
        result, dead, counts = register_tick(tracker, session_id, tick_ns, frames,
                                             self.reference_camera, points, self.rig,
                                             self.run_id)
        last_good.write(tracker.state())
        for k, n in counts.items():
            if n:
                self.counters[k].inc(n)
        if result is not None:
            yield result
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)


def _key(element, run_id: str):
    """(session_id, tick_ns, frames[, points]) -> (session_id, (tick_ns, frames, points)); a
    malformed element becomes (session_id, (tick_ns, None, DeadLetter))."""
    try:
        if not isinstance(element, (tuple, list)) or len(element) not in (3, 4):
            raise TypeError("element must be (session_id, tick_ns, {camera_id: frame}"
                            "[, {sensor_id: points}])")
        session_id, tick_ns, frames = element[0], int(element[1]), element[2]
        points = element[3] if len(element) == 4 else None
        if not isinstance(frames, dict) or not frames:
            raise TypeError(f"frames must be a non-empty dict camera_id -> ndarray, got "
                            f"{type(frames).__name__}")
        if points is not None and not isinstance(points, dict):
            raise TypeError(f"points must be a dict sensor_id -> (N, 3) array, got "
                            f"{type(points).__name__}")
        return str(session_id), (tick_ns, frames, points)
    except (TypeError, ValueError, IndexError) as e:
        sid = str(element[0]) if isinstance(element, (tuple, list)) and element else None
        return sid or "", (None, None, _dead("bad_element", str(e), sid, None, None, run_id,
                                             error_class=type(e).__name__))


class Register(beam.PTransform):
    """Per-tick registration: ``main`` = result dicts, ``dead`` = DeadLetters."""

    def __init__(self, reference_camera: str, cfg: RegistrationConfig | None = None,
                 rig: CameraRig | None = None, run_id: str = ""):
        super().__init__()
        self.fn = RegisterFn(reference_camera, cfg, rig, run_id)
        self.run_id = run_id

    def expand(self, pcoll):
        return (pcoll
                | "KeyBySession" >> beam.Map(_key, self.run_id)
                | "Register" >> beam.ParDo(self.fn).with_outputs(DEAD, main="main"))
