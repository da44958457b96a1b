"""Find a user's task by reference and enter it into fedge's dataset and model registries.

A reference is ``path/to/file.py:NAME`` (a file anywhere, imported under a private module
name) or ``package.module:NAME`` (an installed or importable module). Loading a task enters its
data under the dataset name and its model under the model name ``task:NAME``, so every stage
that takes a run's options (simulation, the coordinator, a device, a release build) finds them
the same way. The same reference loaded again, in this or another process, enters the same
names; a changed file is re-read.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fedge.data.base import Dataset
from fedge.data.registry import register_dataset
from fedge.errors import ConfigError
from fedge.models.registry import register_model
from fedge.tasks.task import Task, dataset_from_arrays

__all__ = ["TaskRef", "data_task", "load_task", "task_names"]

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], "TaskRef"] = {}


@dataclass(frozen=True)
class TaskRef:
    """A loaded task: the reference it came from, its code's sha256, the registry names."""

    reference: str
    task: Task
    code_sha256: str
    source: Path | None

    @property
    def dataset(self) -> str:
        """The dataset registry's name of the task's data."""
        return f"task:{self.task.name}"

    @property
    def model(self) -> str:
        """The model registry's name of the task's model."""
        return f"task:{self.task.name}"

    def default_model(self) -> str:
        """A built-in model for data given without code: a CNN for images, else an MLP."""
        from fedge.data.registry import get_dataset

        return "cnn-small" if get_dataset(self.dataset).is_image else "mlp"

    def describe(self) -> dict[str, str]:
        """What a run records of its task."""
        return {
            "name": self.task.name,
            "version": self.task.version,
            "kind": self.task.kind,
            "code_sha256": self.code_sha256,
        }


def task_names(reference: str) -> tuple[str, str]:
    """The (dataset, model) registry names of the task ``reference``, loading it if needed."""
    ref = load_task(reference)
    return ref.dataset, ref.model


def load_task(reference: str) -> TaskRef:
    """Load the task ``reference`` names and enter it into the registries.

    :class:`ConfigError` (option ``--task``) names what is wrong: the form of the reference, a
    file or module that does not exist or fails to import, an attribute that is missing or is
    not a :class:`Task`.
    """
    where, sep, attribute = reference.rpartition(":")
    if not sep or not where or not attribute.isidentifier():
        raise ConfigError("--task", reference, "must be FILE.py:NAME or package.module:NAME")
    module, source = _import(reference, where)
    code = hashlib.sha256(source.read_bytes()).hexdigest() if source is not None else ""
    with _LOCK:
        key = (reference, code)
        if key not in _LOADED:
            if not hasattr(module, attribute):
                names = sorted(n for n, v in vars(module).items() if isinstance(v, Task))
                valid = f"; tasks there: {', '.join(names)}" if names else "; it defines no Task"
                raise ConfigError("--task", reference, f"has no attribute {attribute!r}{valid}")
            task = getattr(module, attribute)
            if not isinstance(task, Task):
                raise ConfigError(
                    "--task", reference, f"names a {type(task).__name__}, not a fedge Task"
                )
            ref = TaskRef(reference, task, code, source)
            _register(ref)
            _LOADED[key] = ref
        return _LOADED[key]


def data_task(
    path: str, *, label: str = "label", group: str | None = None, kind: str = "classification"
) -> TaskRef:
    """The task of data given with no code (``--data``): fedge reads the file or folder, and
    the task is named after it; ``kind`` (``--kind``) is what its label column holds."""
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise ConfigError("--data", path, "does not exist")
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in source.stem) or "data"
    code = hashlib.sha256(f"{source}|{label}|{group}|{kind}".encode()).hexdigest()
    with _LOCK:
        key = (f"data:{source}", code)
        if key not in _LOADED:
            task = Task(
                name=stem, model=_no_model, data=source, label=label, group=group, kind=kind
            )
            ref = TaskRef(str(source), task, code, None)
            _register(ref)
            _LOADED[key] = ref
        return _LOADED[key]


def _no_model(**_: Any) -> Any:
    raise ConfigError("--model", "task", "data given with --data has no model of its own")


