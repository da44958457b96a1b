"""Health check of a freshly installed model before it is committed.

The model must load in ONNX Runtime, match the input/output signature its manifest promises,
produce finite outputs of the promised shape on seeded canary inputs and, when the device holds
labelled local data, reach the configured accuracy floor on it. The labelled data is an ``.npz``
with ``x`` and ``y`` or a device data directory (``fedge edge start --data DIR``: npz, CSV or
images, see :mod:`fedge.data.device`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fedge.errors import ConfigError, FedgeError
from fedge.protocol.manifest import Manifest

__all__ = ["HealthConfig", "HealthResult", "check_health", "load_labelled", "make_session"]


@dataclass(frozen=True)
class HealthConfig:
    """What a model must pass; ``labelled`` is an ``.npz`` with ``x`` and ``y`` arrays or a
    device data directory; ``accuracy_floor`` (in [0, 1]) applies to it."""

    canaries: int = 4
    accuracy_floor: float | None = None
    labelled: Path | None = None
    seed: int = 0

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
    """Outcome of a health check; ``reason`` says why it failed."""

    ok: bool
    reason: str = ""
    accuracy: float | None = None


def make_session(path: Path, *, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session (small thread pool: devices are small and shared)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_labelled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labelled local data for the accuracy floor: an ``.npz`` or a device data directory."""
    if path.is_dir():
        from fedge.data.device import load_device_data, read_meta

        data = load_device_data(path, dataset=str(read_meta(path).get("dataset", "mnist-5k")))
        return data.x, data.y
    with np.load(path) as arrays:
        return np.asarray(arrays["x"], dtype=np.float32), np.asarray(arrays["y"]).astype(np.int64)


def _signature_problem(session: ort.InferenceSession, manifest: Manifest) -> str:
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    want_in = [s.name for s in manifest.inputs]
    want_out = [s.name for s in manifest.outputs]
    if got_in != want_in or got_out != want_out:
        return f"signature differs from manifest: {got_in}->{got_out} vs {want_in}->{want_out}"
    return ""


def _accuracy(session: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float:
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), 256):
        logits = session.run(None, {name: x[start : start + 256]})[0]
        correct += int((np.argmax(logits, axis=-1) == y[start : start + 256]).sum())
    return correct / max(len(x), 1)


def check_health(path: Path, manifest: Manifest, *, config: HealthConfig) -> HealthResult:
    """Run every check; never raises for a bad model (a bad model is a failed result)."""
    try:
        session = make_session(path)
    except Exception as exc:  # ORT raises its own exception types for any unloadable model
        return HealthResult(False, f"does not load in ONNX Runtime: {exc}")
    problem = _signature_problem(session, manifest)
    if problem:
        return HealthResult(False, problem)
    spec = manifest.inputs[0]
    rng = np.random.default_rng(config.seed)
    shape = tuple(
        config.canaries if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(spec.shape)
    )
    try:
        canary = rng.standard_normal(shape).astype(np.float32)
        outputs = session.run(None, {spec.name: canary})
    except Exception as exc:  # any ORT runtime failure fails the check
        return HealthResult(False, f"fails on canary inputs: {exc}")
    for out, want in zip(outputs, manifest.outputs, strict=True):
        arr = np.asarray(out)
        if not np.all(np.isfinite(arr)):
            return HealthResult(False, f"output {want.name!r} is not finite on canary inputs")
        if len(arr.shape) != len(want.shape) or any(
            d >= 0 and d != g for d, g in zip(want.shape[1:], arr.shape[1:], strict=True)
        ):
            return HealthResult(False, f"output {want.name!r} has shape {arr.shape}")
    if config.labelled is not None and config.accuracy_floor is not None:
        if not config.labelled.exists():
            return HealthResult(True)
        try:
            x, y = load_labelled(config.labelled)
            acc = _accuracy(session, x, y)
        except (FedgeError, OSError, KeyError, ValueError) as exc:
            return HealthResult(False, f"cannot score the labelled local data: {exc}")
        except Exception as exc:  # ORT raises its own types when the data does not fit the model
            return HealthResult(False, f"fails on the labelled local data: {exc}")
        if acc < config.accuracy_floor:
            return HealthResult(
                False, f"accuracy {acc:.3f} below floor {config.accuracy_floor:.3f}", acc
            )
        return HealthResult(True, accuracy=acc)
    return HealthResult(True)
