"""Health check of a freshly installed model before it is committed, measured on this device.

The model must load in its engine (ONNX Runtime, OpenVINO or LiteRT, as its manifest says),
match the input/output signature its manifest promises, produce finite outputs of the promised
shape on seeded canary inputs, and fit the device profile's budget as measured here: batch-1
latency (p50/p99 over ``bench_runs`` runs on one thread) and the peak memory the session adds,
both in a fresh process (:func:`fedge.inference.measure.measure_session`), as the release build
measured them, so that what the agent already holds does not hide a model's memory.
When the device holds labelled local data, the model must also reach the configured accuracy
floor on it. The labelled data is an ``.npz`` with ``x`` and ``y`` or a device data directory
(``fedge edge start --data DIR``: npz, CSV or images, see :mod:`fedge.data.device`). A release
build measured every artifact on the build machine; this is the same measurement on the device
it runs on, where the budget applies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.data.preprocessing import Preprocessing
from fedge.data.targets import regression_metrics
from fedge.errors import ConfigError, FedgeError
from fedge.inference.measure import measure_session
from fedge.inference.profiles import Budget
from fedge.inference.runners import Runner
from fedge.protocol.manifest import Manifest

__all__ = [
    "HealthConfig",
    "HealthResult",
    "check_health",
    "load_labelled",
    "load_model",
    "make_session",
]


@dataclass(frozen=True)
class HealthConfig:
    """What a model must pass; ``labelled`` is an ``.npz`` with ``x`` and ``y`` arrays or a
    device data directory; ``accuracy_floor`` (in [0, 1]) applies to it. ``bench_runs``
    batch-1 runs measure latency."""

    canaries: int = 4
    accuracy_floor: float | None = None
    labelled: Path | None = None
    seed: int = 0
    bench_runs: int = 200

    def __post_init__(self) -> None:
        floor = self.accuracy_floor
        if floor is None:
            return
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1:
            raise ConfigError("--accuracy-floor", floor, "must be a number between 0 and 1")
        if self.labelled is None:
            raise ConfigError(
                "--accuracy-floor", floor, "needs labelled local data (the device's --data DIR)"
            )


@dataclass(frozen=True)
class HealthResult:
    """Outcome of a health check; ``reason`` says why it failed. The figures are what this
    device measured (0 when the check stopped before measuring)."""

    ok: bool
    reason: str = ""
    accuracy: float | None = None
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    peak_memory_mb: float = 0.0


def make_session(path: Path, *, threads: int = 1) -> object:
    """A CPU ONNX Runtime session (small thread pool: devices are small and shared)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_model(path: Path, engine: str, *, threads: int = 1) -> Runner:
    """The artifact at ``path`` loaded in ``engine`` (one of :mod:`fedge.inference.runners`),
    through the slot's personal last layer when it holds one (:mod:`fedge.edge.head`)."""
    from fedge.edge.head import personal_runner

    return personal_runner(path, engine, threads=threads)