def _import(reference: str, where: str) -> tuple[ModuleType, Path | None]:
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ConfigError("--task", reference, f"names {path}, which does not exist")
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        name = f"fedge_task_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError("--task", reference, "is not an importable Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _run(reference, lambda: spec.loader.exec_module(module))
        return module, path
    try:
        module = _run(reference, lambda: importlib.import_module(where))
    except ConfigError as err:
        missing = err.__cause__.name if isinstance(err.__cause__, ModuleNotFoundError) else None
        if missing and (where == missing or where.startswith(f"{missing}.")):
            raise ConfigError(
                "--task", reference, f"names module {where}, which is not found"
            ) from None
        raise
    source = Path(module.__file__) if getattr(module, "__file__", None) else None
    return module, source


def _run(reference: str, load: Any) -> Any:
    try:
        return load()
    except ConfigError:
        raise
    except Exception as err:  # the user's code may raise anything while it is imported
        line = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(
            "--task", reference, f"failed to import: {type(err).__name__}: {line}"
        ) from err


def _register(ref: TaskRef) -> None:
    task = ref.task
    register_dataset(ref.dataset, lambda _data_dir: _load_data(ref), replace=True)
    register_model(
        ref.model, images_only=False, description=f"the model of task {task.name}", replace=True
    )(_model_builder(ref))


def _model_builder(ref: TaskRef) -> Any:
    def build(*, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> Any:
        model = ref.task.model(input_shape=input_shape, num_classes=num_classes, **kwargs)
        _check_model(ref, model, input_shape)
        return model

    return build


def _check_model(ref: TaskRef, model: Any, input_shape: tuple[int, ...]) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            "--task",
            ref.reference,
            f"model builder returned a {type(model).__name__}, not a torch.nn.Module",
        )
    sample = torch.zeros((2, *input_shape))
    try:
        with torch.no_grad():
            was_training = model.training
            out = model.eval()(sample)
            model.train(was_training)
    except Exception as err:  # any layer may refuse the shape, each in its own words
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            "--task",
            ref.reference,
            f"model does not take the data's inputs: expected shape (N, "
            f"{', '.join(map(str, input_shape))}), got {type(err).__name__}: {first}",
        ) from None
    if ref.task.kind == "anomaly":
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(sample.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                "--task",
                ref.reference,
                f"an anomaly model must reconstruct its input: expected {tuple(sample.shape)}, "
                f"got {shape}",
            )
        return
    if ref.task.kind == "regression":
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 1):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                "--task",
                ref.reference,
                f"a regression model must return one number per sample (N, 1), got {shape}",
            )
        return
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            "--task", ref.reference, f"model must return logits (N, classes), got {shape}"
        )


def _load_data(ref: TaskRef) -> Dataset:
    task = ref.task
    if not callable(task.data):
        from fedge.data.files import read_data

        base = ref.source.parent if ref.source is not None else Path.cwd()  # --data: absolute
        path = base / Path(task.data)
        files = read_data(
            path,
            label=task.label,
            group=task.group,
            test_fraction=task.test_fraction,
            public_fraction=task.public_fraction,
            kind=task.kind,
        )
        return dataclasses.replace(
            files.dataset,
            name=ref.dataset,
            groups_train=files.groups_train,
            preprocessing=files.preprocessing.to_json(),
            label_names=tuple(files.label_names),
        )
    loaded = _run(ref.reference, task.data)
    if isinstance(loaded, Dataset):
        return loaded
    if not isinstance(loaded, tuple) or len(loaded) not in (2, 3):
        raise ConfigError(
            "--task",
            ref.reference,
            f"data loader returned a {type(loaded).__name__}; expected (x, y), (x, y, groups) "
            "or a fedge Dataset",
        )
    groups = loaded[2] if len(loaded) == 3 else None
    return dataset_from_arrays(
        ref.dataset,
        loaded[0],
        loaded[1],
        test_fraction=task.test_fraction,
        public_fraction=task.public_fraction,
        groups=groups,
        kind=task.kind,
    )
