"""Help text: bracketed notes (defaults, environment variables) are shown, not read as markup."""

import pytest
from typer.testing import CliRunner

from fedge.cli.main import app


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["run", "ls"], "[env var: FEDGE_COORDINATOR]"),
        (["fleet", "ls"], "[env var: FEDGE_OPERATOR]"),
        (["edge", "start"], "with fedge[train]"),
        (["edge", "make-data"], "[required]"),
        (["simulate"], "In [0, 1)"),
    ],
)
def test_help_keeps_bracketed_text(command: list[str], shown: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert shown in result.output
    assert "\\[" not in result.output  # no escape shown as text
