"""RunInference for the encoders: a ModelHandler per modality and ``EncodeModality``, the
composite transform request -> preprocess -> batched RunInference -> Embedding | DeadLetter.

Pipeline contract: ``EncodeModality`` consumes ``EncodeRequest``s (one stream at one tick,
with its data already loaded: a frame, an audio window, the tick's text segments or a sensor
window) or, given ``load``, anything ``load`` turns into one (e.g. an aligned row's
reference + the decoders). A request without data becomes an Embedding with ``vector=None``
and a ``missing_reason``; every failure becomes a DeadLetter of stage "encode".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from mmalign.deadletter.record import DeadLetter
from mmalign.encoders import audio, sensor, video
from mmalign.encoders.device import (
    DeviceSpec,
    configure_cpu_threads,
    inference_context,
    select_device,
    to_device,
)
from mmalign.encoders.registry import (
    EncoderConfig,
    LoadedEncoder,
    build_encoder,
    preprocess_options,
)
from mmalign.encoders.text import as_text_batch, tick_text

log = logging.getLogger(__name__)
DEAD = "dead_letters"
MISSING = "missing"


@dataclass(frozen=True)
class EncodeRequest:
    """One stream at one tick, data loaded. ``data``: video uint8 (H, W, 3) RGB frame; audio
    float32 (n,) window (with ``sample_rate``); text list of segment strings; sensor (w, c)
    window. ``homography`` (3x3, frame -> reference camera) is optional for video."""
    session_id: str
    stream_id: str
    modality: str
    tick_ns: int
    data: Any
    sample_rate: int | None = None
    homography: np.ndarray | None = None
    source_uri: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Embedding:
    """One stream's embedding at one tick; ``vector`` is None when the stream had no data."""
    session_id: str
    stream_id: str
    modality: str
    tick_ns: int
    vector: np.ndarray | None       # float32 (dim,)
    model_id: str | None
    dim: int
    missing_reason: str | None = None


@dataclass(frozen=True)
class _Key:
    session_id: str
    stream_id: str
    modality: str
    tick_ns: int
    source_uri: str | None
    position: str | None


class EncodeFailure:
    """Marks one example whose inference failed (kept in the batch's PredictionResults)."""

    def __init__(self, exc: BaseException, reason: str):
        self.error_class, self.message, self.reason = type(exc).__name__, str(exc), reason


def preprocess_video(frame: np.ndarray, homography: np.ndarray | None,
                     opts: dict[str, Any]) -> np.ndarray:
    """A video frame's per-example input: the uint8 (S, S, 3) crop, warped with
    ``homography`` first when given. Raises on a bad frame or homography."""
    return video.crop_frame(frame, opts["size"], homography, opts["ref_size"])


def preprocess_request(req: EncodeRequest, opts: dict[str, Any]) -> np.ndarray | str | None:
    """The request's per-example input to ``EncoderRunner.encode`` (None when it carries no
    data): video the uint8 (S, S, 3) crop (normalised per batch on the device by ``encode``),
    audio the log-mel, text the tick's text, sensor the normalised window. Raises on bad data."""
    if req.data is None:
        return None
    m = req.modality
    if m == "video":
        return preprocess_video(req.data, req.homography, opts)
    if m == "audio":
        if req.sample_rate is None:
            raise ValueError("audio request has no sample_rate")
        return audio.log_mel(req.data, int(req.sample_rate), opts["window_s"], opts["n_mels"])
    if m == "text":
        return tick_text(req.data)
    if m == "sensor":
        if len(req.data) == 0:
            return None
        mean = None if opts["mean"] is None else np.asarray(opts["mean"], np.float64)
        std = None if opts["std"] is None else np.asarray(opts["std"], np.float64)
        return sensor.normalise_window(req.data, opts["length"], mean, std, opts["channels"])
    raise ValueError(f"unknown modality {m!r}")


@dataclass
class EncoderRunner:
    """A loaded encoder on its device; ``encode`` maps a batch of ``preprocess_request``
    outputs to float32 (N, D). Video crops cross to the device as uint8 (a quarter of the
    float bytes) and are normalised there, once per batch."""
    encoder: LoadedEncoder
    spec: DeviceSpec

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    def encode(self, batch: Sequence[np.ndarray | str]) -> np.ndarray:
        m = self.encoder.modality
        if m == "text":
            x: Any = as_text_batch(list(batch))
        elif m == "video":
            x = to_device(np.stack(batch), self.spec)
        else:
            x = to_device(np.stack(batch).astype(np.float32, copy=False), self.spec)
        with inference_context(self.spec):
            if m == "video":
                x = video.normalise_batch(x)
            out = self.encoder.model(x)
        return out.float().cpu().numpy()


