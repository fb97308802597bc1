"""The register stage after alignment: cameras onto a reference camera, sensors into cameras.

Input ``((session_id, bucket), table)`` aligned rows (transforms/align.py); output the same keys
with columns added per registered camera ``<cam>``:

    <cam>__H                list<float64> of 9, row-major: cam pixel -> reference pixel
    <cam>__reg_status       ok | stale_transform | no_good_transform | no_frame | failed:<reason>
    <cam>__reg_tick_ns      tick whose registration produced H
    <cam>__reg_inliers, __reg_inlier_ratio, __reg_rmse_px, __reg_coverage
                            quality of the registration behind the row: this tick's own attempt
                            (tick mode) or the session estimate (session mode)

and per projected sensor ``<s>`` and camera ``<c>``: ``<s>__<c>__u``, ``__v`` (pixels),
``__depth`` (metres), ``__visible``. Frames are loaded by reference (``__src``/``__pos``).

Statuses: ``ok`` a good transform; ``stale_transform`` this tick's registration was below
quality (or had no reference frame) and H is the last good one; ``no_good_transform`` nothing
good yet (H null); ``no_frame`` the camera has no frame at the tick (its ``__status`` says why);
``failed:<reason>`` the frame could not be registered at all: H null and a DeadLetter (stage
"register"). Rows are never removed. Session mode estimates one H per (session, camera) from
the first ``session_ticks`` usable ticks (best inlier count) as a side input, so buckets stay
independent; tick mode runs the last-good tracker over a bucket's ticks, seeded with it.
Counters register.ok / register.flagged / register.dead count ticks per camera.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmalign.deadletter.record import DeadLetter
from mmalign.schemas.aligned import (
    OK,
    POS,
    PROJECTION_FIELDS,
    REG_COVERAGE,
    REG_INLIER_RATIO,
    REG_INLIERS,
    REG_RMSE_PX,
    REG_STATUS,
    REG_TICK_NS,
    REGISTRATION_FIELDS,
    SRC,
    STATUS,
    H,
    column,
)
from mmalign.schemas.camera_calibration import CameraRig, load_camera_calibration
from mmalign.schemas.manifest import Manifest, ManifestError
from mmalign.schemas.metrics import REGISTER
from mmalign.schemas.registration_spec import RegistrationSpec
from mmalign.transforms.decode.sources import SourceRef
from mmalign.transforms.register.projection import project_sensor_points
from mmalign.transforms.register.registration import (
    Registration,
    RegistrationImpossible,
    RegistrationTracker,
    register_pair,
)
from mmalign.transforms.tags import DEAD, MAIN

STAGE = "register"


# ---------------------------------------------------------------- plan (validated up front)

@dataclass(frozen=True)
class ProjectionPlan:
    sensor: str
    channels: tuple[str, str, str]
    cameras: tuple[str, ...]


@dataclass(frozen=True)
class SessionRegistration:
    session_id: str
    spec: RegistrationSpec
    sources: dict[str, SourceRef]       # reference + cameras
    rig: CameraRig | None = None
    projections: tuple[ProjectionPlan, ...] = ()


def session_registration(manifest: Manifest) -> SessionRegistration | None:
    """The validated registration plan of one manifest (None without ``registration:``).

    Loads the calibration's ``cameras:``/``sensors:`` sections whenever the manifest has a
    calibration file, so a broken rig stops the run. Raises ManifestError (one sentence).
    """
    where = f"manifest of session {manifest.session!r} in {manifest.base_dir}"
    rig = None
    if manifest.calibration:
        rig = load_camera_calibration(manifest.resolve(manifest.calibration, "calibration"))
    spec = manifest.registration
    if spec is None:
        return None
    try:
        spec.check_streams({s.id: s.modality for s in manifest.streams})
    except ValueError as e:
        raise ManifestError(f"{where}: {e}") from None
    projections = []
    for i, p in enumerate(spec.project):
        field = f"registration.project[{i}]"
        if rig is None or p.sensor not in rig.sensors:
            raise ManifestError(f"{where}: field '{field}.sensor': sensor {p.sensor!r} is not in "
                                f"the calibration file's sensors section; add its extrinsics "
                                f"there")
        channels = p.channels or rig.sensors[p.sensor].position_channels
        if not channels:
            raise ManifestError(f"{where}: field '{field}.channels': no channels given and the "
                                f"calibration has no position_channels for {p.sensor!r}; give "
                                f"channels: [x, y, z]")
        cameras = p.cameras or sorted(rig.cameras)
        missing = [c for c in cameras if c not in rig.cameras]
        if missing or not cameras:
            raise ManifestError(f"{where}: field '{field}.cameras': cameras {missing or cameras}"
                                f" are not in the calibration file's cameras section "
                                f"{sorted(rig.cameras)}; add their intrinsics there")
        projections.append(ProjectionPlan(p.sensor, tuple(channels), tuple(cameras)))
    sources = {c: SourceRef.of(manifest, c) for c in (spec.reference, *spec.cameras)}
    return SessionRegistration(manifest.session, spec, sources, rig, tuple(projections))


def registration_plans(manifests: list[Manifest]) -> dict[str, SessionRegistration]:
    plans = {m.session: session_registration(m) for m in manifests}
    return {s: p for s, p in plans.items() if p is not None}


# ---------------------------------------------------------------- plain functions

def frames_ok(table: pa.Table, stream_id: str) -> np.ndarray:
    """True where the stream has a frame (or sample) at the tick."""
    name = column(stream_id, STATUS)
    if name not in table.column_names:
        return np.zeros(table.num_rows, bool)
    return pc.fill_null(pc.equal(table.column(name), OK), False).to_numpy(zero_copy_only=False)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 with NaN for nulls (all NaN when absent)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = pc.cast(table.column(name), pa.float64())
    return pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False)


def frame_refs(table: pa.Table, stream_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(src uris, positions as int64 with -1 where missing) of a video stream per row."""
    name = column(stream_id, SRC)
    src = (table.column(name).to_numpy(zero_copy_only=False) if name in table.column_names
           else np.full(table.num_rows, None, object))
    pos = _floats(table, column(stream_id, POS))
    return src, np.where(np.isfinite(pos), pos, -1).astype(np.int64)


