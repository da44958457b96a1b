"""The transfer set: the server-held data a student is distilled and calibrated on.

Only the dataset's public split (``x_public``), disjoint from every client partition, and
synthetic samples derived from it (random shifts, rotations, scaling, mixup, noise) are ever
used. Client data (``x_train``) never enters the release pipeline: :func:`public_transfer_set`
is the one place the pipeline takes data from a :class:`~fedge.data.Dataset`.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from fedge.data import Dataset
from fedge.errors import CalibrationError

__all__ = ["Augmenter", "TransferSet", "augment_batch", "public_transfer_set"]

#: Label of a transfer sample whose hard label is unknown (only the teacher's soft label is used).
NO_LABEL = -1


@dataclass(frozen=True)
class TransferSet:
    """Samples (``N, *input_shape`` float32) and hard labels (int64, ``NO_LABEL`` if unknown)."""

    x: np.ndarray
    y: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or len(self.x) == 0:
            raise CalibrationError(
                f"the {self.source} transfer set is empty (shape {tuple(self.x.shape)}); "
                "distillation and int8 calibration need at least one sample"
            )
        if len(self.y) != len(self.x):
            raise CalibrationError(
                f"the {self.source} transfer set has {len(self.x)} samples but {len(self.y)} labels"
            )
        if not np.isfinite(self.x).all():
            raise CalibrationError(f"the {self.source} transfer set holds NaN or Inf values")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch axis."""
        return tuple(int(d) for d in self.x.shape[1:])

    def check_fits(self, input_shape: tuple[int, ...]) -> None:
        """:class:`CalibrationError` unless samples have the model's ``input_shape``."""
        if self.input_shape != tuple(input_shape):
            raise CalibrationError(
                f"the {self.source} transfer set has samples of shape {self.input_shape}, "
                f"the model takes {tuple(input_shape)}"
            )


def public_transfer_set(dataset: Dataset) -> TransferSet:
    """The server-held public split of ``dataset`` (never a client's training data)."""
    return TransferSet(
        x=np.ascontiguousarray(dataset.x_public, dtype=np.float32),
        y=np.asarray(dataset.y_public, dtype=np.int64),
        source=f"{dataset.name} public split",
    )


@dataclass(frozen=True)
class Augmenter:
    """Label-preserving random transforms plus mixup, for images (N,C,H,W) or tables (N,F).

    Images get a random affine warp (rotation, shift, scale); tables get Gaussian noise scaled
    to each feature's spread. A ``mixup`` fraction of each batch is replaced by convex mixes of
    two samples, whose hard label is unknown (the teacher's soft label still holds).
    """

    max_rotation: float = 15.0
    max_shift: float = 0.12
    scale: tuple[float, float] = (0.9, 1.1)
    noise: float = 0.05
    mixup: float = 0.25

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """An augmented copy of the batch ``(x, y)``; mixed samples get ``NO_LABEL``."""
        return augment_batch(x, y, self, generator)


def augment_batch(
    x: Tensor, y: Tensor, aug: Augmenter, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Apply ``aug`` to one batch (see :class:`Augmenter`)."""
    n = x.shape[0]
    if x.dim() == 4:
        x = _affine(x, aug, generator)
    std = x.std(dim=0, keepdim=True) if n > 1 else torch.ones_like(x[:1])
    x = x + aug.noise * std * torch.randn(x.shape, generator=generator)
    y = y.clone()
    mixed = torch.rand(n, generator=generator) < aug.mixup
    if mixed.any() and n > 1:
        partner = torch.randperm(n, generator=generator)
        lam = torch.rand(n, generator=generator).view(-1, *([1] * (x.dim() - 1)))
        blend = lam * x + (1 - lam) * x[partner]
        mask = mixed.view(-1, *([1] * (x.dim() - 1)))
        x = torch.where(mask, blend, x)
        y[mixed] = NO_LABEL
    return x, y


def _affine(x: Tensor, aug: Augmenter, generator: torch.Generator) -> Tensor:
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(aug.max_rotation)
    low, high = aug.scale
    scale = low + torch.rand(n, generator=generator) * (high - low)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * aug.max_shift * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
    # Fill outside the image with the background value (the minimum), not zero: normalized
    # images have a negative background.
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    warped = functional.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros")
    return warped + background
