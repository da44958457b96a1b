"""Experiment tracking: a run's config, per-round metrics and artifacts to TensorBoard and MLflow.

Both are optional extras (``pip install 'fedge[tracking]'``). ``--track tensorboard`` writes
event files to ``OUT/tensorboard``; ``--track mlflow`` logs to ``--tracking-uri`` when given,
else to a local SQLite store ``OUT/mlflow.db`` (MLflow's plain file store is in maintenance mode
and refused by MLflow 3 unless forced); a SQLite store keeps its artifacts beside it in
``mlartifacts``.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fedge.errors import ConfigError, MissingExtraError

__all__ = ["TRACKERS", "Tracker", "open_trackers", "parse_track"]

TRACKERS = ("tensorboard", "mlflow")
_METRICS = ("accuracy", "loss", "train_loss", "seconds", "sampled", "aggregated", "epsilon")


class Tracker(Protocol):
    """Where a run's record goes as it happens."""

    def log_round(self, record: dict[str, Any]) -> None:
        """One round's record (``RoundRecord.to_dict()``)."""
        ...

    def finish(self, out_dir: Path | None) -> None:
        """The run is over: attach its files (results.json, plots) and close."""
        ...


def parse_track(value: str) -> tuple[str, ...]:
    """``tensorboard,mlflow`` as names; :class:`ConfigError` naming an unknown one."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        if name not in TRACKERS:
            raise ConfigError("--track", value, f"names {name!r}; valid: {', '.join(TRACKERS)}")
    return names


def open_trackers(
    names: tuple[str, ...], *, out_dir: Path, config: dict[str, Any], uri: str | None, name: str
) -> list[Tracker]:
    """Start one tracked run per tracker named, each holding ``config``."""
    openers: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: _TensorBoard(out_dir / "tensorboard" / name, config),
        "mlflow": lambda: _MLflow(out_dir, config, uri, name),
    }
    return [openers[n]() for n in names]


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(record[k])
        for k in _METRICS
        if isinstance(record.get(k), int | float) and not isinstance(record.get(k), bool)
    }


class _TensorBoard:
    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise MissingExtraError("--track tensorboard", "tracking") from err
        self._writer = SummaryWriter(log_dir=str(folder))
        self._writer.add_text("config", f"```\n{json.dumps(config, indent=2, default=str)}\n```")

    def log_round(self, record: dict[str, Any]) -> None:
        for key, value in _numbers(record).items():
            self._writer.add_scalar(key, value, global_step=int(record["round"]))
        self._writer.flush()

    def finish(self, out_dir: Path | None) -> None:
        results = out_dir / "results.json" if out_dir is not None else None
        if results is not None and results.is_file():
            self._writer.add_text("results", f"```\n{results.read_text()}\n```")
        self._writer.close()


class _MLflow:
    def __init__(self, out_dir: Path, config: dict[str, Any], uri: str | None, name: str) -> None:
        try:
            import mlflow
        except ImportError as err:
            raise MissingExtraError("--track mlflow", "tracking") from err
        out_dir.mkdir(parents=True, exist_ok=True)
        self._mlflow = mlflow
        uri = uri or f"sqlite:///{out_dir.absolute() / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name("fedge")
        if experiment is None:
            where = _artifacts_beside(uri)
            experiment_id = mlflow.create_experiment("fedge", artifact_location=where)
        else:
            experiment_id = experiment.experiment_id
        self._run = mlflow.start_run(experiment_id=experiment_id, run_name=name)
        mlflow.log_params({k: str(v)[:500] for k, v in config.items()})

    def log_round(self, record: dict[str, Any]) -> None:
        self._mlflow.log_metrics(_numbers(record), step=int(record["round"]))

    def finish(self, out_dir: Path | None) -> None:
        if out_dir is not None:
            for path in sorted(out_dir.glob("*.json")) + sorted(out_dir.glob("*.png")):
                self._mlflow.log_artifact(str(path))
        self._mlflow.end_run()


def _artifacts_beside(uri: str) -> str | None:
    """``mlartifacts`` beside a local SQLite store; ``None`` (the server's choice) otherwise.

    Without it MLflow puts a SQLite store's artifacts in ``./mlruns`` of whatever directory the
    run happens to start in.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").absolute().as_uri()
