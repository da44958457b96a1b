"""Each run option is declared once; the CLI flags, TOML keys, Flower keys and wire form derive
from that declaration, and none of them has a key the declaration lacks."""

import tomllib
from pathlib import Path

import click
import pytest
import typer.main

from fedge.app.config import RunConfig, option_names
from fedge.cli.main import app
from fedge.coordinator.config import CoordinatorConfig
from fedge.errors import ConfigError
from fedge.gateway.config import GatewayConfig
from fedge.options import declared_options

REPO = Path(__file__).resolve().parents[2]
DECLARED = set(option_names())
#: Flags of each command that are not run options: where its output goes, how it reaches the
#: coordinator, how the options are layered.
NOT_RUN_OPTIONS = {
    "simulate": {"config", "out", "resume", "device-state-root", "sweep", "help"},
    "run start": {"config", "set", "coordinator", "operator", "insecure", "help"},
}


def _flags(*path: str) -> set[str]:
    command: click.Command = typer.main.get_command(app)
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    names = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.add(param.opts[0].removeprefix("--"))
    return names


@pytest.mark.parametrize(
    ("path", "command"), [(("simulate",), "simulate"), (("run", "start"), "run")]
)
def test_cli_flags_are_exactly_the_declared_options_of_the_command(
    path: tuple[str, ...], command: str
) -> None:
    flags = _flags(*path) - NOT_RUN_OPTIONS[" ".join(path)]
    assert flags <= DECLARED, f"flags without a declaration: {flags - DECLARED}"
    offered = {
        f.name.replace("_", "-")
        for f, spec in declared_options(RunConfig)
        if command in spec.commands
    }
    assert flags == offered


def test_every_declared_option_has_help_and_a_toml_key() -> None:
    for f, spec in declared_options(RunConfig):
        assert spec.help.strip(), f.name
        key = f.name.replace("_", "-")
        default = RunConfig().to_dict()[f.name]
        if default is not None:  # a TOML key takes the declared default back unchanged
            assert RunConfig.from_mapping({key: default}).to_dict()[f.name] == default
    with pytest.raises(ConfigError, match="is not a known option"):
        RunConfig.from_mapping({"colour": "red"})


def test_flower_run_config_keys_are_declared() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    keys = set(pyproject["tool"]["flwr"]["app"]["config"]) - {"out"}
    assert keys <= DECLARED, f"pyproject keys without a declaration: {keys - DECLARED}"
    values = {k: v for k, v in pyproject["tool"]["flwr"]["app"]["config"].items() if k != "out"}
    RunConfig.from_run_config(values)  # and every value is valid


def test_wire_form_keys_are_declared_and_round_trip() -> None:
    config = RunConfig(clients=3, partition="shards:2", seed=9).replace(dp_noise=1.0)
    wire = config.to_run_config()
    assert set(wire) <= DECLARED
    assert RunConfig.from_run_config(wire) == config


def test_help_shows_every_default() -> None:
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    by_name = {p.name: p for p in command.params}
    for f, spec in declared_options(RunConfig):
        if "simulate" in spec.commands:
            assert by_name[f.name].show_default not in (None, False), f.name
    for own in ("out", "config", "resume", "device_state_root"):  # the command's own options
        assert by_name[own].help, own


@pytest.mark.parametrize(
    ("cls", "table"), [(CoordinatorConfig, "coordinator"), (GatewayConfig, "gateway")]
)
def test_server_config_keys_are_declared_with_help(cls: type, table: str) -> None:
    declared = {f.name for f, _ in declared_options(cls)}
    from dataclasses import fields

    assert declared == {f.name for f in fields(cls)}, f"{table}.toml keys without a declaration"
    for f, spec in declared_options(cls):
        assert spec.help.strip(), f.name


def test_server_config_ranges_come_from_the_declaration() -> None:
    with pytest.raises(ConfigError, match="max-workers: 0 must be an integer >= 1"):
        GatewayConfig(max_workers=0)
    with pytest.raises(ConfigError, match=r"wait-for-devices-seconds: -1\.0 must be positive"):
        CoordinatorConfig(wait_for_devices_seconds=-1.0)
