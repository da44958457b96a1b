"""A run pins its task's code: a client whose task's code differs refuses with that reason."""

from pathlib import Path

import pytest

from fedge.app.config import RunConfig
from fedge.errors import ConfigError

TASK = """
import numpy as np
from torch import nn
from fedge.tasks import Task

def load_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int)

TASK = Task(name="pinned", version="{version}", data=load_data,
            model=lambda *, input_shape, num_classes: nn.Linear(input_shape[0], num_classes))
"""


def test_a_changed_task_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "task.py"
    path.write_text(TASK.format(version="1"))
    run = RunConfig.from_mapping({"task": f"{path}:TASK", "clients": 2})
    wire = run.to_run_config()
    assert wire["task-sha256"] == run.task_info["code_sha256"]  # type: ignore[index]
    assert RunConfig.from_run_config(wire) == run  # the same code: accepted
    path.write_text(TASK.format(version="2"))
    with pytest.raises(ConfigError) as info:
        RunConfig.from_run_config(wire)
    message = str(info.value)
    assert "is pinned 2 with code sha256" in message
    assert wire["task-sha256"][:12] in message and "install the run's task" in message


def test_a_run_config_sent_to_another_process_brings_its_task(tmp_path: Path) -> None:
    """What a Ray worker does with the ClientApp's run config: unpickle it and find the
    task's data and model by name (the task file is loaded there too)."""
    import pickle
    import subprocess
    import sys

    path = tmp_path / "task.py"
    path.write_text(TASK.format(version="1"))
    run = RunConfig.from_mapping({"task": f"{path}:TASK", "clients": 2})
    (tmp_path / "config.pkl").write_bytes(pickle.dumps(run))
    worker = (
        "import pickle, sys\n"
        "from fedge.data import get_dataset\n"
        "from fedge.models import get_model\n"
        "config = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "data = get_dataset(config.dataset)\n"
        "get_model(config.model, input_shape=data.input_shape, num_classes=data.num_classes)\n"
        "print(config.dataset, data.input_shape, config.task_sha256[:12])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", worker, str(tmp_path / "config.pkl")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["task:pinned", "(4,)", run.task_sha256[:12]]  # type: ignore[index]
