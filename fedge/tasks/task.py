"""The :class:`Task` a user declares: model builder, data, kind, version, loss and metrics."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedge.data.base import Dataset, split_public_test
from fedge.data.preprocessing import Preprocessing
from fedge.errors import ConfigError

__all__ = ["TASK_KINDS", "Task", "ThresholdRule", "dataset_from_arrays"]

#: What a task predicts. ``binary`` adds ROC-AUC to accuracy; ``anomaly`` is an autoencoder
#: trained to reconstruct its input, whose error above a threshold set on normal training
#: data flags an anomaly (labels, 1 = anomaly, are used only to set and judge the threshold);
#: ``regression`` predicts a number (one model output, MSE loss, MAE and RMSE reported).
TASK_KINDS = ("classification", "binary", "anomaly", "regression")

#: What a task's ``data`` loader may return: a fedge Dataset, ``(x, y)``, or ``(x, y, groups)``.
DataLoader = Callable[[], Any]


@dataclass(frozen=True)
class ThresholdRule:
    """How an anomaly task's threshold follows from the reconstruction errors of normal samples.

    Without ``sigmas``: their ``quantile``. With ``sigmas`` = k: k standard deviations above the
    mean of their logarithms, ``exp(mean(log e) + k * std(log e))``. Squared errors are skewed
    to the right and their logarithms close to symmetric, so on the log scale the familiar
    k-sigma rule holds (k = 3 flags about 1 normal sample in 740 when the log errors are
    normal); it uses every normal error, where a high quantile rests on the few largest, and
    it pools across sites from each one's count, sum and sum of squares.
    """

    quantile: float = 0.99
    sigmas: float | None = None

    def threshold(self, errors: np.ndarray) -> float:
        """The threshold over ``errors`` (one per normal sample, not empty), never below 1e-12."""
        errors = np.asarray(errors, dtype=np.float64)
        if self.sigmas is None:
            found = float(np.quantile(errors, self.quantile))
        else:
            logs = np.log(np.maximum(errors, 1e-12))
            found = float(np.exp(logs.mean() + self.sigmas * logs.std()))
        return max(found, 1e-12)


@dataclass(frozen=True, kw_only=True)
class Task:
    """A user's federated task.

    ``model(*, input_shape, num_classes)`` returns a ``torch.nn.Module`` mapping a batch to
    logits. ``data`` is a loader (no arguments) returning ``(x, y)``, ``(x, y, groups)`` or a
    :class:`~fedge.data.base.Dataset`; or a file or folder fedge reads with no code (a table
    with a ``label`` column, an image folder, ``.npz``), relative to the task's file. fedge cuts
    a held-out test split and a server-held public split (for distillation) from loaded arrays
    with a fixed seed. ``label`` and ``group`` name a table's label column and the column of its
    natural partition (a hospital, a machine: ``--partition by:COLUMN``). ``version`` is the
    task's own: a run records it with the sha256 of the task's code. An anomaly task's threshold
    is its ``threshold_quantile`` of the normal samples' errors, or with ``threshold_sigmas``
    that many standard deviations above their mean on a log scale (:class:`ThresholdRule`).

    The kind sets the training loss and the metrics; a task may bring its own. ``loss(outputs,
    labels)`` (torch tensors: the model's outputs for a batch and its labels) replaces the kind's
    training loss on every client, under local DP too (it must then average per-sample losses,
    as DP-SGD clips each sample's gradient); each of ``metrics`` ``{name: metric(outputs,
    labels)}`` (numpy arrays: the model's outputs on the test split and its labels) is reported
    every round beside the kind's metrics, in results.json, the plots, ``run status``, the
    console and /metrics.
    """

    name: str
    model: Callable[..., Any]
    data: DataLoader | str | Path
    kind: str = "classification"
    version: str = "1"
    label: str = "label"
    group: str | None = None
    test_fraction: float = 0.2
    public_fraction: float = 0.1
    threshold_quantile: float = 0.99
    threshold_sigmas: float | None = None
    loss: Callable[[Any, Any], Any] | None = None
    metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]] = field(
        default_factory=dict, hash=False
    )

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError("Task.name", self.name, "must be letters, digits, '-', '_' or '.'")
        if self.kind not in TASK_KINDS:
            raise ConfigError("Task.kind", self.kind, f"is not one of: {', '.join(TASK_KINDS)}")
        if not callable(self.model):
            raise ConfigError("Task.model", self.model, "must be a model builder (callable)")
        if not (callable(self.data) or isinstance(self.data, str | Path)):
            raise ConfigError("Task.data", self.data, "must be a loader or a path")
        if not 0.5 <= self.threshold_quantile <= 1.0:
            raise ConfigError(
                "Task.threshold_quantile", self.threshold_quantile, "is outside [0.5, 1]"
            )
        if self.threshold_sigmas is not None and not self.threshold_sigmas > 0:
            raise ConfigError("Task.threshold_sigmas", self.threshold_sigmas, "must be above 0")
        if self.loss is not None and not callable(self.loss):
            raise ConfigError("Task.loss", self.loss, "must be loss(outputs, labels) (callable)")
        _check_declared_metrics(self.metrics)
        if not 0 < self.test_fraction + self.public_fraction < 1:
            raise ConfigError(
                "Task.test_fraction", self.test_fraction, "with public_fraction must be in (0, 1)"
            )

    @property
    def threshold_rule(self) -> ThresholdRule:
        """How an anomaly threshold follows from the errors of normal samples."""
        return ThresholdRule(self.threshold_quantile, self.threshold_sigmas)


#: Names a task's own metric may not take: the round's figures and the kinds' metrics.
RESERVED_METRICS = frozenset(
    {"accuracy", "loss", "roc_auc", "precision", "recall", "f1", "threshold", "mae", "rmse", "r2"}
)


def _check_declared_metrics(metrics: object) -> None:
    if not isinstance(metrics, Mapping):
        raise ConfigError("Task.metrics", metrics, "must map names to metric(outputs, labels)")
    for name, metric in metrics.items():
        if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_METRICS:
            raise ConfigError(
                "Task.metrics", name, "must be a Python identifier other than fedge's own metrics"
            )
        if not callable(metric):
            raise ConfigError(f"Task.metrics[{name!r}]", metric, "must be callable")


def dataset_from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_fraction: float,
    public_fraction: float,
    groups: np.ndarray | None = None,
    kind: str = "classification",
) -> Dataset:
    """A :class:`Dataset` cut from a task loader's arrays with a fixed split seed. A regression
    task's targets are float32, standardised with the training split's mean and std, which its
    preprocessing spec carries (``target``) so predictions go back to the target's units."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise ConfigError(
            f"task {name}: data", f"x {x.shape}, y {y.shape}", "must be x (N, ...) and y (N,)"
        )
    sizes = _split_sizes(len(y), test_fraction, public_fraction)
    if kind == "regression":
        scaled, target = _standardised_targets(name, y, train_idx=sizes[2])
        spec = {"shape": list(x.shape[1:]), "target": target}
        preprocessing = Preprocessing("array", spec).to_json()
        return _dataset(name, x, scaled, sizes, groups, num_classes=1, preprocessing=preprocessing)
    classes, labels = np.unique(y, return_inverse=True)
    return _dataset(name, x, labels.astype(np.int64), sizes, groups, num_classes=len(classes))


