"""A regression task's test metrics: MAE and RMSE in the target's units, R² as its accuracy.

A regression model predicts the standardised target ``(target - mean) / std`` (the mean and std
of the training targets, carried by the dataset's preprocessing spec). Its loss is the MSE of
that standardised prediction; MAE and RMSE are reported back in the target's own units. A round's
``accuracy`` field holds R² (the share of the test targets' variance the model explains, 1 at
best, 0 for predicting the mean, negative when worse), so every consumer of accuracy (progress
lines, plots, ``run status``, budgets that compare it) sees a number where higher is better.
"""

import numpy as np
import torch
from torch import Tensor, nn

from fedge.app.training import device_of, to_fast_layout
from fedge.data import Dataset
from fedge.data.preprocessing import Preprocessing
from fedge.data.targets import regression_metrics

__all__ = [
    "evaluate_regression",
    "is_regression_dataset",
    "predict_standardised",
    "target_scale",
]


def is_regression_dataset(dataset: Dataset) -> bool:
    """Whether ``dataset`` is a regression task's: float targets, one output."""
    return dataset.num_classes == 1 and np.issubdtype(dataset.y_test.dtype, np.floating)


def target_scale(dataset: Dataset) -> tuple[float, float]:
    """The ``(mean, std)`` a regression dataset's targets were standardised with."""
    scale = (
        Preprocessing.from_json(dataset.preprocessing).target_scale
        if dataset.preprocessing is not None
        else None
    )
    return scale or (0.0, 1.0)


@torch.no_grad()
def predict_standardised(model: nn.Module, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """A regression model's outputs for ``x``, one standardised prediction per sample (on the
    CPU, wherever the model is)."""
    model.eval()
    device = device_of(model)
    outputs = [
        model(to_fast_layout(x[start : start + batch_size].to(device))).float().reshape(-1)
        for start in range(0, len(x), batch_size)
    ]
    return torch.cat(outputs).cpu() if outputs else torch.zeros(0)


def evaluate_regression(
    model: nn.Module, x: np.ndarray, y: np.ndarray, scale: tuple[float, float] = (0.0, 1.0)
) -> dict[str, float]:
    """A regression model on standardised targets ``y``: ``loss`` (MSE of the standardised
    prediction), ``accuracy`` (R²), and MAE, RMSE, R² in the units ``scale`` (mean, std) gives."""
    predicted = predict_standardised(model, torch.from_numpy(np.ascontiguousarray(x))).numpy()
    mean, std = scale
    metrics = regression_metrics(predicted * std + mean, np.asarray(y) * std + mean)
    loss = float(((predicted - np.asarray(y)) ** 2).mean()) if len(y) else 0.0
    return {"loss": loss, "accuracy": metrics["r2"], **metrics}
