"""Read a model's input/output signature from an ONNX file (for the manifest)."""

from __future__ import annotations

from pathlib import Path

import onnx

from fedge.errors import ReleaseError
from fedge.protocol.manifest import TensorSpec

__all__ = ["describe_onnx"]


def _specs(values: list[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        # A symbolic or missing dimension is dynamic (-1).
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=shape))
    return tuple(specs)


def describe_onnx(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """``(inputs, outputs)`` of the graph; initializers are not inputs."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise ReleaseError(f"{path} is not a readable ONNX model: {exc}") from exc
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if not inputs or not model.graph.output:
        raise ReleaseError(f"{path}: the ONNX graph has no inputs or no outputs")
    return _specs(inputs), _specs(list(model.graph.output))
