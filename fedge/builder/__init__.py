"""Building a release: distillation, pruning, export per engine, quantization, measurement.

Distributing it (manifests, signing, store, rollout) is :mod:`fedge.release`; running and
measuring an artifact, on the build machine as on a device, is :mod:`fedge.inference`.

``build_release(checkpoint=..., out_dir=...)`` turns a global-model checkpoint into a release
directory holding ``model.onnx`` (the int8 student), ``model_fp32.onnx``, ``teacher.onnx``,
``report.json``, ``report.md`` and ``report.png``. ``build_profile_release(...)`` builds one
artifact per device profile (see :mod:`fedge.builder.tiers`).

Its errors are :mod:`fedge.errors` (:class:`~fedge.errors.ReleaseError` and subclasses).
Names are imported on first use: a process that only loads and runs artifacts
(:mod:`fedge.builder.targets`) never imports torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedge.builder.artifact import ProfileArtifact, read_profile_artifacts
    from fedge.builder.distill import (
        Distiller,
        DistillResult,
        DistillSettings,
        Lesson,
        SoftLabelDistiller,
        TrainedStudent,
        get_distiller,
        list_distillers,
        register_distiller,
    )
    from fedge.builder.pipeline import ARTIFACTS, ReleaseSettings, build_release, default_student
    from fedge.builder.prune import (
        PruneResult,
        PruneSettings,
        prune_and_finetune,
        prune_structured,
    )
    from fedge.builder.report import ModelRow, ReleaseReport
    from fedge.builder.tiers import (
        BuildStep,
        CandidateRow,
        ProfileRelease,
        TierSettings,
        build_profile_release,
    )
    from fedge.builder.transfer import Augmenter, TransferSet, public_transfer_set

_EXPORTS = {
    "fedge.builder.artifact": ("ProfileArtifact", "read_profile_artifacts"),
    "fedge.builder.distill": (
        "DistillResult",
        "DistillSettings",
        "Distiller",
        "Lesson",
        "SoftLabelDistiller",
        "TrainedStudent",
        "get_distiller",
        "list_distillers",
        "register_distiller",
    ),
    "fedge.builder.pipeline": ("ARTIFACTS", "ReleaseSettings", "build_release", "default_student"),
    "fedge.builder.prune": (
        "PruneResult",
        "PruneSettings",
        "prune_and_finetune",
        "prune_structured",
    ),
    "fedge.builder.report": ("ModelRow", "ReleaseReport"),
    "fedge.builder.tiers": (
        "BuildStep",
        "CandidateRow",
        "ProfileRelease",
        "TierSettings",
        "build_profile_release",
    ),
    "fedge.builder.transfer": ("Augmenter", "TransferSet", "public_transfer_set"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ARTIFACTS",
    "Augmenter",
    "BuildStep",
    "CandidateRow",
    "DistillResult",
    "DistillSettings",
    "Distiller",
    "Lesson",
    "ModelRow",
    "ProfileArtifact",
    "ProfileRelease",
    "PruneResult",
    "PruneSettings",
    "ReleaseReport",
    "ReleaseSettings",
    "SoftLabelDistiller",
    "TierSettings",
    "TrainedStudent",
    "TransferSet",
    "build_profile_release",
    "build_release",
    "default_student",
    "get_distiller",
    "list_distillers",
    "prune_and_finetune",
    "prune_structured",
    "public_transfer_set",
    "read_profile_artifacts",
    "register_distiller",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fedge.builder' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
