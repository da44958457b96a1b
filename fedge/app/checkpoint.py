"""fedge checkpoints: the global model's weights with what is needed to rebuild it."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedge.errors import FedgeError
from fedge.models import get_model

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

_FORMAT = "fedge-checkpoint"
_FORMAT_VERSION = 1


class CheckpointError(FedgeError):
    """A file is missing, unreadable or not a fedge checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """A global model after ``server_round`` rounds of run configuration ``config``."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    dataset: str
    server_round: int
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]

    def build_model(self) -> nn.Module:
        """The model with the checkpoint's weights, in eval mode."""
        model = get_model(self.model, input_shape=self.input_shape, num_classes=self.num_classes)
        model.load_state_dict(self.state_dict)
        return model.eval()


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
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a fedge checkpoint; :class:`CheckpointError` says what is wrong otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a fedge checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a fedge checkpoint (no 'format': {_FORMAT!r})")
    if payload.get("format_version") != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')!r}, "
            f"this fedge reads {_FORMAT_VERSION}"
        )
    return Checkpoint(
        model=str(payload["model"]),
        input_shape=tuple(int(d) for d in payload["input_shape"]),
        num_classes=int(payload["num_classes"]),
        dataset=str(payload["dataset"]),
        server_round=int(payload["server_round"]),
        state_dict=dict(payload["state_dict"]),
        config=dict(payload["config"]),
    )
