"""The names :mod:`fedge.builder` exports, each imported on first use (``lazy_loader``)."""

from .artifact import (
    ProfileArtifact as ProfileArtifact,
    read_profile_artifacts as read_profile_artifacts,
)
from .distill import (
    Distiller as Distiller,
    DistillResult as DistillResult,
    DistillSettings as DistillSettings,
    Lesson as Lesson,
    SoftLabelDistiller as SoftLabelDistiller,
    TrainedStudent as TrainedStudent,
    get_distiller as get_distiller,
    list_distillers as list_distillers,
    register_distiller as register_distiller,
)
from .pipeline import (
    ARTIFACTS as ARTIFACTS,
    ReleaseSettings as ReleaseSettings,
    build_release as build_release,
    default_student as default_student,
)
from .prune import (
    PruneResult as PruneResult,
    PruneSettings as PruneSettings,
    prune_and_finetune as prune_and_finetune,
    prune_structured as prune_structured,
)
from .report import (
    ModelRow as ModelRow,
    ReleaseReport as ReleaseReport,
)
from .tiers import (
    BuildStep as BuildStep,
    CandidateRow as CandidateRow,
    ProfileRelease as ProfileRelease,
    TierSettings as TierSettings,
    build_profile_release as build_profile_release,
)
from .transfer import (
    Augmenter as Augmenter,
    TransferSet as TransferSet,
    public_transfer_set as public_transfer_set,
)