def load_rows(source: SourceRef, src: np.ndarray, pos: np.ndarray, rows: list[int]
              ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Frames of ``rows`` (one load per source file) and, per row that cannot be loaded, why."""
    frames: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    by_src: dict[str, list[int]] = {}
    for r in rows:
        by_src.setdefault(str(src[r]), []).append(r)
    for uri, rs in by_src.items():
        try:
            got = source.frames(uri, [int(pos[r]) for r in rs])
            frames.update(zip(rs, got))
        except (ValueError, OSError):
            for r in rs:      # find the frame(s) at fault
                try:
                    frames[r] = source.frames(uri, [int(pos[r])])[0]
                except (ValueError, OSError) as e:
                    errors[r] = str(e)
    return frames, errors


def best_registration(results: list[tuple[int, Registration]]) -> tuple[int, Registration] | None:
    """The good registration with most inliers (then lowest RMSE), or None."""
    good = [(t, r) for t, r in results if r.good]
    return min(good, key=lambda tr: (-tr[1].n_inliers, tr[1].rmse_px, tr[0])) if good else None


def estimate_session(plan: SessionRegistration, camera: str,
                     candidates: list[tuple]) -> dict:
    """One camera's session transform from candidate ticks
    ``(tick_ns, ref_src, ref_pos, cam_src, cam_pos)``: ``{"H": 9 floats | None, "tick_ns",
    "quality", "attempts": {tick_ns: (outcome, reason, message)}}`` with outcome one of
    ok / flagged / failed."""
    cands = sorted(candidates)[:plan.spec.session_ticks]
    cfg = plan.spec.kernel_config()
    n = len(cands)
    ref_src, ref_pos = np.array([c[1] for c in cands], object), np.array([c[2] for c in cands])
    cam_src, cam_pos = np.array([c[3] for c in cands], object), np.array([c[4] for c in cands])
    refs, ref_err = load_rows(plan.sources[plan.spec.reference], ref_src, ref_pos, list(range(n)))
    cams, cam_err = load_rows(plan.sources[camera], cam_src, cam_pos, list(range(n)))
    attempts: dict[int, tuple[str, str, str]] = {}
    results = []
    for i, c in enumerate(cands):
        tick = int(c[0])
        if i in cam_err or i in ref_err:
            attempts[tick] = ("failed", "frame_unreadable", cam_err.get(i) or ref_err[i])
            continue
        try:
            reg = register_pair(cams[i], refs[i], cfg)
        except RegistrationImpossible as e:
            attempts[tick] = ("failed", e.reason, str(e))
            continue
        results.append((tick, reg))
        attempts[tick] = ("ok" if reg.good else "flagged", ",".join(reg.flags), "")
    best = best_registration(results)
    return {"H": None if best is None else best[1].H.ravel().tolist(),
            "tick_ns": None if best is None else best[0],
            "quality": {} if best is None else best[1].quality(), "attempts": attempts}


@dataclass
class CameraColumns:
    """Per-row outputs of one camera, filled tick by tick."""
    n: int

    def __post_init__(self):
        self.H: list = [None] * self.n
        self.status: list = [None] * self.n
        self.reg_tick: list = [None] * self.n
        self.inliers: list = [None] * self.n
        self.ratio: list = [None] * self.n
        self.rmse: list = [None] * self.n
        self.coverage: list = [None] * self.n

    def set(self, i: int, status: str, H=None, reg_tick=None, quality: dict | None = None):
        self.status[i] = status
        self.H[i] = None if H is None else [float(x) for x in np.ravel(H)]
        self.reg_tick[i] = None if reg_tick is None else int(reg_tick)
        q = quality or {}
        self.inliers[i] = q.get("n_inliers")
        self.ratio[i] = q.get("inlier_ratio")
        self.rmse[i] = q.get("rmse_px")
        self.coverage[i] = q.get("coverage")

    def arrays(self, cam: str) -> dict[str, pa.Array]:
        values = {H: self.H, REG_STATUS: self.status, REG_TICK_NS: self.reg_tick,
                  REG_INLIERS: self.inliers, REG_INLIER_RATIO: self.ratio,
                  REG_RMSE_PX: self.rmse, REG_COVERAGE: self.coverage}
        return {column(cam, f.name): pa.array(values[f.name], f.type)
                for f in REGISTRATION_FIELDS}


def _dead(plan: SessionRegistration, cam: str, tick_ns: int, src, pos, reason: str,
          message: str, run_id: str, bucket: int, error_class: str = "RegistrationImpossible"
          ) -> DeadLetter:
    return DeadLetter(stage=STAGE, error_class=error_class, reason=reason,
                      message=f"camera {cam!r} onto {plan.spec.reference!r} at tick {tick_ns}: "
                              f"{message}",
                      run_id=run_id, session_id=plan.session_id, stream_id=cam, modality="video",
                      source_uri=None if src is None else str(src),
                      position=None if pos is None or pos < 0 else f"frame={int(pos)}",
                      event_time_ns=int(tick_ns),
                      attrs={"reference": plan.spec.reference, "bucket": str(bucket),
                             "tick_ns": str(int(tick_ns))})


def register_session_mode(plan: SessionRegistration, cam: str, table: pa.Table,
                          estimate: dict | None, run_id: str, bucket: int
                          ) -> tuple[CameraColumns, list[DeadLetter]]:
    """Rows get the session transform; a candidate tick whose frame failed gets failed:<r>."""
    ticks = table.column("tick_ns").to_numpy()
    has = frames_ok(table, cam)
    src, pos = frame_refs(table, cam)
    out, dead = CameraColumns(table.num_rows), []
    est = estimate or {"H": None, "attempts": {}}
    for i, t in enumerate(ticks):
        attempt = est["attempts"].get(int(t))
        if not has[i]:
            out.set(i, "no_frame")
        elif est.get("error"):
            out.set(i, "failed:session_estimate_error")
            dead.append(_dead(plan, cam, int(t), src[i], pos[i], "session_estimate_error",
                              est["error"], run_id, bucket, "SessionEstimateError"))
        elif attempt and attempt[0] == "failed":
            out.set(i, f"failed:{attempt[1]}")
            dead.append(_dead(plan, cam, int(t), src[i], pos[i], attempt[1],
                              f"session estimate: {attempt[2]}", run_id, bucket))
        elif est["H"] is not None:
            out.set(i, "ok", est["H"], est["tick_ns"], est["quality"])
        else:
            out.set(i, "no_good_transform")
    return out, dead


def register_tick_mode(plan: SessionRegistration, cam: str, table: pa.Table,
                       estimate: dict | None, run_id: str, bucket: int
                       ) -> tuple[CameraColumns, list[DeadLetter]]:
    """The last-good tracker over the bucket's ticks in time order, seeded with the session
    transform; ticks with ``tick_pos % every_n_ticks != 0`` reuse the latest transform."""
    spec, ref = plan.spec, plan.spec.reference
    n = table.num_rows
    ticks = table.column("tick_ns").to_numpy()
    tick_pos = _floats(table, "tick_pos")
    has, has_ref = frames_ok(table, cam), frames_ok(table, ref)
    src, pos = frame_refs(table, cam)
    rsrc, rpos = frame_refs(table, ref)
    due = ~np.isfinite(tick_pos) | (np.nan_to_num(tick_pos) % spec.every_n_ticks == 0)
    todo = [i for i in range(n) if has[i] and has_ref[i] and due[i]]
    cams, cam_err = load_rows(plan.sources[cam], src, pos, todo)
    refs, ref_err = load_rows(plan.sources[ref], rsrc, rpos, todo)
    seed = {}
    if estimate and estimate["H"] is not None:
        seed = {cam: (np.reshape(estimate["H"], (3, 3)), int(estimate["tick_ns"]))}
    tracker = RegistrationTracker(spec.kernel_config(), seed)
    out, dead = CameraColumns(n), []
    last_ok = bool(seed)

    def carried(i: int, quality: dict | None = None):
        prev = tracker.last_good.get(cam)
        if prev is None:
            out.set(i, "no_good_transform", quality=quality)
        else:
            out.set(i, "ok" if last_ok else "stale_transform", prev[0], prev[1], quality)

    for i in np.argsort(ticks, kind="stable"):
        t = int(ticks[i])
        if not has[i]:
            out.set(i, "no_frame")
        elif not due[i]:
            carried(i)
        elif not has_ref[i]:
            last_ok = False
            carried(i)
        elif i in cam_err or i in ref_err:
            out.set(i, "failed:frame_unreadable")
            dead.append(_dead(plan, cam, t, src[i], pos[i], "frame_unreadable",
                              cam_err.get(i) or ref_err[i], run_id, bucket, "FrameUnreadable"))
        else:
            try:
                res = tracker.step(cam, t, cams[i], refs[i])
            except RegistrationImpossible as e:
                out.set(i, f"failed:{e.reason}")
                dead.append(_dead(plan, cam, t, src[i], pos[i], e.reason, str(e), run_id,
                                  bucket))
                continue
            last_ok = res.status == "ok"
            if last_ok:
                out.set(i, "ok", res.H, res.transform_tick_ns, res.quality)
            else:
                carried(i, res.quality)
    return out, dead


def projection_columns(table: pa.Table, rig: CameraRig,
                       proj: ProjectionPlan) -> dict[str, pa.Array]:
    """Each row's sensor position (aligned channels) projected into each camera; null where the
    sensor has no sample at the tick or the position is not finite."""
    n = table.num_rows
    names = [column(proj.sensor, c) for c in proj.channels]
    missing = [c for c in names if c not in table.column_names]
    if missing:
        raise KeyError(f"aligned rows lack sensor columns {missing}; the sensor stream "
                       f"{proj.sensor!r} must have channels {list(proj.channels)}")
    xyz = np.stack([pc.cast(table.column(c), pa.float64()).to_numpy(zero_copy_only=False)
                    for c in names], axis=1)
    xyz[~frames_ok(table, proj.sensor)] = np.nan
    cols = {}
    for cam in proj.cameras:
        pr = project_sensor_points(xyz, rig, proj.sensor, cam)
        mask = ~np.isfinite(pr.uv[:, 0])
        values = {"u": pa.array(pr.uv[:, 0], pa.float64(), mask=mask),
                  "v": pa.array(pr.uv[:, 1], pa.float64(), mask=mask),
                  "depth": pa.array(pr.depth, pa.float64(), mask=~np.isfinite(pr.depth)),
                  "visible": pa.array(pr.visible, pa.bool_())}
        cols |= {column(proj.sensor, cam, f.name): values[f.name] for f in PROJECTION_FIELDS}
    assert all(len(a) == n for a in cols.values())
    return cols


def null_projection_columns(n: int, proj: ProjectionPlan) -> dict[str, pa.Array]:
    cols = {}
    for cam in proj.cameras:
        cols |= {column(proj.sensor, cam, f.name): pa.nulls(n, f.type)
                 for f in PROJECTION_FIELDS}
    return cols


# ---------------------------------------------------------------- Beam shells

def session_candidates(element, plans: dict[str, SessionRegistration]):
    """((session, bucket), table) -> ((session, cam), (tick_ns, ref_src, ref_pos, cam_src,
    cam_pos)) for every tick where both the camera and the reference have a frame."""
    (session_id, _), table = element
    plan = plans.get(session_id)
    if plan is None or table.num_rows == 0:
        return
    ref = plan.spec.reference
    ticks = table.column("tick_ns").to_numpy()
    rsrc, rpos = frame_refs(table, ref)
    has_ref = frames_ok(table, ref)
    for cam in plan.spec.cameras:
        csrc, cpos = frame_refs(table, cam)
        for i in np.flatnonzero(has_ref & frames_ok(table, cam)):
            yield (session_id, cam), (int(ticks[i]), str(rsrc[i]), int(rpos[i]),
                                      str(csrc[i]), int(cpos[i]))


class EstimateSessionFn(beam.DoFn):
    def __init__(self, plans: dict[str, SessionRegistration]):
        self.plans = plans

    def process(self, element):
        (session_id, cam), cands = element
        try:
            est = estimate_session(self.plans[session_id], cam, list(cands))
        except Exception as e:  # noqa: BLE001 -- every tick then reports no_good_transform
            REGISTER.count("session_estimate_errors")
            est = {"H": None, "tick_ns": None, "quality": {}, "attempts": {},
                   "error": f"{type(e).__name__}: {e}"}
        REGISTER.count("session_estimates")
        yield (session_id, cam), est


class RegisterTicksFn(beam.DoFn):
    """One bucket's table -> the table with registration (and projection) columns + dead."""

    def __init__(self, plans: dict[str, SessionRegistration], run_id: str):
        self.plans = plans
        self.run_id = run_id

    def process(self, element, estimates):
        (session_id, bucket), table = element
        plan = self.plans.get(session_id)
        if plan is None:
            yield element
            return
        cols: dict[str, pa.Array] = {}
        for cam in plan.spec.cameras:
            fn = register_session_mode if plan.spec.mode == "session" else register_tick_mode
            est = estimates.get((session_id, cam))
            try:
                with REGISTER.timed("video", session=session_id, bucket=bucket, stream=cam):
                    out, dead = fn(plan, cam, table, est, self.run_id, bucket)
            except Exception as e:  # noqa: BLE001 -- a bug must not lose the bucket's rows
                out, dead = self._crashed(plan, cam, table, e, bucket)
            for d in dead:
                yield beam.pvalue.TaggedOutput(DEAD, d)
            for s in out.status:
                key = ("ok" if s == "ok" else "no_frame" if s == "no_frame"
                       else "dead" if s.startswith("failed:") else "flagged")
                REGISTER.count(key)
            cols |= out.arrays(cam)
        for proj in plan.projections:
            try:
                cols |= projection_columns(table, plan.rig, proj)
            except (KeyError, ValueError) as e:
                cols |= null_projection_columns(table.num_rows, proj)
                yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(
                    stage=STAGE, error_class=type(e).__name__, reason="projection_failed",
                    message=f"projecting sensor {proj.sensor!r} in bucket {bucket}: "
                            f"{str(e).strip(chr(39))}; its {table.num_rows} rows have null "
                            f"pixels", run_id=self.run_id, session_id=session_id,
                    stream_id=proj.sensor, modality="sensor", position=f"bucket={bucket}"))
        for name, arr in cols.items():
            table = table.append_column(name, arr)
        yield (session_id, bucket), table

    def _crashed(self, plan, cam, table, exc, bucket):
        out, dead = CameraColumns(table.num_rows), []
        has = frames_ok(table, cam)
        src, pos = frame_refs(table, cam)
        for i, t in enumerate(table.column("tick_ns").to_numpy()):
            if not has[i]:
                out.set(i, "no_frame")
                continue
            out.set(i, "failed:internal_error")
            dead.append(DeadLetter(
                stage=STAGE, error_class=type(exc).__name__, reason="internal_error",
                message=f"registering camera {cam!r} failed: {exc}", run_id=self.run_id,
                session_id=plan.session_id, stream_id=cam, modality="video",
                source_uri=None if src[i] is None else str(src[i]),
                position=f"frame={int(pos[i])}", event_time_ns=int(t),
                attrs={"traceback": traceback.format_exc(limit=5)[-2000:],
                       "bucket": str(bucket)}))
        return out, dead


