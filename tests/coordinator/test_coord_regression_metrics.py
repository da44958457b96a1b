"""A regression run's rounds as the coordinator keeps them: MAE, RMSE and R² beside the round's
accuracy (its R²), in ``fedge run status`` and in /metrics' ``fedge_run_task_metric``."""

from typer.testing import CliRunner

from fedge.app.results import RoundRecord
from fedge.cli.main import app
from fedge.coordinator.runs import _round_row

from .conftest import Fleet
from .test_coord_metrics import scrape


def test_run_status_and_metrics_show_mae_and_rmse(observed: Fleet) -> None:
    state = observed.coordinator.state
    run = state.create_run(config_json="{}", rounds_total=2)
    for server_round, (mae, rmse, r2) in enumerate([(61.5, 70.25, 0.125), (43.75, 53.5, 0.5)], 1):
        record = RoundRecord(
            round=server_round, accuracy=r2, loss=1 - r2, seconds=1.0, train_seconds=1.0,
            sampled=3, aggregated=3, extra={"mae": mae, "rmse": rmse, "r2": r2},
        )  # fmt: skip
        state.add_round(run.id, _round_row(record))

    args = ["run", "status", str(run.id), *observed.operator_args]
    status = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    header = next(line for line in status.output.splitlines() if "round" in line and "mae" in line)
    assert "rmse" in header and "r2" in header
    assert "53.5000" in status.output and "43.7500" in status.output

    metrics = scrape(observed.coordinator.ports["metrics"])
    label = (("metric", "rmse"), ("run", str(run.id)))
    assert metrics[("fedge_run_task_metric", label)] == 53.5  # the latest round's
    assert metrics[("fedge_run_task_metric", (("metric", "mae"), ("run", str(run.id))))] == 43.75
    assert metrics[("fedge_run_accuracy", (("run", str(run.id)),))] == 0.5
