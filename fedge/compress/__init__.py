"""The release pipeline: distillation, pruning, export per target runtime, quantization, reports.

``build_release(checkpoint=..., out_dir=...)`` turns a global-model checkpoint into a release
directory holding ``model.onnx`` (the int8 student), ``model_fp32.onnx``, ``teacher.onnx``,
``report.json``, ``report.md`` and ``report.png``. ``build_profile_release(...)`` builds one
artifact per device profile (see :mod:`fedge.compress.tiers`).

Names are imported on first use: a process that only loads and runs artifacts
(:mod:`fedge.compress.targets`) never imports torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        BudgetError,
        CalibrationError,
        ExportError,
        QuantizationError,
        ReleaseError,
        StudentShapeError,
    )
    from fedge.compress.pipeline import ARTIFACTS, ReleaseSettings, build_release, default_student
    from fedge.compress.prune import (
        PruneResult,
        PruneSettings,
        prune_and_finetune,
        prune_structured,
    )
    from fedge.compress.report import ModelRow, ReleaseReport
    from fedge.compress.tiers import (
        CandidateRow,
        ProfileArtifact,
        ProfileRelease,
        TierSettings,
        build_profile_release,
        read_profile_release,
    )
    from fedge.compress.transfer import Augmenter, TransferSet, public_transfer_set

_EXPORTS = {
    "fedge.compress.distill": (
        "DistillResult",
        "DistillSettings",
        "Distiller",
        "SoftLabelDistiller",
        "get_distiller",
        "list_distillers",
        "register_distiller",
    ),
    "fedge.compress.errors": (
        "BudgetError",
        "CalibrationError",
        "ExportError",
        "QuantizationError",
        "ReleaseError",
        "StudentShapeError",
    ),
    "fedge.compress.pipeline": ("ARTIFACTS", "ReleaseSettings", "build_release", "default_student"),
    "fedge.compress.prune": (
        "PruneResult",
        "PruneSettings",
        "prune_and_finetune",
        "prune_structured",
    ),
    "fedge.compress.report": ("ModelRow", "ReleaseReport"),
    "fedge.compress.tiers": (
        "CandidateRow",
        "ProfileArtifact",
        "ProfileRelease",
        "TierSettings",
        "build_profile_release",
        "read_profile_release",
    ),
    "fedge.compress.transfer": ("Augmenter", "TransferSet", "public_transfer_set"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ARTIFACTS",
    "Augmenter",
    "BudgetError",
    "CalibrationError",
    "CandidateRow",
    "DistillResult",
    "DistillSettings",
    "Distiller",
    "ExportError",
    "ModelRow",
    "ProfileArtifact",
    "ProfileRelease",
    "PruneResult",
    "PruneSettings",
    "QuantizationError",
    "ReleaseError",
    "ReleaseReport",
    "ReleaseSettings",
    "SoftLabelDistiller",
    "StudentShapeError",
    "TierSettings",
    "TransferSet",
    "build_profile_release",
    "build_release",
    "default_student",
    "get_distiller",
    "list_distillers",
    "prune_and_finetune",
    "prune_structured",
    "public_transfer_set",
    "read_profile_release",
    "register_distiller",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fedge.compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
