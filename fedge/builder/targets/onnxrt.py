"""ONNX Runtime target: ``.onnx`` (opset 17, dynamic batch); int8 is ONNX Runtime's static QDQ
quantization (per-channel int8 weights, uint8 activations) calibrated on the transfer set."""

from pathlib import Path
from typing import TYPE_CHECKING

from fedge.builder.targets.base import Target, onnx_fp32, quiet_converter

if TYPE_CHECKING:
    from torch import nn

    from fedge.builder.transfer import TransferSet

__all__ = ["OnnxRuntimeTarget"]


class OnnxRuntimeTarget(Target):
    """Models for ONNX Runtime (fedge's default device engine)."""

    name = "onnxruntime"
    extension = ".onnx"
    export_modules = ("onnx", "onnxscript")
    engine_modules = ("onnxruntime",)

    def convert(
        self, model: "nn.Module", transfer: "TransferSet", path: Path, precision: str
    ) -> None:
        """fp32: the checked ONNX export; int8: that export quantized by ONNX Runtime."""
        from fedge.builder.quantize import quantize_int8

        fp32 = onnx_fp32(model, transfer, path.parent)
        if precision == "fp32":
            path.write_bytes(fp32.read_bytes())
        else:
            with quiet_converter():  # the quantizer logs per-channel notes on the root logger
                quantize_int8(fp32, path, transfer.x)
