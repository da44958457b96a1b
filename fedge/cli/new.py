"""``fedge new``: a project of your own, with a task that runs as generated."""

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.common import console, fail

__all__ = ["new_command"]

_PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["fedge[server]"]

# `fedge simulate` and `fedge run start` in this folder run this task with no --task.
[tool.fedge]
task = "task.py:TASK"
"""

_TASK = '''\
"""The {name} task: your model, your data, what kind of task it is.

Run it:  fedge simulate --clients 4 --rounds 5
Replace load_data with your own loader (or point `data` at a CSV with a `label` column) and
build_model with your own torch.nn.Module.
"""

import numpy as np
from sklearn.datasets import load_breast_cancer
from torch import nn

from fedge.tasks import Task


def build_model(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Any torch.nn.Module that maps a batch of inputs to logits."""
    width = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, num_classes))


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """(x, y): features and labels; fedge cuts the test and public splits itself."""
    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32), y


TASK = Task(name="{name}", model=build_model, data=load_data, kind="binary", version="0.1.0")
'''


def new_command(
    name: Annotated[str, typer.Argument(help="The project's name and folder.")],
) -> None:
    """Make a project folder NAME with a task that runs as generated."""
    folder = Path(name)
    if not name or not all(c.isalnum() or c in "-_" for c in folder.name):
        fail(f"NAME: {name!r} must be letters, digits, '-' or '_'")
    if folder.exists():
        fail(f"NAME: {name!r} exists already; nothing was written")
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(_PYPROJECT.format(name=folder.name))
    (folder / "task.py").write_text(_TASK.format(name=folder.name))
    console.print(
        f"created {folder}/ (pyproject.toml, task.py). Next: cd {folder} && fedge simulate "
        "--clients 4 --rounds 5"
    )
