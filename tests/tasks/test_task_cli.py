"""A user's own task file, written outside the repository, through ``fedge simulate`` and
``fedge release build``; each bad task is one line, exit 2, nothing written."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

FEDGE = [sys.executable, "-m", "fedge.cli"]

TASK_FILE = """
import numpy as np
from sklearn.datasets import load_breast_cancer
from torch import nn

from fedge.tasks import Task


def build_model(*, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, num_classes))


def wrong_model(*, input_shape, num_classes):
    return nn.Sequential(nn.Linear(7, num_classes))


def load_data():
    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32), y


TASK = Task(name="tumours", model=build_model, data=load_data, kind="binary", version="1.2")
WRONG = Task(name="wrong", model=wrong_model, data=load_data)


def batch_norm_model(*, input_shape, num_classes):
    return nn.Sequential(
        nn.Linear(input_shape[0], 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_classes)
    )


NORMED = Task(name="normed", model=batch_norm_model, data=load_data)
NOT_A_TASK = 3
"""


def _fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my_task.py").write_text(TASK_FILE)
    (tmp_path / "broken.py").write_text("import not_a_module_anyone_has\n")
    return tmp_path


def test_a_task_file_runs_through_simulate_and_release_build(project: Path) -> None:
    run = _fedge(
        "simulate",
        "--task",
        "my_task.py:TASK",
        "--clients",
        "3",
        "--rounds",
        "3",
        "--release-epochs",
        "2",
        "--out",
        "runs/t",
        cwd=project,
    )
    assert run.returncode == 0, run.stderr
    assert "task tumours 1.2 (binary)" in run.stdout
    results = json.loads((project / "runs/t/results.json").read_text())
    code = hashlib.sha256((project / "my_task.py").read_bytes()).hexdigest()
    assert results["task"] == {
        "name": "tumours",
        "version": "1.2",
        "kind": "binary",
        "code_sha256": code,
    }
    assert results["final"]["accuracy"] > 0.85
    assert 0.9 < results["rounds"][-1]["roc_auc"] <= 1.0
    assert (project / "runs/t/release/model.onnx").stat().st_size > 0
    # Another process, another directory: the checkpoint names its task, which is found again.
    build = _fedge(
        "release",
        "build",
        "--checkpoint",
        str(project / "runs/t/model.pt"),
        "--out",
        str(project / "rel"),
        cwd=project.parent,
    )
    assert build.returncode == 0, build.stderr
    report = json.loads((project / "rel/report.json").read_text())
    assert report["student_int8"]["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("missing.py:TASK", "--task: 'missing.py:TASK' names "),
        ("my_task.py:NOPE", "has no attribute 'NOPE'; tasks there: NORMED, TASK, WRONG"),
        ("my_task.py:NOT_A_TASK", "names a int, not a fedge Task"),
        ("broken.py:TASK", "failed to import: ModuleNotFoundError: No module named"),
        ("no_such_pkg.mod:TASK", "names module no_such_pkg.mod, which is not found"),
        ("my_task.py", "must be FILE.py:NAME or package.module:NAME"),
        ("my_task.py:WRONG", "model does not take the data's inputs: expected shape (N, 30)"),
    ],
)
def test_a_bad_task_is_one_line_exit_2_and_writes_nothing(
    project: Path, task: str, message: str
) -> None:
    proc = _fedge("simulate", "--task", task, "--rounds", "1", "--out", "runs/x", cwd=project)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "runs").exists()


def test_a_task_brings_its_own_dataset_and_model(project: Path) -> None:
    proc = _fedge(
        "simulate", "--task", "my_task.py:TASK", "--dataset", "digits", "--out", "x", cwd=project
    )
    assert proc.returncode == 2
    assert "--dataset: 'digits' conflicts with the task's own data (task:tumours)" in proc.stderr


def test_a_model_dp_sgd_cannot_train_is_refused_at_start_naming_the_layer(project: Path) -> None:
    proc = _fedge(
        "simulate", "--task", "my_task.py:NORMED", "--local-dp-epsilon", "5", "--out", "runs/x",
        cwd=project,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot train under local DP-SGD: layer '1' (BatchNorm1d)" in lines[0]
    assert "GroupNorm" in lines[0]
    assert not (project / "runs").exists()
