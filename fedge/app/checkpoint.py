"""fedge checkpoints: the global model's weights with what is needed to rebuild it.

A checkpoint written by the round loop also holds what a resumed run needs to continue exactly
as an uninterrupted one: the strategy's server-side state (e.g. FedAdam's moments, central DP's
accountant; see :mod:`fedge.app.resume`), the global random generators, the records of the
rounds done so far (so ``results.json`` of a resumed run holds every round) and the run time.
Format version 1 files (model only) are still read; they resume with a fresh strategy.
"""

import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedge.errors import FedgeError
from fedge.files import atomic_write
from fedge.models import get_model

if TYPE_CHECKING:
    from fedge.app.config import RunConfig
    from fedge.data import Dataset

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "model_checkpoint",
    "save_checkpoint",
]

_FORMAT = "fedge-checkpoint"
_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


class CheckpointError(FedgeError):
    """A file is missing, unreadable or not a fedge checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """A global model after ``server_round`` rounds of run configuration ``config``.

    ``strategy_state`` and ``rng_state`` are ``None`` in a checkpoint that cannot be resumed
    exactly (format version 1, or written outside the round loop); ``rounds`` holds the round
    records (``dataclasses.asdict`` of :class:`~fedge.app.results.RoundRecord`) up to
    ``server_round``, and ``elapsed_seconds`` the run's training time until then.
    """

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    dataset: str
    server_round: int
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    strategy_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def build_model(self) -> nn.Module:
        """The model with the checkpoint's weights, in eval mode."""
        model = get_model(self.model, input_shape=self.input_shape, num_classes=self.num_classes)
        model.load_state_dict(self.state_dict)
        return model.eval()


def model_checkpoint(
    config: "RunConfig",
    model: nn.Module,
    dataset: "Dataset",
    *,
    server_round: int,
    **resume: Any,
) -> Checkpoint:
    """A checkpoint of a copy of ``model``'s weights (a model for ``dataset``) after
    ``server_round`` rounds of the run ``config``; ``resume`` holds the fields that let the run
    resume exactly, if any. The weights are copied to the CPU: a checkpoint loads anywhere."""
    return Checkpoint(
        model=config.model,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        dataset=config.dataset,
        server_round=server_round,
        state_dict={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        config=config.to_dict(),
        **resume,
    )


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "model": checkpoint.model,
        "input_shape": list(checkpoint.input_shape),
        "num_classes": checkpoint.num_classes,
        "dataset": checkpoint.dataset,
        "server_round": checkpoint.server_round,
        "state_dict": checkpoint.state_dict,
        "config": checkpoint.config,
        "strategy_state": checkpoint.strategy_state,
        "rng_state": checkpoint.rng_state,
        "rounds": checkpoint.rounds,
        "elapsed_seconds": checkpoint.elapsed_seconds,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, buffer.getvalue())


def _read_archive(path: Path) -> Any:
    """What ``torch.save`` wrote to ``path``, or :class:`CheckpointError` in one line.

    PyTorch's own errors for a damaged file run to several lines of advice about
    ``weights_only`` and filing an issue: none of it helps someone holding a bad file.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with path.open("rb") as file:
            head = file.read(len(_ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from err
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a fedge checkpoint (not a PyTorch archive)")
    try:
        with warnings.catch_warnings():  # the unpickler's advice about pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object
        raise CheckpointError(
            f"{path} is not a fedge checkpoint (it holds objects other than tensors and plain "
            "values, which fedge does not load)"
        ) from err
    except Exception as err:  # torch raises many types for a damaged archive
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt (PyTorch cannot read its archive: "
            f"{type(err).__name__})"
        ) from err


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a fedge checkpoint; :class:`CheckpointError` says what is wrong otherwise."""
    path = Path(path)
    payload = _read_archive(path)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a fedge checkpoint (no 'format': {_FORMAT!r})")
    if payload.get("format_version") not in _READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')!r}, "
            f"this fedge reads {', '.join(str(v) for v in _READABLE_VERSIONS)}"
        )
    _enter_task(dict(payload["config"]))
    return Checkpoint(
        model=str(payload["model"]),
        input_shape=tuple(int(d) for d in payload["input_shape"]),
        num_classes=int(payload["num_classes"]),
        dataset=str(payload["dataset"]),
        server_round=int(payload["server_round"]),
        state_dict=dict(payload["state_dict"]),
        config=dict(payload["config"]),
        strategy_state=payload.get("strategy_state"),
        rng_state=payload.get("rng_state"),
        rounds=list(payload.get("rounds") or []),
        elapsed_seconds=float(payload.get("elapsed_seconds") or 0.0),
    )


def _enter_task(config: dict[str, Any]) -> None:
    """Enter the checkpoint's task (if its run had one) into the registries, so that its
    model and data are found by name in this process too."""
    from fedge.tasks import load_task
    from fedge.tasks.loader import data_task

    if config.get("task"):
        load_task(str(config["task"]))
    elif config.get("data"):
        partition = str(config.get("partition", "iid"))
        group = partition.removeprefix("by:") if partition.startswith("by:") else None
        label, kind = str(config.get("label", "label")), str(config.get("kind") or "classification")
        data_task(str(config["data"]), label=label, group=group, kind=kind)