def load_runner(cfg: EncoderConfig) -> EncoderRunner:
    """Build the configured encoder on its device; on CPU, torch's intra-op threads are set
    from ``cfg.cpu_threads`` (see ``configure_cpu_threads``)."""
    spec = select_device(cfg.device, cfg.precision)
    if not spec.is_cuda:
        threads = configure_cpu_threads(cfg.cpu_threads)
        log.info("%s encoder on CPU with %d torch threads", cfg.modality, threads)
    enc = build_encoder(cfg)
    enc.model.to(spec.device)
    return EncoderRunner(enc, spec)


def run_batch(runner: EncoderRunner, batch: Sequence[Any]) -> list[np.ndarray | EncodeFailure]:
    """Encode a batch; when the batch fails, retry one by one so only bad examples fail."""
    try:
        out = runner.encode(batch)
        if out.shape[0] != len(batch):
            raise ValueError(f"encoder returned {out.shape[0]} rows for {len(batch)} inputs")
        rows: list = list(out)
    except Exception as batch_exc:  # noqa: BLE001 - isolate the bad example(s) below
        log.warning("batch of %d failed (%s); retrying one by one", len(batch), batch_exc)
        rows = []
        for ex in batch:
            try:
                rows.append(runner.encode([ex])[0])
            except Exception as exc:  # noqa: BLE001
                rows.append(EncodeFailure(exc, "inference_failed"))
    return [r if isinstance(r, EncodeFailure) or np.isfinite(r).all()
            else EncodeFailure(ValueError("encoder output has NaN or infinite values"),
                               "nonfinite_embedding") for r in rows]


class EncoderModelHandler(ModelHandler[Any, PredictionResult, EncoderRunner]):
    """Loads the configured encoder once per worker process (shared across its threads, or
    across processes with ``share_across_processes``) and runs batches on CUDA when present."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(min_batch_size=cfg.min_batch_size, max_batch_size=cfg.max_batch_size,
                         max_batch_duration_secs=cfg.max_batch_duration_secs,
                         large_model=cfg.share_across_processes, model_copies=cfg.model_copies)
        self.cfg = cfg

    def load_model(self) -> EncoderRunner:
        return load_runner(self.cfg)

    def run_inference(self, batch: Sequence[Any], model: EncoderRunner,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        for ex, row in zip(batch, run_batch(model, batch)):
            yield PredictionResult(example=ex, inference=row, model_id=model.model_id)

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(len(x.encode()) if isinstance(x, str) else x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return f"mmalign_encode_{self.cfg.modality}"


def _dead(key: _Key, error_class: str, reason: str, message: str, run_id: str) -> DeadLetter:
    return DeadLetter(stage="encode", error_class=error_class, reason=reason, message=message,
                      run_id=run_id, session_id=key.session_id, stream_id=key.stream_id,
                      modality=key.modality, source_uri=key.source_uri, position=key.position,
                      event_time_ns=key.tick_ns)


def _key(req: EncodeRequest) -> _Key:
    return _Key(req.session_id, req.stream_id, req.modality, int(req.tick_ns), req.source_uri,
                req.position)


class _Load(beam.DoFn):
    def __init__(self, load: Callable[[Any], EncodeRequest], modality: str, run_id: str):
        self.load, self.modality, self.run_id = load, modality, run_id

    def process(self, element):
        try:
            yield self.load(element)
        except Exception as e:  # noqa: BLE001 - a bad element is a dead letter, not a crash
            yield beam.pvalue.TaggedOutput(DEAD, DeadLetter.from_exception(
                "encode", e, "load_failed", run_id=self.run_id, modality=self.modality,
                session_id=getattr(element, "session_id", None)))


class _Preprocess(beam.DoFn):
    def __init__(self, cfg: EncoderConfig, run_id: str):
        self.cfg, self.run_id = cfg, run_id
        self.opts = preprocess_options(cfg)

    def process(self, req: EncodeRequest):
        key = _key(req)
        if req.modality != self.cfg.modality:
            yield beam.pvalue.TaggedOutput(DEAD, _dead(
                key, "WrongModality", "wrong_modality",
                f"{req.modality} request sent to the {self.cfg.modality} encoder", self.run_id))
            return
        try:
            x = preprocess_request(req, self.opts)
        except Exception as e:  # noqa: BLE001
            yield beam.pvalue.TaggedOutput(DEAD, _dead(key, type(e).__name__,
                                                       "preprocess_failed", str(e), self.run_id))
            return
        if x is None:
            yield beam.pvalue.TaggedOutput(MISSING, Embedding(
                key.session_id, key.stream_id, key.modality, key.tick_ns, None, None, 0,
                f"no_{req.modality}_data"))
        else:
            yield key, x


class _Postprocess(beam.DoFn):
    def __init__(self, run_id: str):
        self.run_id = run_id

    def process(self, keyed):
        key, result = keyed
        inf = result.inference
        if isinstance(inf, EncodeFailure):
            yield beam.pvalue.TaggedOutput(DEAD, _dead(key, inf.error_class, inf.reason,
                                                       inf.message, self.run_id))
            return
        vec = np.asarray(inf, dtype=np.float32)
        yield Embedding(key.session_id, key.stream_id, key.modality, key.tick_ns, vec,
                        result.model_id, int(vec.shape[0]))


def _failed_batch_letters(element, run_id: str) -> list[DeadLetter]:
    """RunInference's own failures: (batch of (key, example), exception info)."""
    batch, info = element
    if isinstance(info, BaseException):
        cls, msg = type(info).__name__, str(info)
    else:
        cls = getattr(info[0], "__name__", str(info[0]))
        msg = str(info[1])
    return [_dead(k, cls, "inference_failed", msg, run_id) for k, _ in batch]


