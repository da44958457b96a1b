"""A user's own task, written outside the repository, end to end on real processes: a
coordinator run on 3 devices (each with the task installed), a device with another version of
the task refused with that reason, the run's release published, and a prediction on a device."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedge.v1 import control_pb2 as pb

from .conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASK_FILE = """
import numpy as np
from sklearn.datasets import load_breast_cancer
from torch import nn

from fedge.tasks import Task


def build_model(*, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, num_classes))


def load_data():
    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32), y


TASK = Task(name="tumours", model=build_model, data=load_data, kind="binary", version="VERSION")
"""


def _device_data(cluster: Cluster, project: Path) -> None:
    """Each device's own records: a third of the task's rows, as ``data.npz``."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    for i, rows in enumerate(np.array_split(np.random.default_rng(1).permutation(len(y)), 3)):
        folder = cluster.root / f"dev{i}" / "data"
        folder.mkdir(parents=True)
        np.savez(folder / "data.npz", x=x[rows], y=y[rows])
    np.save(project / "patient.npy", x[:1])


def _start_edge(cluster: Cluster, i: int, task: Path) -> None:
    cluster.spawn(
        f"edge{i}",
        *("edge", "start", "--state", f"dev{i}/state", "--data", f"dev{i}/data"),
        *("--wait", "2", "--heartbeat", "0.5", "--release-interval", "2"),
        *("--task", f"{task}:TASK"),
    )


def test_a_users_task_trains_on_devices_ships_and_predicts(cluster: Cluster) -> None:
    project = cluster.root / "project"  # the user's own folder, outside the repository
    project.mkdir()
    (project / "task.py").write_text(TASK_FILE.replace("VERSION", "1.0"))
    (project / "task_v2.py").write_text(TASK_FILE.replace("VERSION", "2.0"))
    cluster.start_coordinator()
    for i in range(3):
        cluster.enroll(i)
    for i in range(3):
        shutil.rmtree(cluster.root / f"dev{i}" / "data")
    _device_data(cluster, project)
    for i in range(3):
        _start_edge(cluster, i, project / "task.py")
    cluster.wait_for(lambda: sum(d.state == "idle" for d in cluster.devices()) == 3, 120)

    started = cluster.cli(
        *("run", "start", "--task", str(project / "task.py:TASK")),
        *("--clients", "3", "--rounds", "3", "--release-epochs", "3"),
    )
    assert started.returncode == 0, started.stderr
    reply = cluster.wait_run_done(timeout=300)
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    assert [(r.sampled, r.aggregated) for r in reply.rounds] == [(3, 3)] * 3
    assert reply.rounds[-1].accuracy > 0.85
    config = json.loads(reply.run.config_json)
    assert config["dataset"] == "task:tumours" and len(config["task-sha256"]) == 64

    # The run's release reaches every device, which answers predictions from it.
    published = cluster.cli(
        "release", "publish", "--run", str(reply.run.run_id), "--percent", "100"
    )
    assert published.returncode == 0, published.stderr

    def installed() -> bool:
        status = cluster.control("GetReleaseStatus", pb.GetReleaseStatusRequest(version=0))
        return status is not None and status.release.states.get("installed", 0) == 3

    cluster.wait_for(installed, 180)
    predicted = cluster.cli(
        "edge",
        "predict",
        "--state",
        str(cluster.root / "dev0/state"),
        "patient.npy",
        cwd=project,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "(release 1)" in predicted.stdout

    # A device whose installed task is another version refuses the run's task, saying why.
    cluster.kill("edge2")
    _start_edge(cluster, 2, project / "task_v2.py")
    cluster.wait_for(lambda: sum(d.state == "idle" for d in cluster.devices()) == 3, 120)
    again = cluster.cli(
        *("run", "start", "--task", str(project / "task.py:TASK")),
        *("--clients", "3", "--rounds", "1", "--min-clients", "3", "--no-release"),
    )
    assert again.returncode == 0, again.stderr
    failed = cluster.wait_run_done(timeout=300)
    assert failed.run.state == pb.RUN_STATE_FAILED
    assert "is tumours 2.0 with code sha256" in failed.run.error, failed.run.error
    assert "install the run's task" in failed.run.error
