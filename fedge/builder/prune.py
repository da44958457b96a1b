"""Structured pruning: remove whole channels and neurons, then fine-tune on the transfer set.

Built on Torch-Pruning's ``DependencyGraph`` (Fang et al., CVPR 2023, ``fedge[server]``): it
traces the model once and groups every coupled parameter, so that removing output channel *k*
of a convolution also removes input channel *k* of the next one, and the matching block of
columns of a linear layer behind a ``Flatten``. Layers really shrink (``nn.Conv2d(32, 64)``
becomes ``nn.Conv2d(12, 25)``), so the exported file and its latency shrink with them; masking
weights to zero would shrink neither.

:func:`prune_structured` removes ``ratio`` of the channels/neurons of every prunable layer but
the output layer, ranked by the L2 norm of each group's weights. :func:`prune_and_finetune`
then recovers accuracy by distillation from the unpruned model on the server-held transfer set
(the same :class:`~fedge.builder.distill.SoftLabelDistiller` that trains students), so no
client data is ever used.
"""

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from fedge.builder.distill import DistillResult, DistillSettings, get_distiller
from fedge.builder.transfer import TransferSet
from fedge.errors import MissingExtraError, ReleaseError, first_line
from fedge.log import logger

__all__ = [
    "PruneResult",
    "PruneSettings",
    "parameter_count",
    "prune_and_finetune",
    "prune_structured",
]


@dataclass(frozen=True)
class PruneSettings:
    """Pruning levels and the fine-tuning that follows each.

    ``ratios`` are fractions of the channels/neurons removed from every prunable layer; the
    parameter count falls roughly with ``(1 - ratio) ** 2`` (0.6 keeps about a sixth).
    """

    ratios: tuple[float, ...] = (0.6, 0.9)
    finetune: DistillSettings = field(default_factory=DistillSettings)
    distiller: str = "kd"

    def __post_init__(self) -> None:
        for ratio in self.ratios:
            if not 0.0 < ratio < 1.0:
                raise ValueError(f"pruning ratio {ratio!r} must be in (0, 1)")


@dataclass(frozen=True)
class PruneResult:
    """A pruned, fine-tuned model (eval mode) and what pruning did to it."""

    model: nn.Module
    ratio: float
    parameters_before: int
    parameters_after: int
    finetune: DistillResult
    seconds: float

    @property
    def reduction(self) -> float:
        """How many times fewer parameters the pruned model has."""
        return self.parameters_before / self.parameters_after


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))


def prune_structured(model: nn.Module, *, input_shape: tuple[int, ...], ratio: float) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the channels/neurons of each hidden layer removed.

    The last ``nn.Linear`` (the class logits) keeps its outputs. :class:`ReleaseError` if the
    model has no layer to prune; :class:`MissingExtraError` without ``fedge[server]``.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio {ratio!r} must be in (0, 1)")
    try:
        import torch_pruning as tp
    except ImportError as err:
        raise MissingExtraError("pruning", "server", missing=["torch_pruning"]) from err
    pruned = copy.deepcopy(model).eval()
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    before = parameter_count(pruned)
    try:
        pruner = tp.pruner.BasePruner(
            pruned,
            torch.zeros((1, *input_shape)),
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=linears[-1:],
        )
        pruner.step()
    except Exception as err:  # tracing can fail in many ways; name the model
        raise ReleaseError(f"cannot prune {type(model).__name__}: {first_line(err)}") from err
    if parameter_count(pruned) >= before:
        raise ReleaseError(
            f"cannot prune {type(model).__name__}: no channel or neuron can be removed at "
            f"ratio {ratio}"
        )
    return pruned


def prune_and_finetune(
    model: nn.Module,
    *,
    transfer: TransferSet,
    ratio: float,
    settings: PruneSettings | None = None,
) -> PruneResult:
    """Prune ``model`` (see :func:`prune_structured`) and fine-tune it by distillation from the
    unpruned ``model`` on ``transfer``; ``model`` itself is left unchanged."""
    settings = settings or PruneSettings()
    start = time.perf_counter()
    pruned = prune_structured(model, input_shape=transfer.input_shape, ratio=ratio)
    teacher = copy.deepcopy(model).eval()
    tuned = get_distiller(settings.distiller).distill(
        teacher=teacher, student=pruned, transfer=transfer, settings=settings.finetune
    )
    result = PruneResult(
        model=tuned.student.eval(),
        ratio=ratio,
        parameters_before=parameter_count(model),
        parameters_after=parameter_count(tuned.student),
        finetune=tuned,
        seconds=time.perf_counter() - start,
    )
    logger.info(
        "pruned %s at ratio %.2f: %d -> %d parameters (%.1fx fewer), transfer agreement %.3f",
        type(model).__name__,
        ratio,
        result.parameters_before,
        result.parameters_after,
        result.reduction,
        tuned.teacher_agreement,
    )
    return result
