"""LiteRT (TFLite) target: a ``.tflite`` flatbuffer built from the torch model by litert-torch.

fp32 is ``litert_torch.convert`` of the eval-mode model. int8 is PyTorch 2 export (PT2E) static
quantization with litert-torch's quantizer (symmetric, per-channel int8 weights, int8
activations) calibrated on every transfer sample, then converted: a fully integer model whose
input and output tensors are int8 too. The artifact has a fixed batch of 1, what a small
device runs; :class:`fedge.inference.runners.LiteRtRunner` quantizes float input and dequantizes the
logits with the tensors' own scale and zero point, as a device must.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.builder.targets.base import Target, quiet_converter
from fedge.errors import ExportError, first_line

if TYPE_CHECKING:
    from torch import nn

    from fedge.builder.transfer import TransferSet

__all__ = ["LiteRtTarget"]


class LiteRtTarget(Target):
    """Models for small Arm devices in LiteRT (formerly TensorFlow Lite)."""

    name = "litert"
    extension = ".tflite"
    export_modules = ("litert_torch", "torchao")
    engine_modules = ("ai_edge_litert",)
    extra = "litert"

    def convert(
        self, model: "nn.Module", transfer: "TransferSet", path: Path, precision: str
    ) -> None:
        """Convert with litert-torch (PT2E int8 when ``precision`` is ``int8``)."""
        # Before the import: the converter's progress lines and TensorFlow's C++ INFO logs.
        os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import torch

        model = model.eval()
        sample = (torch.from_numpy(np.ascontiguousarray(transfer.x[:1], dtype=np.float32)),)
        try:
            with quiet_converter():
                import litert_torch

                if precision == "int8":
                    edge = _convert_int8(model, sample, transfer)
                else:
                    edge = litert_torch.convert(model, sample)
                edge.export(str(path))
        except Exception as err:  # the converter raises many error types; say which model failed
            path.unlink(missing_ok=True)
            raise ExportError(
                f"litert-torch cannot convert {type(model).__name__} ({precision}): "
                f"{first_line(err)}"
            ) from err


def _convert_int8(model: "nn.Module", sample: tuple[Any, ...], transfer: "TransferSet") -> Any:
    """PT2E: export, insert observers, calibrate on the transfer set, quantize, convert."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    prepared = prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
    x = torch.from_numpy(np.ascontiguousarray(transfer.x, dtype=np.float32))
    with torch.no_grad():
        for i in range(len(x)):  # the exported graph has the sample's batch of 1
            prepared(x[i : i + 1])
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    # An exported graph refuses .eval(); the ops are in eval form now, so say so to the converter
    # (it warns about modules still flagged as training).
    quantized.training = False
    return litert_torch.convert(
        quantized, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)
    )
