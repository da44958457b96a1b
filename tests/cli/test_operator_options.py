"""Every operator command takes ``--coordinator``, ``--operator`` and ``--insecure`` (with
``FEDGE_COORDINATOR`` and ``FEDGE_OPERATOR``), declared once, and reaches the coordinator
they name."""

from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from fedge.cli.main import app

runner = CliRunner()
OPERATOR_COMMANDS = {
    "console", "fleet drift", "fleet ls", "fleet revoke", "fleet token create",
    "privacy report", "release abort", "release build", "release key", "release ls",
    "release pause", "release promote", "release publish", "release resume", "release rollback",
    "release status", "run ls", "run start", "run status", "run stop",
}  # fmt: skip


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    if isinstance(command, click.Group):
        found: dict[str, click.Command] = {}
        for name, sub in command.commands.items():
            found.update(_commands(sub, (*path, name)))
        return found
    return {" ".join(path): command}


def test_each_operator_command_has_the_three_options_and_their_variables() -> None:
    commands = _commands(typer.main.get_command(app))
    takes_operator = {
        name for name, c in commands.items() if any(p.name == "operator" for p in c.params)
    }
    assert takes_operator == OPERATOR_COMMANDS
    for name in OPERATOR_COMMANDS:
        params = {p.name: p for p in commands[name].params}
        assert params["coordinator"].opts == ["--coordinator"], name
        assert params["coordinator"].envvar == "FEDGE_COORDINATOR", name
        assert params["operator"].opts == ["--operator"], name
        assert params["operator"].envvar == "FEDGE_OPERATOR", name
        assert params["insecure"].opts == ["--insecure"] and params["insecure"].default is False
        assert "control" not in params, name


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_the_options_reach_the_command(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "no-credential"
    if how == "flags":
        args = ["--coordinator", "127.0.0.1:1", "--operator", str(missing)]
        env = {}
    else:
        args, env = [], {"FEDGE_COORDINATOR": "127.0.0.1:1", "FEDGE_OPERATOR": str(missing)}
    result = runner.invoke(app, ["release", "ls", *args], env=env)
    assert result.exit_code == 2, result.output
    assert f"--operator: '{missing}' lacks {missing}/ca.pem" in result.output

    result = runner.invoke(app, ["run", "status", "3", "--insecure", *args], env=env)
    assert result.exit_code == 2, result.output
    assert "--insecure: talking to the coordinator without TLS" in result.output
    assert "cannot reach the coordinator at 127.0.0.1:1" in result.output
