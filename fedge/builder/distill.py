"""Knowledge distillation: train a small student on a teacher's soft labels.

A :class:`Distiller` turns (teacher, student, transfer set) into a trained student. The one
shipped here, :class:`SoftLabelDistiller` (``"kd"``, Hinton et al. 2015), minimises
``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)`` where the hard
label ``y`` is known, over augmented batches of the transfer set. Other methods, such as
FedDF's ensemble distillation from client models, subclass :class:`Distiller` with their
training step (:meth:`Distiller.train`) and register with :func:`register_distiller`; the
pipeline picks one by name.
"""

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional

from fedge.builder.transfer import NO_LABEL, Augmenter, TransferSet
from fedge.log import logger
from fedge.records import copy_fields

__all__ = [
    "DistillResult",
    "DistillSettings",
    "Distiller",
    "Lesson",
    "SoftLabelDistiller",
    "TrainedStudent",
    "get_distiller",
    "list_distillers",
    "register_distiller",
    "transfer_pool",
]


@dataclass(frozen=True)
class DistillSettings:
    """Hyper-parameters of distillation; the defaults fit the default ``fedge simulate``."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.004
    weight_decay: float = 1e-4
    temperature: float = 4.0
    alpha: float = 0.8
    #: Augmented copies of the transfer set in the training pool (the originals come on top).
    copies: int = 4
    augment: Augmenter | None = field(default_factory=Augmenter)
    seed: int = 0
    #: torch threads while distilling. One by default: on a shared machine, several threads
    #: waiting on each other make the small ops of a small student many times slower.
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.copies < 0:
            raise ValueError("epochs and batch_size must be >= 1 and copies >= 0")
        if not self.temperature > 0 or not self.lr > 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError("temperature and lr must be positive, alpha in [0, 1]")


@dataclass(frozen=True)
class TrainedStudent:
    """What a distiller's training step left: the student and how it learned."""

    student: nn.Module
    epochs: int
    samples_seen: int
    final_loss: float
    teacher_agreement: float


@dataclass(frozen=True)
class DistillResult(TrainedStudent):
    """What distillation did: the student (eval mode) and a few numbers for the report."""

    method: str
    seconds: float


@dataclass(frozen=True)
class Lesson:
    """One call of :meth:`Distiller.distill`: its arguments, and a generator seeded by
    ``settings.seed`` for the shuffles and augmentations of the training step."""

    teacher: nn.Module
    student: nn.Module
    transfer: TransferSet
    settings: DistillSettings
    generator: torch.Generator


class Distiller(ABC):
    """A way of training ``student`` to mimic ``teacher`` on the server-held transfer set.

    :meth:`distill` seeds torch, times the step and names the method; a subclass says only how
    it trains, in :meth:`train`.
    """

    name: str = ""

    def distill(
        self,
        *,
        teacher: nn.Module,
        student: nn.Module,
        transfer: TransferSet,
        settings: DistillSettings,
    ) -> DistillResult:
        """Train ``student`` (in place) to mimic ``teacher``; return it with statistics."""
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(settings.seed)
        torch.manual_seed(settings.seed)
        teacher.eval()
        trained = self.train(Lesson(teacher, student, transfer, settings, generator))
        return copy_fields(
            DistillResult,
            trained,
            student=trained.student.eval(),
            method=self.name,
            seconds=time.perf_counter() - start,
        )

    @abstractmethod
    def train(self, lesson: Lesson) -> TrainedStudent:
        """The training step: ``lesson.teacher`` is in eval mode and torch is seeded."""


class SoftLabelDistiller(Distiller):
    """Hinton-style KD on the teacher's temperature-softened outputs, mixed with hard labels."""

    name = "kd"

    def train(self, lesson: Lesson) -> TrainedStudent:
        """Train the student on augmented transfer batches labelled by the teacher."""
        settings = lesson.settings
        x_all = torch.from_numpy(lesson.transfer.x)
        y_all = torch.from_numpy(lesson.transfer.y)
        with _threads(settings.threads):
            # One pool of augmented samples, labelled by the teacher once: the teacher's
            # forward pass is the expensive part, so it is not repeated every epoch.
            x_pool, y_pool = transfer_pool(x_all, y_all, settings, lesson.generator)
            soft_pool = _logits(lesson.teacher, x_pool)
            loss_value, seen = _fit(
                lesson.student, x_pool, y_pool, soft_pool, settings, lesson.generator
            )
        lesson.student.eval()
        return TrainedStudent(
            student=lesson.student,
            epochs=settings.epochs,
            samples_seen=seen,
            final_loss=loss_value,
            teacher_agreement=_agreement(lesson.teacher, lesson.student, x_all),
        )


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float
) -> Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE`` on labelled rows."""
    t = temperature
    soft = functional.kl_div(
        functional.log_softmax(student_logits / t, dim=1),
        functional.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    labelled = labels != NO_LABEL
    if alpha >= 1.0 or not labelled.any():
        return soft
    hard = functional.cross_entropy(student_logits[labelled], labels[labelled])
    return alpha * soft + (1.0 - alpha) * hard


def _fit(
    student: nn.Module,
    x: Tensor,
    y: Tensor,
    soft: Tensor,
    settings: DistillSettings,
    generator: torch.Generator,
) -> tuple[float, int]:
    """Train ``student`` on the labelled pool; return the last epoch's loss and samples seen."""
    steps = settings.epochs * ((len(x) + settings.batch_size - 1) // settings.batch_size)
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps)
    student.train()
    loss_value, seen = 0.0, 0
    for epoch in range(settings.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for begin in range(0, len(order), settings.batch_size):
            idx = order[begin : begin + settings.batch_size]
            loss = kd_loss(student(x[idx]), soft[idx], y[idx], settings.temperature, settings.alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        loss_value = total / len(order)
        logger.debug("distill epoch %d: loss %.4f", epoch + 1, loss_value)
    return loss_value, seen


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run torch on ``count`` threads inside the block (``None``: leave torch's setting)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def transfer_pool(
    x: Tensor, y: Tensor, settings: DistillSettings, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The transfer set plus ``settings.copies`` augmented copies of it (samples, labels)."""
    xs, ys = [x], [y]
    if settings.augment is not None:
        for _ in range(settings.copies):
            xa, ya = settings.augment(x, y, generator)
            xs.append(xa)
            ys.append(ya)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])


@torch.no_grad()
def _agreement(teacher: nn.Module, student: nn.Module, x: Tensor) -> float:
    """Fraction of transfer samples on which student and teacher pick the same class."""
    same = 0
    for begin in range(0, len(x), 512):
        xb = x[begin : begin + 512]
        same += int((teacher(xb).argmax(1) == student(xb).argmax(1)).sum())
    return same / len(x)


_DISTILLERS: dict[str, Callable[[], Distiller]] = {"kd": SoftLabelDistiller}


def register_distiller(name: str, factory: Callable[[], Distiller]) -> None:
    """Register a distillation method under ``name`` (``ValueError`` if taken)."""
    if name in _DISTILLERS:
        raise ValueError(f"distiller {name!r} is already registered")
    _DISTILLERS[name] = factory


def list_distillers() -> list[str]:
    """Registered distillation methods, sorted."""
    return sorted(_DISTILLERS)


def get_distiller(name: str) -> Distiller:
    """A new distiller ``name``; ``ValueError`` listing the valid names if unknown."""
    if name not in _DISTILLERS:
        raise ValueError(
            f"unknown distiller {name!r}; valid choices: {', '.join(list_distillers())}"
        )
    return _DISTILLERS[name]()
