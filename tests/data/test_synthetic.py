"""Synthetic(alpha, beta): generated per device, deterministic, and a population that costs
nothing until a device is sampled."""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from typer.testing import CliRunner

from fedge.app.config import RunConfig
from fedge.cli.main import app
from fedge.data import get_dataset
from fedge.data.population import population_of
from fedge.data.synthetic import SyntheticPopulation
from fedge.errors import ConfigError
from fedge.runtime import LocalGrid
from fedge.runtime.local import set_server_identity


def test_a_device_is_the_same_whatever_else_is_generated() -> None:
    population = SyntheticPopulation(1.0, 1.0, seed=3)
    x, y = population.device_data(99_999)
    population.device_data(5)  # another device in between changes nothing
    again_x, again_y = SyntheticPopulation(1.0, 1.0, seed=3).device_data(99_999)
    np.testing.assert_array_equal(x, again_x)
    np.testing.assert_array_equal(y, again_y)
    assert x.shape[1] == 60 and x.dtype == np.float32 and y.dtype == np.int64
    assert set(np.unique(y)) <= set(range(10))
    other, _ = SyntheticPopulation(1.0, 1.0, seed=4).device_data(99_999)
    assert other.shape != x.shape or not np.array_equal(other, x)


def test_device_sizes_follow_a_power_law_of_at_least_50() -> None:
    population = SyntheticPopulation(0.5, 0.5)
    sizes = np.array([population.device_size(k) for k in range(2000)])
    assert sizes.min() >= 50
    # lognormal(4, 2) + 50: median about e^4 + 50, a long tail far above it
    assert 80 < np.median(sizes) < 130
    assert sizes.max() > 20 * np.median(sizes)
    trained = len(population.device_data(7)[1])
    assert trained == sizes[7] - max(1, int(sizes[7] * 0.2))  # a fifth is the test share


def test_alpha_and_beta_make_devices_differ() -> None:
    same = SyntheticPopulation(0.0, 0.0)
    apart = SyntheticPopulation(5.0, 5.0)
    spread_same = np.std([same.device_data(k)[0].mean() for k in range(40)])
    spread_apart = np.std([apart.device_data(k)[0].mean() for k in range(40)])
    assert spread_apart > 2 * spread_same


def test_the_dataset_holds_test_and_public_splits_but_no_training_rows() -> None:
    dataset = get_dataset("synthetic:1,1")
    assert population_of(dataset) is not None
    assert dataset.input_shape == (60,) and dataset.num_classes == 10
    assert len(dataset.y_train) == 0
    assert 2000 < len(dataset.y_test) <= 200 * 50
    assert len(dataset.y_public) == 40 * 50


@pytest.mark.parametrize(
    "spec", ["synthetic:1", "synthetic:a,b", "synthetic:-1,1", "synthetic:1,1,x"]
)
def test_a_bad_synthetic_spec_names_the_option(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"--dataset.*ALPHA,BETA"):
        RunConfig.from_mapping({"dataset": spec})


def test_a_population_trains_an_mlp_unless_told_otherwise() -> None:
    assert RunConfig.from_mapping({"dataset": "synthetic:1,1"}).model == "mlp"
    assert RunConfig.from_mapping({"dataset": "mnist-5k"}).model == "fedavg-cnn"


def test_a_local_grid_makes_a_node_only_when_it_is_sent_a_message() -> None:
    set_server_identity(1)
    seen: list[int] = []

    def client_app(msg: Message, context: object) -> Message:
        seen.append(int(context.node_config["partition-id"]))  # type: ignore[attr-defined]
        return Message(RecordDict(), reply_to=msg)

    grid = LocalGrid(client_app, num_nodes=100_000)  # type: ignore[arg-type]
    assert len(grid.get_node_ids()) == 100_000  # type: ignore[arg-type]
    messages = [
        grid.create_message(RecordDict({"config": ConfigRecord()}), MessageType.TRAIN, n, "1")
        for n in (1, 50_000, 100_000)
    ]
    replies = list(grid.send_and_receive(messages))
    assert len(replies) == 3 and seen == [0, 49_999, 99_999]
    assert len(grid._contexts) == 3  # nothing kept for the 99,997 devices never sampled


def test_100_000_devices_run_and_a_fixed_dataset_refuses_more_clients_than_rows(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["simulate", "--dataset", "synthetic:1,1", "--clients", "100000", "--fraction"]
    args += ["0.0002", "--rounds", "2", "--no-release", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "client training: batched" in result.output
    report = json.loads((out / "results.json").read_text())
    assert [r["sampled"] for r in report["rounds"]] == [20, 20]
    assert report["client_training"]["batched"] is True
    refused = runner.invoke(app, ["simulate", "--clients", "10000", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2
    assert "more than the 3500 training samples of mnist-5k" in refused.output
    assert "synthetic" in refused.output


def test_a_population_is_split_by_device_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("simulate", "--dataset", "synthetic:1,1", "--partition", "dirichlet:0.5"),
            *("--out", str(tmp_path / "x")),
        ],
    )
    assert result.exit_code == 2
    assert "partitioned by device" in result.output
