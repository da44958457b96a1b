"""A regression task in a coordinator run: three devices (threads, real gRPC on loopback) train
on their own records, targets in their own units; the run's rounds carry MAE and RMSE."""

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.data import get_dataset
from fedge.edge.agent import AgentSettings
from fedge.edge.device import DeviceSettings, start_device
from fedge.tasks import load_task
from fedge.v1 import control_pb2 as pb

from ..conftest import wait_for
from ..tasks.test_regression import TASK_FILE
from .conftest import Fleet


def test_devices_train_a_regression_task_on_their_own_records(fleet: Fleet, tmp_path: Path) -> None:
    task = f"{tmp_path / 'task.py'}:TASK"
    (tmp_path / "task.py").write_text(TASK_FILE)
    dataset = get_dataset(load_task(task).dataset)
    mean, std = dataset.preprocessing["spec"]["target"].values()  # type: ignore[index]
    devices = []
    for i, rows in enumerate(np.array_split(np.arange(len(dataset.y_train)), 3)):
        data = tmp_path / f"dev{i}-data"
        data.mkdir()
        y = dataset.y_train[rows] * std + mean  # each device's targets, in their own units
        np.savez(data / "data.npz", x=dataset.x_train[rows], y=y)
        (data / "fedge-data.json").write_text(json.dumps({"kind": "regression"}))
        agent = AgentSettings(wait_seconds=1.0, heartbeat_seconds=0.3, reconnect_wait=2.0)
        settings = DeviceSettings(data_dir=data, task=task, agent=agent, delivery=None)
        devices.append(start_device(fleet.enroll(f"clinic{i}"), settings))
    threads = [device.run_in_thread() for device in devices]
    try:
        control = fleet.control_stub()
        config = {"task": task, "clients": 3, "rounds": 3, "lr": 0.1, "release": False}
        request = pb.StartRunRequest(config_json=json.dumps(config))
        run_id = control.StartRun(request, timeout=30).run.run_id
        done = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_STOPPED)
        wait_for(
            lambda: control.GetRun(pb.GetRunRequest(run_id=run_id)).run.state in done,
            120,
            f"run {run_id}",
        )
        reply = control.GetRun(pb.GetRunRequest(run_id=run_id))
        assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
        last = reply.rounds[-1]
        assert last.aggregated == 3 and last.accuracy == last.metrics["r2"] > 0.2
        assert 40 < last.metrics["rmse"] < 70 and last.metrics["mae"] < last.metrics["rmse"]
        args = ["run", "status", str(run_id), *fleet.operator_args]
        status = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert status.exit_code == 0 and f"{last.metrics['rmse']:.4f}" in status.output
    finally:
        for device in devices:
            device.agent.stop()
        for thread in threads:
            thread.join(timeout=30)
