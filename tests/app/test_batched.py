"""Many clients per kernel: batched training gives the sequential result, and falls back
(saying why) where it cannot."""

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fedge.app.batched import plan_batching, train_together
from fedge.app.config import RunConfig
from fedge.app.training import LocalTraining, train
from fedge.data import get_dataset
from fedge.errors import ConfigError
from fedge.models import get_model, register_model
from fedge.simulation import simulate


@register_model("test-batchnorm-mlp", images_only=False, replace=True)
def _batchnorm_mlp(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(input_shape[-1], 8), nn.BatchNorm1d(8), nn.Linear(8, num_classes)
    )


def _clients(dataset: str, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ds = get_dataset(dataset)
    clients, start = [], 0
    for size in sizes:
        x, y = ds.x_train[start : start + size], ds.y_train[start : start + size]
        clients.append((torch.from_numpy(x), torch.from_numpy(y)))
        start += size
    return clients


@pytest.mark.parametrize(
    ("dataset", "model", "mu"),
    [("digits", "mlp", 0.0), ("digits", "cnn-small", 0.1), ("digits", "dp-cnn", 0.0)],
)
def test_batched_training_is_sequential_training(dataset: str, model: str, mu: float) -> None:
    ds = get_dataset(dataset)
    torch.manual_seed(0)
    net = get_model(model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    # Unequal clients: different step counts and a short last batch each.
    clients = _clients(dataset, [20, 37, 37, 52, 9, 70])
    seeds = [11, 12, 13, 14, 15, 16]
    local = LocalTraining(epochs=2, batch_size=16, lr=0.02, momentum=0.9, proximal_mu=mu)
    states, losses = train_together(net, clients, local=local, seeds=seeds, workers=2)
    for (x, y), seed, state, loss in zip(clients, seeds, states, losses, strict=True):
        alone = copy.deepcopy(net)
        expected_loss = train(alone, x, y, local=local, seed=seed)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-4, atol=1e-5)


def test_a_client_whose_weights_change_does_not_move_another() -> None:
    ds = get_dataset("digits")
    net = get_model("mlp", input_shape=ds.input_shape, num_classes=ds.num_classes)
    short, long_ = _clients("digits", [8, 80])
    local = LocalTraining(epochs=1, batch_size=8, lr=0.05, momentum=0.9)
    together, _ = train_together(net, [short, long_, short], local=local, seeds=[1, 2, 1])
    # The short client stopped after one step while the long one took ten more: momentum
    # must not carry it on.
    alone = copy.deepcopy(net)
    train(alone, *short, local=local, seed=1)
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(together[0][name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(together[2][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"runtime": "ray"}, "ray runtime"),
        ({"local_dp_noise": 1.0}, "local DP-SGD"),
        ({"precision": "bf16"}, "bf16"),
        ({"device": "cuda"}, "--device cuda: batched training runs on the CPU only"),
        ({"model": "test-batchnorm-mlp"}, "buffers"),
        ({"model": "cnn-small", "dataset": "digits"}, "convolutions"),
        ({"batch_clients": "off"}, "--batch-clients off"),
    ],
)
def test_what_cannot_batch_falls_back_and_says_why(changes: dict[str, object], reason: str) -> None:
    base = RunConfig(dataset="breast-cancer", model="mlp", clients=4, rounds=1)
    plan = plan_batching(base.replace(**changes))
    assert not plan.batched
    assert reason in plan.reason
    assert plan.describe().startswith("client training: sequential (")
    assert plan_batching(base).batched


def test_on_with_an_obstacle_is_an_error_naming_it() -> None:
    config = RunConfig(dataset="breast-cancer", model="test-batchnorm-mlp", batch_clients="on")
    with pytest.raises(ConfigError, match=r"--batch-clients.*cannot batch.*buffers"):
        plan_batching(config)
    on = RunConfig(dataset="digits", model="cnn-small", batch_clients="on")
    assert plan_batching(on).batched  # convolutions batch when asked


def test_a_batched_run_is_the_sequential_run(tmp_path: Path) -> None:
    config = RunConfig.from_mapping(
        {"dataset": "synthetic:1,1", "clients": 300, "fraction": 0.05, "rounds": 2}
        | {"lr": 0.01, "release": False}
    )
    batched = simulate(config, out_dir=tmp_path / "on", device_state_root=tmp_path / "d")
    sequential = simulate(config.replace(batch_clients="off"), device_state_root=tmp_path / "d")
    assert config.model == "mlp"
    for a, b in zip(batched.rounds, sequential.rounds, strict=True):
        assert a.sampled == b.sampled == 15
        assert a.accuracy == pytest.approx(b.accuracy, abs=0.005)
        assert a.loss == pytest.approx(b.loss, rel=1e-3)
    report = json.loads((tmp_path / "on" / "results.json").read_text())
    assert report["client_training"]["batched"] is True
    assert sequential.notes["client_training"] == {
        "batched": False,
        "reason": "--batch-clients off",
    }