def load_labelled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labelled local data for the accuracy floor: an ``.npz`` or a device data directory."""
    if path.is_dir():
        from fedge.data.device import load_device_data, read_meta

        data = load_device_data(path, dataset=str(read_meta(path).get("dataset", "mnist-5k")))
        return data.x, data.y
    with np.load(path) as arrays:
        return np.asarray(arrays["x"], dtype=np.float32), np.asarray(arrays["y"]).astype(np.int64)


def _signature_problem(path: Path, manifest: Manifest) -> str:
    session = make_session(path)
    got_in = [i.name for i in session.get_inputs()]  # type: ignore[attr-defined]
    got_out = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
    want_in = [s.name for s in manifest.inputs]
    want_out = [s.name for s in manifest.outputs]
    if got_in != want_in or got_out != want_out:
        return f"signature differs from manifest: {got_in}->{got_out} vs {want_in}->{want_out}"
    return ""


def _accuracy(runner: Runner, x: np.ndarray, y: np.ndarray, spec: object = None) -> float:
    """Top-1 accuracy; a regression model's R² (targets ``y`` in their units), as its release
    reports it."""
    from fedge.inference.runners import predict

    if not len(x):
        return 0.0
    outputs = np.asarray(predict(runner, x))
    scale = Preprocessing.from_json(spec) if isinstance(spec, dict) else None
    if scale is not None and scale.target_scale is not None:
        return regression_metrics(scale.to_target_units(outputs), y)["r2"]
    return float((np.argmax(outputs, axis=-1) == y).mean())


def _canary_shape(manifest: Manifest, batch: int) -> tuple[int, ...]:
    spec = manifest.inputs[0]
    return tuple(batch if i == 0 else max(d, 1) for i, d in enumerate(spec.shape))


def _standard_normal(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Float32 standard normal draws of ``shape`` from the standard library's generator
    (``numpy.random`` would add 3 MB to a serving device for these few inputs)."""
    rng = random.Random(seed)
    count = int(np.prod(shape))
    return np.fromiter((rng.gauss(0.0, 1.0) for _ in range(count)), np.float32, count).reshape(
        shape
    )


def check_health(
    path: Path, manifest: Manifest, *, config: HealthConfig, budget: Budget | None = None
) -> HealthResult:
    """Run every check; never raises for a bad model (a bad model is a failed result)."""
    try:
        runner = load_model(path, manifest.engine)
    except Exception as exc:  # each engine raises its own types for an unloadable model
        return HealthResult(False, f"does not load in {manifest.engine}: {exc}")
    if manifest.engine == "onnxruntime":
        problem = _signature_problem(path, manifest)
        if problem:
            return HealthResult(False, problem)
    canary = _standard_normal(_canary_shape(manifest, config.canaries), config.seed)
    try:
        from fedge.inference.runners import predict

        output = np.asarray(predict(runner, canary))
    except Exception as exc:  # any engine failure fails the check
        return HealthResult(False, f"fails on canary inputs: {exc}")
    problem = _output_problem(output, manifest)
    if problem:
        return HealthResult(False, problem)
    try:
        figures = measure_session(manifest.engine, path, canary[0], runs=config.bench_runs)
    except FedgeError as exc:
        return HealthResult(False, f"cannot be measured on this device: {exc}")
    p50, p99 = figures.latency_p50_ms, figures.latency_p99_ms
    memory = figures.peak_memory_mb
    accuracy = None
    floor, labelled = config.accuracy_floor, config.labelled
    if labelled is not None and floor is not None and labelled.exists():
        try:
            x, y = load_labelled(labelled)
            accuracy = _accuracy(runner, x, y, manifest.report.get("preprocessing"))
        except (FedgeError, OSError, KeyError, ValueError) as exc:
            return HealthResult(False, f"cannot score the labelled local data: {exc}")
        except Exception as exc:  # an engine's own error when the data does not fit
            return HealthResult(False, f"fails on the labelled local data: {exc}")
        if accuracy < floor:
            reason = f"accuracy {accuracy:.3f} below floor {floor:.3f}"
            return HealthResult(False, reason, accuracy, p50, p99, memory)
    if budget is not None:
        misses = budget.misses(
            size_bytes=manifest.length,
            p99_ms=p99,
            peak_memory_mb=memory,
            accuracy=budget.min_accuracy if accuracy is None else accuracy,
        )
        if misses:
            reason = "breaks its budget on this device: " + "; ".join(map(str, misses))
            return HealthResult(False, reason, accuracy, p50, p99, memory)
    return HealthResult(True, "", accuracy, p50, p99, memory)


def _output_problem(output: np.ndarray, manifest: Manifest) -> str:
    want = manifest.outputs[0]
    if not np.all(np.isfinite(output)):
        return f"output {want.name!r} is not finite on canary inputs"
    if len(output.shape) != len(want.shape) or any(
        d >= 0 and d != g for d, g in zip(want.shape[1:], output.shape[1:], strict=True)
    ):
        return f"output {want.name!r} has shape {output.shape}"
    return ""
