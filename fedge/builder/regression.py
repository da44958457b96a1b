"""Releases of regression tasks: a student distilled by MSE, measured by MAE, RMSE and R².

A regression model has one output, the standardised target; the release keeps it so (the
preprocessing spec in the manifest carries the target's mean and std, and a device turns the
output back into the target's units). :class:`RegressionDistiller` (``"mse"``) trains the
student to match the teacher's output on the transfer set and its augmented copies (noise and
mixup, each labelled by the teacher), so no client data is read. The report's ``accuracy`` of a
model is its R² on the test split (as in a run's rounds), and ``regression`` gives each model's
MAE, RMSE and R² in the target's units.
"""

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from fedge.app.regression import target_scale
from fedge.builder.distill import (
    Distiller,
    DistillSettings,
    Lesson,
    TrainedStudent,
    register_distiller,
    transfer_pool,
)
from fedge.builder.onnx_eval import predict
from fedge.data import Dataset
from fedge.data.targets import regression_metrics
from fedge.inference.profiles import DeviceProfile

__all__ = [
    "RegressionDistiller",
    "onnx_regression_metrics",
    "regression_profiles",
    "regression_report",
    "regression_scores",
]


def onnx_regression_metrics(path: Path, dataset: Dataset) -> dict[str, float]:
    """MAE, RMSE and R² of the ONNX model at ``path`` on the test split, in the target's units."""
    mean, std = target_scale(dataset)
    predicted = predict(path, dataset.x_test).reshape(-1) * std + mean
    return regression_metrics(predicted, dataset.y_test * std + mean)


class RegressionDistiller(Distiller):
    """Train the student on the teacher's outputs (MSE) over the augmented transfer pool."""

    name = "mse"

    def train(self, lesson: Lesson) -> TrainedStudent:
        """Train the student to predict what the teacher predicts; its agreement is the
        student's R² against the teacher on the transfer set."""
        settings = lesson.settings
        x_all = torch.from_numpy(lesson.transfer.x)
        x_pool, _ = transfer_pool(x_all, torch.zeros(len(x_all)), settings, lesson.generator)
        target = _outputs(lesson.teacher, x_pool)
        loss = _fit(lesson.student, x_pool, target, settings, lesson.generator)
        lesson.student.eval()
        teacher_out, student_out = _outputs(lesson.teacher, x_all), _outputs(lesson.student, x_all)
        return TrainedStudent(
            student=lesson.student,
            epochs=settings.epochs,
            samples_seen=settings.epochs * len(x_pool),
            final_loss=loss,
            teacher_agreement=regression_metrics(student_out.numpy(), teacher_out.numpy())["r2"],
        )


def _fit(
    student: nn.Module,
    x: Tensor,
    target: Tensor,
    settings: DistillSettings,
    generator: torch.Generator,
) -> float:
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    student.train()
    loss_value = 0.0
    for _ in range(settings.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for begin in range(0, len(order), settings.batch_size):
            idx = order[begin : begin + settings.batch_size]
            loss = functional.mse_loss(student(x[idx]).reshape(-1), target[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        loss_value = total / len(order)
    return loss_value


@torch.no_grad()
def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([model(x[i : i + 512]).reshape(-1) for i in range(0, len(x), 512)])


def regression_scores(
    outputs: np.ndarray, reference: np.ndarray, dataset: Dataset
) -> tuple[float, float]:
    """A per-profile candidate's accuracy (its R² on the test split) and agreement (its R²
    against the torch model's outputs ``reference``: 1 when int8 changed nothing)."""
    outputs = np.asarray(outputs).reshape(-1)
    accuracy = regression_metrics(outputs, dataset.y_test)["r2"]
    return accuracy, regression_metrics(outputs, np.asarray(reference).reshape(-1))["r2"]


def regression_profiles(profiles: list[DeviceProfile]) -> list[DeviceProfile]:
    """``profiles`` without their min-accuracy: a floor set for classification accuracy means
    nothing for R² (size, latency, memory and agreement with torch still apply)."""
    return [replace(p, budget=replace(p.budget, min_accuracy=0.0)) for p in profiles]


def regression_report(paths: list[Path], roles: list[str], dataset: Dataset) -> dict[str, Any]:
    """Each model's MAE, RMSE and R² by role, for the release report's ``regression``."""
    return {role: onnx_regression_metrics(p, dataset) for role, p in zip(roles, paths, strict=True)}


register_distiller("mse", RegressionDistiller)
