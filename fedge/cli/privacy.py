"""``fedge privacy``: read the privacy budget of a finished run."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedge.cli.common import command_group, console, fail
from fedge.errors import FedgeError

__all__ = ["app"]

app = command_group("Privacy budgets: what a run has spent.")


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="The --out directory of a finished run.")],
) -> None:
    """Print the privacy table of a finished run: epsilon and accuracy per round."""
    from fedge.app.results import read_results
    from fedge.privacy.report import privacy_report

    try:
        report = privacy_report(read_results(run_dir))
    except (FedgeError, ValueError, KeyError) as err:
        fail(str(err))
    table = Table(title=f"privacy: {run_dir}")
    for column in ("round", "accuracy", "epsilon", "device eps (max)", "clients", "refused"):
        table.add_column(column, justify="right")
    for r in report.rounds:
        table.add_row(
            str(r.round),
            f"{r.accuracy:.4f}",
            "-" if r.epsilon is None else f"{r.epsilon:.4f}",
            "-" if r.device_epsilon_max is None else f"{r.device_epsilon_max:.4f}",
            str(r.sampled),
            str(r.refused),
        )
    console.print(table)
    for line in report.summary_lines():
        console.print(line)
