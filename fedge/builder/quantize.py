"""int8 static quantization with ONNX Runtime: QDQ format, per-channel weights.

Calibration runs the fp32 model over the transfer set (MinMax ranges of every activation).
Activations are uint8 and weights int8 (the U8S8 layout ONNX Runtime's x86 and Arm kernels are
fastest at). The ops after the model's last layer with weights stay float (:func:`float_tail`):
they have no weights to shrink, and a head that scores an input (an autoencoder's reconstruction
error against its threshold) quantized to the ranges calibration saw would clip every score
above them. After quantizing, every weight must reach its op through a ``DequantizeLinear``:
a weight still stored as float means ONNX Runtime has no int8 kernel for that op, and the
"int8" model would not be one, so that is a :class:`QuantizationError` naming the op.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from fedge.errors import CalibrationError, QuantizationError, first_line

__all__ = ["TransferCalibrationReader", "float_tail", "quantize_int8", "unquantized_weights"]

#: Where ONNX Runtime's symbolic shape inference writes the graph it could not follow.
_SYMBOLIC_SHAPE_DUMP = "sym_shape_infer_temp.onnx"
#: Float initializers smaller than this are constants (shapes, scalars), not weights.
_MIN_WEIGHT_ELEMENTS = 16


class TransferCalibrationReader(CalibrationDataReader):
    """Feeds the transfer set to ONNX Runtime's calibrator in batches."""

    def __init__(self, x: np.ndarray, *, input_name: str, batch_size: int = 64) -> None:
        self._x = np.ascontiguousarray(x, dtype=np.float32)
        self._input_name = input_name
        self._batch_size = batch_size
        self._iter: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for begin in range(0, len(self._x), self._batch_size):
            yield {self._input_name: self._x[begin : begin + self._batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration batch, or ``None`` when exhausted."""
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iter = self._batches()


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> Path:
    """Quantize ``fp32_path`` to ``int8_path`` calibrated on ``calibration`` samples."""
    model = onnx.load(str(fp32_path))
    _check_calibration(model, calibration)
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="fedge-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Shape inference and graph optimisation (e.g. folding constants) before
            # quantizing, as ONNX Runtime recommends; it lets more ops be quantized.
            _pre_process(fp32_path, prepared)
            quantize_static(
                str(prepared),
                str(int8_path),
                TransferCalibrationReader(calibration, input_name=input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=float_tail(onnx.load(str(prepared))),
            )
        except Exception as err:  # ONNX Runtime raises bare exceptions for unsupported graphs
            int8_path.unlink(missing_ok=True)
            raise QuantizationError(
                f"ONNX Runtime cannot quantize {fp32_path.name}: {first_line(err)}"
            ) from err
    float_ops = unquantized_weights(onnx.load(str(int8_path)))
    if float_ops:
        int8_path.unlink()  # not an int8 model: leave nothing that looks like one
        names = ", ".join(f"{op} ({node})" for op, node in float_ops)
        raise QuantizationError(
            f"ONNX Runtime cannot quantize op(s) {names} of {fp32_path.name}: their weights "
            "stayed float32; use a student built from Conv/Gemm/MatMul layers"
        )
    return int8_path


def _pre_process(fp32_path: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing; without its symbolic shape inference when that cannot
    follow the graph (e.g. a 1-D upsampling autoencoder's Resize), since ONNX's own shape
    inference, which it runs too, is enough to quantize Conv and MatMul weights."""
    stray = Path(_SYMBOLIC_SHAPE_DUMP)
    existed = stray.exists()
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
    except Exception as err:  # ONNX Runtime raises bare exceptions from its shape inference
        if "symbolic shape" not in str(err).lower():
            raise
        if not existed:  # its failing shape inference dumps the graph into the working dir
            stray.unlink(missing_ok=True)
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)


def float_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last node that takes a weight (nodes are in topological
    order): the model's head, kept float."""
    weights = _weight_names(model)
    last = max(
        (i for i, node in enumerate(model.graph.node) if any(n in weights for n in node.input)),
        default=len(model.graph.node),
    )
    return [node.name for node in model.graph.node[last + 1 :] if node.name]


def _weight_names(model: onnx.ModelProto) -> set[str]:
    return {
        init.name
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT
        and numpy_helper.to_array(init).size >= _MIN_WEIGHT_ELEMENTS
    }


def unquantized_weights(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """``(op_type, node name)`` of every node that consumes a float weight directly."""
    weights = _weight_names(model)
    found = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            continue
        if any(name in weights for name in node.input):
            found.append((node.op_type, node.name or node.output[0]))
    return found


def _check_calibration(model: onnx.ModelProto, calibration: np.ndarray) -> None:
    if calibration.ndim < 2 or len(calibration) == 0:
        raise CalibrationError(
            f"the calibration set is empty (shape {tuple(calibration.shape)}); "
            "int8 calibration needs at least one sample"
        )
    dims = model.graph.input[0].type.tensor_type.shape.dim
    expected = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])
    got = tuple(int(d) for d in calibration.shape[1:])
    if len(expected) != len(got) or any(
        e not in (-1, g) for e, g in zip(expected, got, strict=True)
    ):
        raise CalibrationError(
            f"the calibration set has samples of shape {got}, the model takes {expected}"
        )
    if not np.isfinite(calibration).all():
        raise CalibrationError("the calibration set holds NaN or Inf values")