class EncodeModality(beam.PTransform):
    """EncodeRequest (or ``load``-able element) -> {"embeddings": Embedding,
    "dead_letters": DeadLetter}. One encoder config = one modality."""

    def __init__(self, cfg: EncoderConfig, run_id: str = "",
                 load: Callable[[Any], EncodeRequest] | None = None):
        super().__init__()
        self.cfg, self.run_id, self.load = cfg, run_id, load

    def expand(self, pcoll):
        dead = []
        if self.load is not None:
            loaded = pcoll | "Load" >> beam.ParDo(
                _Load(self.load, self.cfg.modality, self.run_id)).with_outputs(DEAD, main="req")
            pcoll = loaded.req
            dead.append(loaded[DEAD])
        pre = pcoll | "Preprocess" >> beam.ParDo(
            _Preprocess(self.cfg, self.run_id)).with_outputs(DEAD, MISSING, main="ok")
        handler = KeyedModelHandler(EncoderModelHandler(self.cfg))
        results, dlq = pre.ok | "RunInference" >> RunInference(
            handler).with_exception_handling()
        post = results | "Postprocess" >> beam.ParDo(
            _Postprocess(self.run_id)).with_outputs(DEAD, main="emb")
        run_id = self.run_id
        failed = dlq.failed_inferences | "FailedBatches" >> beam.FlatMap(
            _failed_batch_letters, run_id)
        dead += [pre[DEAD], post[DEAD], failed]
        return {
            "embeddings": (post.emb, pre[MISSING]) | "Embeddings" >> beam.Flatten(),
            "dead_letters": tuple(dead) | "DeadLetters" >> beam.Flatten(),
        }


def encode_requests(cfg: EncoderConfig, requests: Sequence[EncodeRequest],
                    runner: EncoderRunner | None = None) -> tuple[list[Embedding],
                                                                  list[DeadLetter]]:
    """Same as EncodeModality without Beam (one batch): for tests, tools and benchmarks."""
    runner = runner or load_runner(cfg)
    opts, embs, dead, ok = preprocess_options(cfg), [], [], []
    for req in requests:
        try:
            x = preprocess_request(req, opts)
        except Exception as e:  # noqa: BLE001
            dead.append(_dead(_key(req), type(e).__name__, "preprocess_failed", str(e), ""))
            continue
        if x is None:
            embs.append(Embedding(req.session_id, req.stream_id, req.modality, req.tick_ns,
                                  None, None, 0, f"no_{req.modality}_data"))
        else:
            ok.append((req, x))
    rows = run_batch(runner, [x for _, x in ok]) if ok else []
    for (req, _), row in zip(ok, rows):
        if isinstance(row, EncodeFailure):
            dead.append(_dead(_key(req), row.error_class, row.reason, row.message, ""))
        else:
            embs.append(Embedding(req.session_id, req.stream_id, req.modality, req.tick_ns,
                                  row.astype(np.float32), runner.model_id, int(row.shape[0])))
    return embs, dead


__all__ = [
    "Embedding",
    "EncodeFailure",
    "EncodeModality",
    "EncodeRequest",
    "EncoderModelHandler",
    "EncoderRunner",
    "encode_requests",
    "load_runner",
    "preprocess_request",
    "preprocess_video",
    "run_batch",
]
