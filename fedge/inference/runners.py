"""Run a release artifact: one :class:`Runner` per engine, the same on the build machine and on
a device.

``load_runner("litert", path, threads=1)`` loads an artifact built by
:mod:`fedge.builder.targets` and returns a runner whose ``run`` maps a float32 batch (at most
``batch_size`` rows) to float32 logits; :func:`predict` batches a whole array. The release
build measures every artifact through these runners, so a device that runs its model through
them runs exactly what was measured.

- ``onnxruntime`` (``.onnx``): a CPU session with ``threads`` intra- and inter-op threads,
  sequential execution.
- ``openvino`` (``.openvino.zip``): the IR's ``model.xml`` and ``model.bin`` read from the zip
  into memory (``Core.read_model(xml, weights)``), compiled for the CPU plugin with
  ``INFERENCE_NUM_THREADS`` = ``threads``, one stream, latency hint and f32 inference precision
  (on CPUs with bf16 units OpenVINO would otherwise run fp32 layers in bf16).
- ``litert`` (``.tflite``): the LiteRT interpreter (``ai_edge_litert``, XNNPACK) with
  ``num_threads`` = ``threads``; batch 1. Integer input and output tensors (int8 artifacts) are
  quantized and dequantized with the tensors' own scale and zero point.

This module is a leaf: numpy and the standard library at import, each engine imported when an
artifact of it is loaded; never torch.

Importing it switches off Intel's usage telemetry: ``import openvino`` (and its converter, and
NNCF) would otherwise report to Google Analytics and keep a client id under ``~/intel``, from a
clinic's device or build machine. All three fall back to their own no-op stubs when
``openvino_telemetry`` cannot be imported, which is what a ``None`` in ``sys.modules`` means.
"""

import importlib.util
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENGINE_PACKAGES",
    "IR_MEMBERS",
    "LiteRtRunner",
    "OnnxRuntimeRunner",
    "OpenVinoRunner",
    "Runner",
    "engine_available",
    "list_runners",
    "load_runner",
    "predict",
    "read_ir",
]

if "openvino_telemetry" not in sys.modules:
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]

#: Member names of the OpenVINO IR inside an ``.openvino.zip`` artifact.
IR_MEMBERS = ("model.xml", "model.bin")


class Runner(ABC):
    """A loaded artifact: ``run`` maps a float32 batch (at most ``batch_size`` rows) to logits."""

    #: Largest batch one ``run`` call takes (artifacts with a fixed batch of 1 say 1).
    batch_size: int = 256

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits ``(len(x), num_classes)`` of the float32 batch ``x``."""


def predict(runner: Runner, x: np.ndarray) -> np.ndarray:
    """Logits for every row of ``x``, in batches the runner takes."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    step = max(1, runner.batch_size)
    return np.concatenate([runner.run(x[i : i + step]) for i in range(0, len(x), step)])


class OnnxRuntimeRunner(Runner):
    """An ONNX Runtime CPU session pinned to ``threads`` intra- and inter-op threads."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session: Any = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of the batch ``x``."""
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


def read_ir(path: Path) -> tuple[bytes, bytes]:
    """The IR's XML and weights from an ``.openvino.zip`` artifact."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        xml, weights = (archive.read(name) for name in IR_MEMBERS)
    return xml, weights


class OpenVinoRunner(Runner):
    """An OpenVINO CPU compiled model and one infer request (see the module docstring)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import openvino as ov

        core = ov.Core()
        xml, weights = read_ir(path)
        compiled = core.compile_model(
            core.read_model(xml, weights),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self.request: Any = compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of the batch ``x``."""
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


class LiteRtRunner(Runner):
    """A LiteRT interpreter of one ``.tflite`` file with its tensors allocated."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter: Any = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input: dict[str, Any] = self.interpreter.get_input_details()[0]
        self.output: dict[str, Any] = self.interpreter.get_output_details()[0]
        self.batch_size = int(self.input["shape"][0])

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of the batch ``x`` (at most ``batch_size`` rows)."""
        self.interpreter.set_tensor(self.input["index"], _to_input(x, self.input))
        self.interpreter.invoke()
        return _from_output(self.interpreter.get_tensor(self.output["index"]), self.output)


def _to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return np.array(y, dtype=np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


#: The package each engine needs on the machine that runs its artifacts.
ENGINE_PACKAGES = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
}

_RUNNERS: dict[str, Callable[[Path, int], Runner]] = {
    "onnxruntime": OnnxRuntimeRunner,
    "openvino": OpenVinoRunner,
    "litert": LiteRtRunner,
}


def engine_available(engine: str) -> bool:
    """Whether this machine can run ``engine`` artifacts (its package is installed)."""
    package = ENGINE_PACKAGES.get(engine)
    return package is not None and importlib.util.find_spec(package) is not None


def list_runners() -> list[str]:
    """Engines this module can run artifacts of, sorted."""
    return sorted(_RUNNERS)


def load_runner(engine: str, path: Path | str, *, threads: int = 1) -> Runner:
    """A runner of the ``engine`` artifact at ``path``; ``ValueError`` naming the valid
    engines if unknown (a missing engine package raises its ``ImportError``)."""
    if engine not in _RUNNERS:
        raise ValueError(f"unknown engine {engine!r}; valid choices: {', '.join(list_runners())}")
    return _RUNNERS[engine](Path(path), threads)
