"""Task metrics beyond accuracy and loss, computed on the server's held-out test split."""

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from fedge.app.regression import evaluate_regression, target_scale
from fedge.app.results import DECLARED_METRICS, RoundRecord
from fedge.app.training import device_of, evaluate, reconstruction_errors
from fedge.data import Dataset
from fedge.errors import CalibrationError, ConfigError
from fedge.tasks import Task, ThresholdRule

__all__ = [
    "anomaly_metrics",
    "anomaly_threshold",
    "auc_of_scores",
    "declared_metrics",
    "evaluate_anomaly",
    "evaluate_global",
    "roc_auc",
    "test_scores",
]


def roc_auc(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500) -> float:
    """ROC-AUC of a binary classifier's class-1 probability (the Mann-Whitney statistic,
    ties counted half); 0.5 when the test split holds one class only."""
    model.eval()
    device = device_of(model)
    scores = []
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size].to(device)).float()
            scores.append(torch.softmax(logits, dim=1)[:, 1])
    return auc_of_scores(torch.cat(scores).cpu(), y)


def auc_of_scores(scores: Tensor, y: Tensor) -> float:
    """ROC-AUC of ``scores`` for labels ``y`` (1 positive); 0.5 with one class only."""
    score = scores.double()
    positive, negative = score[y == 1], score[y != 1]
    if len(positive) == 0 or len(negative) == 0:
        return 0.5
    ranks = _average_ranks(torch.cat([positive, negative]))
    rank_sum = float(ranks[: len(positive)].sum())
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks, ties given their average rank."""
    order = torch.argsort(values)
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    start = 0
    n = len(values)
    while start < n:
        end = start
        while end + 1 < n and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def anomaly_metrics(errors: Tensor, y: Tensor, threshold: float) -> dict[str, float]:
    """Flags ``errors > threshold`` judged against labels ``y`` (1 = anomaly): accuracy,
    precision, recall, F1, and the ROC-AUC of the errors as scores."""
    flags = errors > threshold
    truth = y == 1
    tp = int((flags & truth).sum())
    fp = int((flags & ~truth).sum())
    fn = int((~flags & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float((flags == truth).float().mean()) if len(y) else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": auc_of_scores(errors, y),
        "threshold": float(threshold),
    }


def anomaly_threshold(
    model: nn.Module, x: np.ndarray, y: np.ndarray, rule: ThresholdRule, *, split: str
) -> float:
    """The threshold ``rule`` sets on the reconstruction errors of the normal samples (label 0)
    of a split (``x``, ``y``, named ``split`` in errors)."""
    normal = x[y == 0]
    if len(normal) == 0:
        raise CalibrationError(
            f"no normal samples (label 0) in the {split} split to set the anomaly threshold on"
        )
    errors = reconstruction_errors(model, torch.from_numpy(np.ascontiguousarray(normal)))
    return rule.threshold(errors.numpy())


def evaluate_anomaly(model: nn.Module, dataset: Dataset, rule: ThresholdRule) -> dict[str, float]:
    """An anomaly model on the test split, its threshold set by the task's ``rule`` on the
    normal training data: accuracy, precision, recall, F1, ROC-AUC, the threshold, and the
    mean error (loss)."""
    threshold = anomaly_threshold(model, dataset.x_train, dataset.y_train, rule, split="training")
    errors = reconstruction_errors(model, torch.from_numpy(dataset.x_test))
    metrics = anomaly_metrics(errors, torch.from_numpy(dataset.y_test), threshold)
    metrics["loss"] = float(errors.mean()) if len(errors) else 0.0
    return metrics


def evaluate_global(
    model: nn.Module, dataset: Dataset, task: Task | None, record: RoundRecord
) -> None:
    """The global model on the test split, as a round or an asynchronous version reports it.

    ``record`` gets accuracy and loss and the kind's own metrics (:func:`test_scores`), a
    binary classifier's ROC-AUC, and the metrics the task declares (``Task.metrics``).
    ``task`` is ``None`` for a built-in (single-label classification).
    """
    metrics = test_scores(model, dataset, task)
    if task is not None and task.kind == "binary":
        metrics["roc_auc"] = roc_auc(
            model, torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
        )
    record.accuracy, record.loss = metrics.pop("accuracy"), metrics.pop("loss")
    record.extra.update(metrics)
    if task is not None and task.metrics:
        x_test = torch.from_numpy(dataset.x_test)
        record.extra[DECLARED_METRICS] = declared_metrics(
            model, x_test, dataset.y_test, task.metrics
        )


def test_scores(model: nn.Module, dataset: Dataset, task: Task | None) -> dict[str, float]:
    """``accuracy`` and ``loss`` of the model on the test split by the task's kind (flags
    judged against labels for anomaly, R² for regression), with the metrics that come with
    them (precision, recall, F1 and the threshold; MAE and RMSE in the target's units)."""
    kind = task.kind if task is not None else "classification"
    if task is not None and kind == "anomaly":
        return evaluate_anomaly(model, dataset, task.threshold_rule)
    if kind == "regression":
        return evaluate_regression(model, dataset.x_test, dataset.y_test, target_scale(dataset))
    test = evaluate(model, torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test))
    return {"accuracy": test.accuracy, "loss": test.loss}


def declared_metrics(
    model: nn.Module,
    x: Tensor,
    y: np.ndarray,
    metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
    *,
    batch_size: int = 500,
) -> dict[str, float]:
    """Each of a task's own ``metrics(outputs, labels)`` on the model's outputs for ``x``; a
    metric that fails or gives no finite number is a :class:`~fedge.errors.ConfigError`."""
    model.eval()
    device = device_of(model)
    with torch.no_grad():
        batches = [model(x[s : s + batch_size].to(device)) for s in range(0, len(x), batch_size)]
    outputs = torch.cat(batches).float().cpu().numpy()
    found = {}
    for name, metric in metrics.items():
        try:
            value = float(metric(outputs, y))
        except Exception as err:  # the user's code: any failure is theirs to see, in one line
            raise ConfigError(f"Task.metrics[{name!r}]", metric, f"failed: {err!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"Task.metrics[{name!r}]", value, "must return a finite number")
        found[name] = value
    return found
