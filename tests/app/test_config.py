"""RunConfig validation, TOML loading and the Flower run-config round trip."""

import re
from pathlib import Path

import pytest

from fedge.app.config import RunConfig
from fedge.errors import ConfigError
from fedge.options import load_options_file


def test_defaults_are_the_documented_ones() -> None:
    cfg = RunConfig()
    assert (cfg.dataset, cfg.model, cfg.clients, cfg.rounds) == ("mnist-5k", "fedavg-cnn", 10, 10)
    assert (cfg.partition, cfg.strategy, cfg.runtime, cfg.seed) == ("iid", "fedavg", "local", 0)


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"fraction": 0.0}, "--fraction"),
        ({"fraction": 1.5}, "--fraction"),
        ({"clients": 0}, "--clients"),
        ({"rounds": 0}, "--rounds"),
        ({"lr": -1.0}, "--lr"),
        ({"batch_size": 0}, "--batch-size"),
        ({"local_epochs": 0}, "--local-epochs"),
        ({"dataset": "nope"}, "--dataset"),
        ({"model": "nope"}, "--model"),
        ({"strategy": "nope"}, "--strategy"),
        ({"runtime": "nope"}, "--runtime"),
        ({"partition": "dirichlet:"}, "--partition"),
        ({"momentum": 1.0}, "--momentum"),
        ({"device": "gpu"}, "--device"),
        ({"device": "cuda:x"}, "--device"),
        ({"device": "cpu:0"}, "--device"),
    ],
)
def test_bad_values_name_the_option_and_value(changes: dict, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    assert info.value.option == option
    assert str(info.value).startswith(option)
    assert repr(next(iter(changes.values()))) in str(info.value)


def test_unknown_names_list_the_valid_choices() -> None:
    with pytest.raises(ConfigError, match="fedavg, fedbn, fedmedian"):
        RunConfig(strategy="fedsgd")


def test_from_mapping_accepts_dashes_and_coerces_numbers() -> None:
    cfg = RunConfig.from_mapping({"local-epochs": 2, "lr": 1, "batch_size": 8.0})
    assert cfg.local_epochs == 2 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.batch_size == 8 and isinstance(cfg.batch_size, int)


@pytest.mark.parametrize(
    ("values", "option"),
    [
        ({"clients": "ten"}, "--clients"),
        ({"clients": 2.5}, "--clients"),
        ({"lr": True}, "--lr"),
        ({"dataset": 3}, "--dataset"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_from_mapping_rejects_wrong_types_and_unknown_keys(values: dict, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(values)
    assert info.value.option == option


def test_run_config_round_trip() -> None:
    cfg = RunConfig(clients=3, partition="shards:2", seed=9)
    assert RunConfig.from_run_config({**cfg.to_run_config(), "out": "x"}) == cfg


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[simulate]\nclients = 4\npartition = "dirichlet:0.3"\n')
    cfg = RunConfig.from_mapping(load_options_file(path))
    assert cfg.clients == 4 and cfg.partition == "dirichlet:0.3"
    path.write_text("clients = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_options_file(path)
    with pytest.raises(ConfigError, match="is not a file"):
        load_options_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"runtime": "grpc"}, "is for simulations (local, ray)"),
        ({"runtime": "ray", "device": "cuda:1"}, "Ray gives each client its own: use cuda"),
        ({"local_dp_noise": 1.0}, "cannot run local DP-SGD"),
    ],
)
def test_a_cuda_device_is_refused_where_the_run_cannot_use_it(
    changes: dict[str, object], reason: str
) -> None:
    device = str(changes.get("device", "cuda"))
    others = {k: v for k, v in changes.items() if k != "device"}
    with pytest.raises(ConfigError, match=re.escape(reason)) as info:
        RunConfig(device=device).replace(**others)
    assert info.value.option == "--device"
    # The same runs on the CPU, and cuda where nothing stands in the way, are valid.
    RunConfig().replace(**others)
    assert RunConfig(device="cuda:1").device == "cuda:1"
