"""Distillation and calibration only ever see server-held public (or synthetic) data."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedge.builder import (
    DistillResult,
    DistillSettings,
    ReleaseSettings,
    SoftLabelDistiller,
    TransferSet,
    build_release,
    register_distiller,
)
from fedge.builder.distill import transfer_pool
from fedge.builder.pipeline import transfer_data
from fedge.data import Dataset, parse_partition, partition_indices


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(x, dtype=np.float32)}


class RecordingDistiller(SoftLabelDistiller):
    """The real distiller, remembering the transfer set the pipeline handed it."""

    seen: list[TransferSet] = []  # noqa: RUF012  (shared on purpose: the registry builds anew)

    def distill(
        self,
        *,
        teacher: nn.Module,
        student: nn.Module,
        transfer: TransferSet,
        settings: DistillSettings,
    ) -> DistillResult:
        RecordingDistiller.seen.append(transfer)
        return super().distill(
            teacher=teacher, student=student, transfer=transfer, settings=settings
        )


register_distiller("test-recording", RecordingDistiller)


def test_the_data_provider_returns_the_public_split_and_no_client_row(digits: Dataset) -> None:
    transfer = transfer_data(digits)
    assert _rows(transfer.x) == _rows(digits.x_public)
    assert not _rows(transfer.x) & _rows(digits.x_train)
    parts = partition_indices(digits.y_train, 4, parse_partition("iid"), seed=0)
    for part in parts:
        assert not _rows(transfer.x) & _rows(digits.x_train[part])


def test_build_release_distils_on_public_data_only(
    tmp_path: Path, teacher_path: Path, digits: Dataset, fast: ReleaseSettings
) -> None:
    RecordingDistiller.seen.clear()
    settings = ReleaseSettings(
        distill=fast.distill, distiller="test-recording", latency_runs=fast.latency_runs
    )
    build_release(checkpoint=teacher_path, out_dir=tmp_path / "rel", settings=settings)
    (given,) = RecordingDistiller.seen
    assert len(given.x) == len(digits.x_public)
    assert _rows(given.x) == _rows(digits.x_public)
    assert not _rows(given.x) & _rows(digits.x_train)
    np.testing.assert_array_equal(given.y, digits.y_public)


def test_the_augmented_pool_is_derived_from_the_transfer_set_alone(digits: Dataset) -> None:
    transfer = transfer_data(digits)
    settings = DistillSettings(copies=3)
    x = torch.from_numpy(transfer.x)
    pool_x, pool_y = transfer_pool(x, torch.from_numpy(transfer.y), settings, torch.Generator())
    assert len(pool_x) == 4 * len(transfer.x)
    # The first block is the public split itself; the rest are new (synthetic) samples.
    assert _rows(pool_x[: len(x)].numpy()) == _rows(transfer.x)
    synthetic = _rows(pool_x[len(x) :].numpy())
    assert not synthetic & _rows(digits.x_train)
    assert not synthetic & _rows(transfer.x)
    # Mixed samples lose their hard label; the rest keep their source's.
    assert (pool_y[: len(x)] == torch.from_numpy(transfer.y)).all()
    assert (pool_y == -1).any()
