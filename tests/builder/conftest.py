"""Fixtures of the release-pipeline tests: a small digits teacher, one built release, and a
target whose engine is not installed."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from fedge.app.checkpoint import Checkpoint, save_checkpoint
from fedge.app.training import LocalTraining, train
from fedge.builder import DistillSettings, ReleaseReport, ReleaseSettings, build_release
from fedge.builder.targets import Target, list_targets, register_target
from fedge.builder.transfer import TransferSet
from fedge.data import Dataset, get_dataset
from fedge.inference.runners import Runner
from fedge.models import get_model

#: Few epochs and latency runs: the tests check behaviour, the benchmark checks the numbers.
FAST = ReleaseSettings(distill=DistillSettings(epochs=4, copies=1), latency_runs=20)


@pytest.fixture
def fast() -> ReleaseSettings:
    """Release settings that build in seconds."""
    return FAST


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """8x8 digits: 1,257 train / 180 public / 360 test samples."""
    return get_dataset("digits")


def train_teacher(dataset: Dataset, model: str, *, epochs: int = 8) -> Checkpoint:
    """A teacher trained centrally (standing in for a federated global model)."""
    torch.manual_seed(0)
    net = get_model(model, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    train(net, x, y, local=LocalTraining(epochs=epochs, batch_size=32, lr=0.05, momentum=0.9))
    return Checkpoint(
        model=model,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        dataset=dataset.name,
        server_round=3,
        state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
        config={},
    )


@pytest.fixture(scope="session")
def make_teacher() -> Callable[..., Checkpoint]:
    """:func:`train_teacher`, for tests that need a teacher of another dataset or model."""
    return train_teacher


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Path:
    """A fedge checkpoint of a ``cnn-small`` digits teacher."""
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    save_checkpoint(path, train_teacher(digits, "cnn-small"))
    return path


@pytest.fixture(scope="session")
def release(
    tmp_path_factory: pytest.TempPathFactory, teacher_path: Path
) -> tuple[Path, ReleaseReport]:
    """One release built from the digits teacher (shared by the read-only tests)."""
    out = tmp_path_factory.mktemp("rel") / "release"
    report = build_release(checkpoint=teacher_path, out_dir=out, settings=FAST)
    return out, report


class AbsentRuntimeTarget(Target):
    """A target whose engine package does not exist: how a missing extra looks to fedge."""

    name = "test-absent"
    extension = ".absent"
    engine_modules = ("fedge_test_no_such_engine",)
    extra = "absent"

    def convert(self, model: nn.Module, transfer: TransferSet, path: Path, precision: str) -> None:
        raise AssertionError("unreachable: the engine is not installed")

    def load(self, path: Path, *, threads: int = 1) -> Runner:
        self.require(export=False)
        raise AssertionError("unreachable: the engine is not installed")


if "test-absent" not in list_targets():
    register_target()(AbsentRuntimeTarget)