class RegisterAligned(beam.PTransform):
    """Aligned ``((session, bucket), table)`` -> ``.main`` (tables with registration columns)
    and ``.dead`` (DeadLetters, stage "register"). Sessions without a plan pass through."""

    def __init__(self, plans: dict[str, SessionRegistration], run_id: str = ""):
        super().__init__()
        self.plans = plans
        self.run_id = run_id

    def expand(self, aligned):
        n = max([p.spec.session_ticks for p in self.plans.values()], default=1)
        estimates = (aligned
                     | "Candidates" >> beam.FlatMap(session_candidates, self.plans)
                     # aligned rows are windowed per bucket; the estimate spans the session
                     | "SessionWide" >> beam.WindowInto(beam.window.GlobalWindows())
                     | "FirstTicks" >> beam.combiners.Top.SmallestPerKey(n)
                     | "Estimate" >> beam.ParDo(EstimateSessionFn(self.plans)))
        return aligned | "RegisterTicks" >> beam.ParDo(
            RegisterTicksFn(self.plans, self.run_id),
            beam.pvalue.AsDict(estimates)).with_outputs(DEAD, main=MAIN)


def registration_stages(manifests: list[Manifest], run_id: str
                        ) -> list[tuple[str, beam.PTransform]]:
    """[("Register", RegisterAligned)] when a manifest asks for registration, else []."""
    plans = registration_plans(manifests)
    return [("Register", RegisterAligned(plans, run_id))] if plans else []
