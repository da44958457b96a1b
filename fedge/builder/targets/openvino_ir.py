"""OpenVINO target: OpenVINO IR (``model.xml`` + ``model.bin``) in one ``.openvino.zip`` file.

The IR is converted from the checked fp32 ONNX export (``openvino.convert_model``) and saved
with fp32 weights (OpenVINO's default would compress them to fp16). int8 is NNCF's
post-training quantization (``nncf.quantize``, CPU preset) calibrated on the transfer set.
Inner node names are renumbered so that one model always gives the same bytes.
The two IR files travel as one deflated zip so that a release signs a single artifact; a device
reads both members into memory and calls ``Core.read_model(xml_bytes, bin_bytes)`` (see
:class:`fedge.inference.runners.OpenVinoRunner`, which also fixes threads and f32 inference
precision).
"""

import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedge.builder.targets.base import Target, onnx_fp32, quiet_converter, quiet_stdout
from fedge.inference.runners import IR_MEMBERS

if TYPE_CHECKING:
    from torch import nn

    from fedge.builder.transfer import TransferSet

__all__ = ["OpenVinoTarget"]

#: A fixed timestamp for zip members, so that the same IR always gives the same sha256.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class OpenVinoTarget(Target):
    """Models for Intel CPUs (gateways) in OpenVINO."""

    name = "openvino"
    extension = ".openvino.zip"
    export_modules = ("onnx", "onnxscript", "nncf")
    engine_modules = ("openvino",)
    extra = "openvino"

    def convert(
        self, model: "nn.Module", transfer: "TransferSet", path: Path, precision: str
    ) -> None:
        """Convert the fp32 ONNX export to IR; quantize it with NNCF for int8."""
        import openvino as ov

        source = onnx_fp32(model, transfer, path.parent)
        with quiet_converter():
            ir = ov.convert_model(str(source))
            if precision == "int8":
                ir = _quantize(ir, transfer)
        _stable_names(ir)
        xml = path.parent / f"{self.name}-{precision}.xml"
        ov.save_model(ir, str(xml), compress_to_fp16=False)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, source in zip(IR_MEMBERS, (xml, xml.with_suffix(".bin")), strict=True):
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, source.read_bytes())


def _stable_names(ir: Any) -> None:
    """Number the graph's inner nodes in topological order.

    OpenVINO names new nodes from a counter shared by the whole process, so converting the same
    model twice would give different XML and a different sha256; inputs and outputs keep their
    names.
    """
    for index, op in enumerate(ir.get_ordered_ops()):
        if op.get_type_name() not in ("Parameter", "Result"):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


def _quantize(ir: Any, transfer: "TransferSet") -> Any:
    """NNCF post-training int8 quantization calibrated on every transfer sample."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    batches = [transfer.x[i : i + 1] for i in range(len(transfer.x))]
    with quiet_stdout():  # NNCF draws progress bars on stdout
        return nncf.quantize(
            ir,
            nncf.Dataset(batches),
            subset_size=len(batches),
            target_device=nncf.TargetDevice.CPU,
        )
