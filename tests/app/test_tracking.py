"""Experiment tracking: TensorBoard event files and MLflow runs, read back by their own readers;
a sweep writes one tracked run per point."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge.app.config import RunConfig
from fedge.cli.main import app
from fedge.errors import ConfigError

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def test_a_sweep_writes_one_tracked_run_per_point(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        app,
        [
            *("simulate", "--dataset", "breast-cancer", "--model", "mlp", "--clients", "3"),
            *("--rounds", "2", "--no-release", "--track", "tensorboard,mlflow"),
            *("--sweep", "lr=0.01,0.05", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 points" in result.output
    for point, lr in (("lr=0.01", 0.01), ("lr=0.05", 0.05)):
        report = json.loads((out / point / "results.json").read_text())
        assert report["config"]["lr"] == lr
        events = EventAccumulator(str(out / point / "tensorboard" / point))
        events.Reload()
        accuracy = events.Scalars("accuracy")
        assert [e.step for e in accuracy] == [1, 2]
        assert accuracy[-1].value == pytest.approx(report["final"]["accuracy"], abs=1e-6)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fedge")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["lr=0.01", "lr=0.05"]
    for run in runs:
        assert run.data.params["lr"] == run.info.run_name.removeprefix("lr=")
        history = client.get_metric_history(run.info.run_id, "accuracy")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"results.json", "accuracy.png"} <= artifacts
        assert run.info.artifact_uri.startswith((out / "mlartifacts").as_uri())


def test_an_unknown_tracker_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--track.*'wandb'"):
        RunConfig(track="tensorboard,wandb")


def test_a_bad_sweep_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--sweep", "lr", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--sweep" in result.output and "KEY=V1,V2" in result.output
