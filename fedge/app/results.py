"""What a run produces: per-round records, ``results.json`` and the PNG plots."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedge.charts import pyplot, save_figure
from fedge.errors import FedgeError
from fedge.files import atomic_write

__all__ = [
    "DECLARED_METRICS",
    "TASK_METRICS",
    "RoundRecord",
    "RunResult",
    "read_results",
    "task_metrics",
    "write_plots",
    "write_results",
]


@dataclass
class RoundRecord:
    """One round: centralized test metrics, timing, who took part and who was dropped."""

    round: int
    accuracy: float
    loss: float
    seconds: float
    train_seconds: float
    train_loss: float | None = None
    sampled: int = 0
    aggregated: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)
    client_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``extra`` keys are merged in at the top level."""
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


@dataclass
class RunResult:
    """A whole run: its config, every round, the final metrics and the timing."""

    config: dict[str, Any]
    rounds: list[RoundRecord] = field(default_factory=list)
    total_seconds: float = 0.0
    stopped_reason: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last completed round (0 if none completed)."""
        return self.rounds[-1].accuracy if self.rounds else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` document."""
        final: dict[str, Any] = {
            "accuracy": self.final_accuracy,
            "loss": self.rounds[-1].loss if self.rounds else None,
            "rounds_completed": len(self.rounds),
        }
        if self.stopped_reason:
            final["stopped_reason"] = self.stopped_reason
        return {
            "config": self.config,
            "rounds": [r.to_dict() for r in self.rounds],
            "final": final,
            "timing": {
                "total_s": self.total_seconds,
                "train_s": sum(r.train_seconds for r in self.rounds),
            },
            "dropped": [{"round": r.round, **d} for r in self.rounds for d in r.dropped],
            **self.notes,
        }


#: The metrics of a round beyond accuracy and loss that a task kind adds (binary, anomaly,
#: regression: MAE and RMSE in the target's units and R², which is also its accuracy).
TASK_METRICS = ("roc_auc", "precision", "recall", "f1", "threshold", "mae", "rmse", "r2")


#: Where a round's record keeps the metrics the task itself declares (name -> value).
DECLARED_METRICS = "declared_metrics"


def task_metrics(record: RoundRecord) -> dict[str, float]:
    """The task metrics ``record`` carries: the kind's (see :data:`TASK_METRICS`), then the
    ones the task declares (``Task.metrics``)."""
    found = {k: float(record.extra[k]) for k in TASK_METRICS if k in record.extra}
    found.update({k: float(v) for k, v in record.extra.get(DECLARED_METRICS, {}).items()})
    return found


def write_results(out_dir: Path, result: RunResult) -> Path:
    """Write ``results.json`` atomically and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    atomic_write(path, json.dumps(result.to_dict(), indent=2, default=str).encode())
    return path


def read_results(out_dir: Path) -> dict[str, Any]:
    """Read a finished run's ``results.json``."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise FedgeError(f"{path} does not exist: is {out_dir} the --out of a fedge run?")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_plots(out_dir: Path, result: RunResult) -> list[Path]:
    """Write ``accuracy.png``, ``loss.png``, for a task with metrics of its own (ROC-AUC, F1)
    ``metrics.png``, and for a DP run ``privacy.png``."""
    plt = pyplot()

    rounds = [r.round for r in result.rounds]
    written = []
    regression = result.notes.get("task", {}).get("kind") == "regression"
    accuracy = "test R²" if regression else "test accuracy"  # a regression round's accuracy
    for key, label in (("accuracy", accuracy), ("loss", "test loss")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(rounds, [getattr(r, key) for r in result.rounds], marker="o")
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_title(f"{result.config.get('dataset')} / {result.config.get('model')}: {label}")
        ax.grid(alpha=0.3)
        path = save_figure(fig, out_dir / f"{key}.png")
        written.append(path)
    metrics = sorted({k for r in result.rounds for k in task_metrics(r) if k != "threshold"})
    if metrics:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in metrics:
            points = [(r.round, task_metrics(r)[name]) for r in result.rounds if name in r.extra]
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel("round")
        ax.set_ylabel("test metric")
        ax.legend()
        ax.grid(alpha=0.3)
        path = save_figure(fig, out_dir / "metrics.png")
        written.append(path)
    from fedge.privacy.report import write_privacy_plot

    privacy_plot = write_privacy_plot(out_dir, [r.to_dict() for r in result.rounds])
    if privacy_plot is not None:
        written.append(privacy_plot)
    return written
