"""``fedge release build --publish-percent P``: the fresh build goes out to a P% canary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedge.app.checkpoint import Checkpoint, save_checkpoint
from fedge.app.training import LocalTraining, train
from fedge.cli.main import app
from fedge.data import get_dataset
from fedge.files import file_sha256
from fedge.models import get_model

from ..conftest import Fleet

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small digits teacher (one epoch: the test checks publishing, not accuracy)."""
    data = get_dataset("digits")
    torch.manual_seed(0)
    net = get_model("cnn-small", input_shape=data.input_shape, num_classes=data.num_classes)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    train(net, x, y, local=LocalTraining(epochs=1, batch_size=32, lr=0.05, momentum=0.9))
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    save_checkpoint(
        path,
        Checkpoint(
            model="cnn-small",
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            dataset=data.name,
            server_round=1,
            state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
            config={},
        ),
    )
    return path


def test_build_publishes_to_a_canary_percentage(
    checkpoint: Path, tmp_path: Path, fleet: Fleet
) -> None:
    out = tmp_path / "build"
    args = ["release", "build", "--checkpoint", str(checkpoint), "--out", str(out)]
    result = runner.invoke(
        app, [*args, "--epochs", "1", "--publish-percent", "34", *fleet.operator_args]
    )
    assert result.exit_code == 0, result.output
    assert "published release 1" in result.output and "to 34%" in result.output
    store = fleet.coordinator.releases
    (info,) = store.list_releases()
    assert (info.version, info.percent, info.withdrawn) == (1, 34, False)
    manifest = store.signed(1).manifest
    assert manifest.sha256 == file_sha256(out / "model.onnx")
    assert manifest.name == "digits" and manifest.profile == "cpu-small"
    assert "student_int8.accuracy" in manifest.report


@pytest.mark.parametrize("percent", ["0", "101", "-5"])
def test_a_bad_publish_percent_is_refused_before_building(
    checkpoint: Path, tmp_path: Path, percent: str
) -> None:
    out = tmp_path / "build"
    result = runner.invoke(
        app,
        [
            *("release", "build", "--checkpoint", str(checkpoint), "--out", str(out)),
            *("--publish-percent", percent),
        ],
    )
    assert result.exit_code == 2, result.output
    assert f"--publish-percent: {percent} must be in (0, 100]" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing built, nothing published
