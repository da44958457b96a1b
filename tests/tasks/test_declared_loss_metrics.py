"""A task's own loss and metrics: the loss replaces the kind's on every client, the metrics are
reported each round beside the kind's, in synchronous and asynchronous runs alike."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedge.app.config import RunConfig
from fedge.app.results import task_metrics
from fedge.app.training import LocalTraining, train
from fedge.errors import ConfigError
from fedge.simulation import simulate
from fedge.tasks import Task

FEDGE = [sys.executable, "-m", "fedge.cli"]

TASK_FILE = """
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

from fedge.tasks import Task


def build_model(*, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, num_classes))


def load_data():
    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32), y


def constant_loss(outputs, labels):
    # Zero gradient, a loss of exactly 7: the rounds' training loss shows this loss ran.
    return torch.nn.functional.cross_entropy(outputs, labels) * 0.0 + 7.0


def positive_rate(outputs, labels):
    return float((outputs.argmax(axis=1) == 1).mean())


def broken(outputs, labels):
    raise ValueError("no such column")


TASK = Task(
    name="tumours",
    model=build_model,
    data=load_data,
    kind="binary",
    loss=constant_loss,
    metrics={"positive_rate": positive_rate},
)
BROKEN = Task(name="tumours", model=build_model, data=load_data, metrics={"broken": broken})
"""


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_task.py"
    path.write_text(TASK_FILE)
    return path


def test_a_declared_loss_replaces_the_kinds_exactly() -> None:
    """SGD on 3 x cross-entropy at lr 0.1 is SGD on cross-entropy at lr 0.3, step for step."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    base = nn.Linear(5, 3)
    scaled, plain = (type(base)(5, 3) for _ in range(2))
    scaled.load_state_dict(base.state_dict())
    plain.load_state_dict(base.state_dict())
    tripled = train(
        scaled,
        x,
        y,
        local=LocalTraining(epochs=2, batch_size=8, lr=0.1),
        loss=lambda out, labels: 3 * nn.functional.cross_entropy(out, labels),
    )
    once = train(plain, x, y, local=LocalTraining(epochs=2, batch_size=8, lr=0.3))
    for a, b in zip(scaled.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert tripled > 0 and once > 0


def test_simulate_trains_on_the_tasks_loss_and_reports_its_metrics(
    task_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *(*FEDGE, "simulate", "--task", f"{task_file}:TASK", "--clients", "3"),
            *("--rounds", "2", "--no-release", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    assert [r["train_loss"] for r in rounds] == [pytest.approx(7.0)] * 2
    for record in rounds:
        rate = record["declared_metrics"]["positive_rate"]
        assert 0.0 <= rate <= 1.0
        assert "roc_auc" in record  # the kind's metrics stay
    assert (out / "metrics.png").is_file()
    assert "positive_rate" in done.stdout


def test_an_async_run_reports_the_kinds_and_the_tasks_metrics(
    task_file: Path, tmp_path: Path
) -> None:
    config = RunConfig.from_mapping(
        {
            "task": f"{task_file}:TASK",
            "clients": 6,
            "rounds": 2,
            "mode": "async",
            "buffer": 2,
            "concurrency": 3,
            "release": False,
        }
    )
    result = simulate(config, device_state_root=tmp_path / "devices")
    assert len(result.rounds) == 2
    for record in result.rounds:
        metrics = task_metrics(record)
        assert {"roc_auc", "positive_rate"} <= set(metrics)
        assert record.train_loss == pytest.approx(7.0)


def test_a_failing_metric_is_one_line_exit_2(task_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *(*FEDGE, "simulate", "--task", f"{task_file}:BROKEN", "--clients", "3"),
            *("--rounds", "1", "--no-release", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Task.metrics['broken']" in lines[0], done.stderr
    assert "no such column" in lines[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metrics": {"accuracy": np.mean}}, "other than fedge's own metrics"),
        ({"metrics": {"f 1": np.mean}}, "must be a Python identifier"),
        ({"metrics": {"mine": 3}}, "Task.metrics['mine']: 3 must be callable"),
        ({"loss": "mse"}, "Task.loss: 'mse' must be loss(outputs, labels)"),
    ],
)
def test_a_bad_declaration_names_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Task(name="t", model=lambda **_: None, data=lambda: None, **changes)  # type: ignore[arg-type]
    assert message in str(info.value)
