"""The release pipeline: distillation, ONNX export, int8 quantization and the release report.

``build_release(checkpoint=..., out_dir=...)`` turns a global-model checkpoint into a release
directory holding ``model.onnx`` (the int8 student), ``model_fp32.onnx``, ``teacher.onnx``,
``report.json``, ``report.md`` and ``report.png``.
"""

from fedge.compress.distill import (
    Distiller,
    DistillResult,
    DistillSettings,
    SoftLabelDistiller,
    get_distiller,
    list_distillers,
    register_distiller,
)
from fedge.compress.errors import (
    CalibrationError,
    ExportError,
    QuantizationError,
    ReleaseError,
    StudentShapeError,
)
from fedge.compress.pipeline import ARTIFACTS, ReleaseSettings, build_release, default_student
from fedge.compress.report import ModelRow, ReleaseReport
from fedge.compress.transfer import Augmenter, TransferSet, public_transfer_set

__all__ = [
    "ARTIFACTS",
    "Augmenter",
    "CalibrationError",
    "DistillResult",
    "DistillSettings",
    "Distiller",
    "ExportError",
    "ModelRow",
    "QuantizationError",
    "ReleaseError",
    "ReleaseReport",
    "ReleaseSettings",
    "SoftLabelDistiller",
    "StudentShapeError",
    "TransferSet",
    "build_release",
    "default_student",
    "get_distiller",
    "list_distillers",
    "public_transfer_set",
    "register_distiller",
]
