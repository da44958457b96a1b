"""On-device inference served from the committed model slot, with hot swap.

The engine holds one immutable ``_Loaded`` (session + version) behind a plain attribute. A swap
builds the new ONNX Runtime session completely *before* replacing that reference, and a request
reads the reference once, so in-flight requests finish on the model they started with and no
request waits for a swap. Telemetry is counts and latencies only, never inputs.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from fedge.data.preprocessing import Preprocessing
from fedge.edge.health import load_model, make_session
from fedge.edge.raw_inputs import raw_model_input
from fedge.edge.slots import MANIFEST_FILE, Slots
from fedge.errors import FedgeError, PayloadError, VerificationError
from fedge.inference.runners import Runner, predict
from fedge.log import logger
from fedge.protocol.interceptor import FedgeInterceptor
from fedge.protocol.manifest import Manifest
from fedge.protocol.transport import add_service, bind, create_server, parse_address
from fedge.records import copy_fields
from fedge.v1 import inference_pb2

__all__ = [
    "InferenceEngine",
    "InferenceServicer",
    "InferenceStats",
    "NoModelError",
    "SlotWatcher",
    "predict_arrays",
    "serve_inference",
]

LATENCY_WINDOW = 10_000


class NoModelError(FedgeError):
    """The device has no committed model to serve."""

    status = "UNAVAILABLE"


@dataclass(frozen=True)
class _Loaded:
    runner: Runner
    version: int
    path: Path
    rank: int  # the model input's rank, batch dimension included
    manifest: Manifest | None = None


@dataclass(frozen=True)
class InferenceStats:
    """Telemetry snapshot for the coordinator (no inputs, no outputs)."""

    requests: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    active_version: int
    swaps: int


class InferenceEngine:
    """Thread-safe predictions with an atomically swappable model."""

    def __init__(
        self,
        *,
        threads: int = 1,
        observer: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.threads = threads
        # Told of every request (seconds, succeeded): the device's /metrics.
        self.observer = observer
        # Told of every answered request (inputs, outputs, version): the drift window.
        self.on_prediction: Callable[[np.ndarray, np.ndarray, int], None] | None = None
        self._model: _Loaded | None = None
        self._swap_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._requests = 0
        self._errors = 0
        self._swaps = 0

    @property
    def version(self) -> int:
        """Version of the model answering now (0 = none)."""
        model = self._model
        return 0 if model is None else model.version

    def swap(self, path: Path, version: int) -> None:
        """Load the slot model at ``path`` (in the engine its manifest names) and make it the
        serving model; requests never wait for this."""
        manifest = _slot_manifest(Path(path))
        engine = manifest.engine if manifest is not None else "onnxruntime"
        if manifest is not None:
            rank = len(manifest.inputs[0].shape)
        else:  # a bare ONNX file (no slot manifest): the session knows its input's rank
            rank = len(make_session(Path(path)).get_inputs()[0].shape)  # type: ignore[attr-defined]
        with self._swap_lock:  # serialises swaps, not requests
            runner = load_model(Path(path), engine, threads=self.threads)
            self._model = _Loaded(runner, version, Path(path), rank, manifest)  # the atomic swap
            self._swaps += 1
        logger.info("inference now serves release %d (%s)", version, engine)

    @property
    def manifest(self) -> Manifest | None:
        """The manifest of the model answering now (its labels, its raw-input spec)."""
        model = self._model
        return None if model is None else model.manifest

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """``(output, version)`` for a float32 batch."""
        start = time.perf_counter()
        model = self._model  # read the reference once: the request keeps this model
        try:
            if model is None:
                raise NoModelError("no model installed on this device yet")
            out = predict(model.runner, np.asarray(x, dtype=np.float32))
        except Exception:
            with self._stats_lock:
                self._requests += 1
                self._errors += 1
            if self.observer is not None:
                self.observer(time.perf_counter() - start, False)
            raise
        seconds = time.perf_counter() - start
        with self._stats_lock:
            self._requests += 1
            self._latencies.append(seconds * 1000.0)
        if self.observer is not None:
            self.observer(seconds, True)
        result = np.asarray(out)
        if self.on_prediction is not None:
            self.on_prediction(np.asarray(x), result, model.version)
        return result, model.version

    def stats(self) -> InferenceStats:
        """Counts and latency percentiles over the last requests."""
        with self._stats_lock:
            lat = np.asarray(self._latencies, dtype=np.float64)
            requests, errors, swaps = self._requests, self._errors, self._swaps
        p50, p99 = (_percentile(lat, 50), _percentile(lat, 99)) if len(lat) else (0.0, 0.0)
        return InferenceStats(requests, errors, p50, p99, self.version, swaps)


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation), computed here: numpy's first
    percentile call imports ``numpy.ma``, 1.3 MB of a serving device for two figures."""
    ordered = np.sort(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


class SlotWatcher:
    """Hot-swaps the engine whenever the committed slot of ``state_dir`` changes.

    For an inference server in a separate process from the updater; in the same process the
    updater's ``on_installed`` callback can call :meth:`InferenceEngine.swap` directly.
    """

    def __init__(self, engine: InferenceEngine, state_dir: Path, *, interval: float = 0.5):
        self.engine = engine
        self.slots = Slots(state_dir)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slot-watcher", daemon=True)
        self._current: tuple[str | None, int] = (None, 0)

    def poll(self) -> bool:
        """Swap if the committed model changed; return whether it did."""
        slot = self.slots.state().serving
        key = (slot, self.slots.version_of(slot))
        if slot is None or key == self._current:
            return False
        self.engine.swap(self.slots.model_path(slot), key[1])
        self._current = key
        return True

    def start(self) -> SlotWatcher:
        """Load the current model and start polling."""
        self.poll()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # keep serving the old model; try again next tick
                logger.warning("cannot load the new model: %s", exc)


def _to_array(tensor: inference_pb2.Tensor) -> np.ndarray:
    data = np.frombuffer(tensor.data, dtype="<f4")
    shape = tuple(int(d) for d in tensor.shape)
    if int(np.prod(shape)) != data.size:
        raise PayloadError(
            f"tensor of shape {shape} needs {int(np.prod(shape))} floats, got {data.size}"
        )
    return data.reshape(shape)


_RAW_FORMATS = {
    inference_pb2.RAW_FORMAT_CSV: "csv",
    inference_pb2.RAW_FORMAT_IMAGE: "image",
}


class InferenceServicer:
    """gRPC face of an :class:`InferenceEngine` (``fedge.v1.InferenceService``)."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine

    def Predict(  # noqa: N802 (gRPC method name)
        self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictResponse:
        """The model's output for one float32 tensor (a batch), or for raw inputs."""
        manifest = self.engine.manifest
        if request.raw:
            spec = manifest.report.get("preprocessing") if manifest is not None else None
            x = raw_model_input(request.raw, _RAW_FORMATS.get(request.raw_format, ""), spec)
        else:
            x = _to_array(request.input)
        try:
            out, version = self.engine.predict(x)
        except FedgeError:
            raise
        except Exception as exc:  # ORT rejects a bad shape or type with its own errors
            raise PayloadError(f"prediction failed: {exc}") from exc
        out32 = np.ascontiguousarray(out, dtype="<f4")
        labels = np.argmax(out32, axis=-1).reshape(-1).tolist() if out32.ndim else []
        names = manifest.labels if manifest is not None else ()
        spec = manifest.report.get("preprocessing") if manifest is not None else None
        return inference_pb2.PredictResponse(
            output=inference_pb2.Tensor(shape=list(out32.shape), data=out32.tobytes()),
            labels=labels,
            model_version=version,
            label_names=[names[i] if i < len(names) else str(i) for i in labels] if names else [],
            values=_target_values(out32, spec),
        )

    def GetStats(  # noqa: N802 (gRPC method name)
        self, request: inference_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> inference_pb2.GetStatsResponse:
        """Counts and latency percentiles of the requests served so far."""
        return copy_fields(inference_pb2.GetStatsResponse, self.engine.stats())


def _target_values(outputs: np.ndarray, spec: object) -> list[float]:
    """A regression model's outputs in its target's units (none for a classifier)."""
    if not isinstance(spec, dict):
        return []
    preprocessing = Preprocessing.from_json(spec)
    if preprocessing.target_scale is None:
        return []
    return [float(v) for v in preprocessing.to_target_units(outputs)]


def serve_inference(
    engine: InferenceEngine, *, address: str = "127.0.0.1:0", max_workers: int = 8
) -> tuple[grpc.Server, int]:
    """Start the local inference server (plaintext gRPC, loopback by default); ``(server, port)``.

    :class:`~fedge.errors.AddressInUseError` when another process listens on ``address``.
    """
    server = create_server(max_workers=max_workers, interceptors=[FedgeInterceptor()])
    service = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]
    add_service(server, service, InferenceServicer(engine))
    # Plaintext is the design on loopback (the device's own apps); elsewhere, say so.
    loopback = parse_address(address, option="--inference")[0] in ("127.0.0.1", "::1", "localhost")
    port = bind(server, address, None, option="--inference", warn_plaintext=not loopback)
    server.start()
    return server, port


def _slot_manifest(model: Path) -> Manifest | None:
    # The slot's manifest beside the model, read (not verified: the updater verified the slot
    # before it committed it) for the engine and the input's shape.
    try:
        signed = json.loads((model.parent / MANIFEST_FILE).read_bytes())
        return Manifest.from_bytes(base64.b64decode(signed["manifest"]))
    except (OSError, ValueError, KeyError, TypeError, VerificationError):
        return None


def predict_arrays(state_dir: Path, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """One-shot predictions from the committed slot (for ``fedge edge predict``).

    Each array is one input; one missing leading batch dimension is added.
    """
    slots = Slots(state_dir)
    slot = slots.state().serving
    if slot is None:
        raise NoModelError(f"no model installed in {state_dir}")
    engine = InferenceEngine()
    engine.swap(slots.model_path(slot), slots.version_of(slot))
    model = engine._model
    assert model is not None
    rank = model.rank
    outputs = []
    for arr in arrays:
        x = np.asarray(arr, dtype=np.float32)
        outputs.append(engine.predict(x[None, ...] if x.ndim == rank - 1 else x)[0])
    return outputs, engine.version
