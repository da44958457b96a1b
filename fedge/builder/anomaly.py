"""Releases of anomaly tasks: the autoencoder and its threshold, exported as one flagging model.

An anomaly task's model reconstructs its input; a sample is an anomaly when its reconstruction
error passes a threshold. A run's rounds set it on the normal training data (the task's
:class:`~fedge.tasks.ThresholdRule`) and record it; a release carries the threshold its
checkpoint's round recorded, the one that round's flags were measured with, so a device flags
as the run reported. The release pipeline never reads a client's data: a checkpoint with no
recorded threshold (written outside a run) is calibrated by the same rule on the normal samples
of the server-held public split (its report measures the int8 model's flags with the
release's own threshold). :class:`FlaggingAutoencoder`
puts the error and the threshold inside the exported graph and answers two logits,
``(threshold - error, error - threshold) / threshold``: its argmax is the flag (1 = anomaly),
so a device flags anomalies with the same runners, health check and drift counts as any
classifier, with neither torch nor task code. An autoencoder is not distilled: it is small by
design, and a classifier student would learn the few labelled anomalies instead of normality.
"""

import copy
from dataclasses import replace

import torch
from torch import Tensor, nn

from fedge.app.checkpoint import Checkpoint
from fedge.app.config import RunConfig
from fedge.app.metrics import anomaly_threshold
from fedge.builder.distill import Distiller, Lesson, TrainedStudent, register_distiller
from fedge.data import Dataset

__all__ = [
    "FlaggingAutoencoder",
    "anomaly_teacher",
    "is_anomaly_checkpoint",
    "recorded_threshold",
]


class FlaggingAutoencoder(nn.Module):
    """An autoencoder whose output is two logits: normal, anomaly (see the module docstring)."""

    def __init__(self, autoencoder: nn.Module, threshold: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: Tensor) -> Tensor:
        error = ((self.autoencoder(x) - x) ** 2).flatten(1).mean(dim=1)
        score = (error - self.threshold) / self.threshold
        return torch.stack([-score, score], dim=1)


def is_anomaly_checkpoint(ckpt: Checkpoint) -> bool:
    """Whether ``ckpt`` holds an anomaly task's autoencoder."""
    if not (ckpt.config.get("task") or ckpt.config.get("data")):
        return False
    return RunConfig.from_mapping(ckpt.config).task_kind == "anomaly"


def anomaly_teacher(
    ckpt: Checkpoint, teacher: nn.Module, dataset: Dataset
) -> tuple[Checkpoint, FlaggingAutoencoder]:
    """The checkpoint as a two-class model and its autoencoder wrapped with its threshold: the
    one its round recorded, else the task's rule on the public split's normal samples."""
    threshold = recorded_threshold(ckpt)
    if threshold is None:  # the public split: the release pipeline never reads a client's data
        rule = RunConfig.from_mapping(ckpt.config).task_ref.task.threshold_rule
        threshold = anomaly_threshold(
            teacher, dataset.x_public, dataset.y_public, rule, split="public"
        )
    flagging = FlaggingAutoencoder(teacher, threshold)
    return replace(ckpt, num_classes=2), flagging.eval()


def recorded_threshold(ckpt: Checkpoint) -> float | None:
    """The threshold the run set for this checkpoint's model (its round's record), if any."""
    for record in reversed(ckpt.rounds):
        if record.get("round") == ckpt.server_round:
            threshold = (record.get("extra") or {}).get("threshold")
            if isinstance(threshold, int | float) and threshold > 0:
                return float(threshold)
            return None
    return None


class CopyDistiller(Distiller):
    """No distillation: the student is the teacher (a copy), for models that are not distilled
    (anomaly autoencoders)."""

    name = "copy"

    def train(self, lesson: Lesson) -> TrainedStudent:
        """A copy of the teacher as the student."""
        return TrainedStudent(
            student=copy.deepcopy(lesson.teacher),
            epochs=0,
            samples_seen=0,
            final_loss=0.0,
            teacher_agreement=1.0,
        )


register_distiller("copy", CopyDistiller)
