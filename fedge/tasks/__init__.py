"""Tasks: the user's model and data, declared once and taken by every stage of fedge.

A :class:`Task` names how to build the model (any ``torch.nn.Module``), where the data comes
from, and what kind of task it is. It lives in the user's own file or package and is referenced
as ``path/to/file.py:NAME`` or ``package.module:NAME`` (:func:`load_task`); fedge's built-in
datasets and models run through the same registries a task is entered into.
"""

from fedge.tasks.loader import TaskRef, load_task, task_names
from fedge.tasks.task import TASK_KINDS, Task, ThresholdRule

__all__ = ["TASK_KINDS", "Task", "TaskRef", "ThresholdRule", "load_task", "task_names"]