def _standardised_targets(
    name: str, y: np.ndarray, *, train_idx: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """Regression targets standardised with the training rows' mean and std, and those two."""
    try:
        target = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"task {name}: y", y.dtype, "must hold numbers for regression") from None
    if not np.isfinite(target).all():
        raise ConfigError(f"task {name}: y", "NaN or inf", "regression targets must be finite")
    mean, std = float(target[train_idx].mean()), float(target[train_idx].std()) or 1.0
    return ((target - mean) / std).astype(np.float32), {"mean": mean, "std": std}


def _split_sizes(
    n: int, test_fraction: float, public_fraction: float
) -> tuple[int, int, np.ndarray]:
    """The test and public split sizes, and the rows :func:`split_public_test` (seed 0) keeps
    for training."""
    test, public = round(n * test_fraction), round(n * public_fraction)
    return test, public, np.random.default_rng(0).permutation(n)[test + public :]


def _dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    sizes: tuple[int, int, np.ndarray],
    groups: np.ndarray | None,
    *,
    num_classes: int,
    preprocessing: dict[str, Any] | None = None,
) -> Dataset:
    test, public, train_idx = sizes
    (x_train, y_train), (x_public, y_public), (x_test, y_test) = split_public_test(
        x, y, test_size=test, public_size=public
    )
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        x_public=x_public,
        y_public=y_public,
        num_classes=num_classes,
        groups_train=None if groups is None else np.asarray(groups).astype(str)[train_idx],
        preprocessing=preprocessing,
    )
