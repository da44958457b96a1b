"""``fedge privacy``: read the privacy budget of a finished run.

``fedge privacy report RUN`` takes a coordinator run id (read through the control service, like
``fedge run status``) or the ``--out`` directory of a ``fedge simulate`` run.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedge.cli._control import Control, operator_command
from fedge.cli.common import command_group, console, fail, print_figures
from fedge.errors import FedgeError
from fedge.v1 import control_pb2 as pb

__all__ = ["app"]

app = command_group("Privacy budgets: what a run has spent.")


def _results(run: str, control: Control) -> tuple[str, dict[str, Any]]:
    path = Path(run)
    if path.is_dir():
        from fedge.app.results import read_results

        return str(path), read_results(path)
    if not run.isdigit():
        fail(f"RUN: {run!r} is neither a run id nor a directory with a results.json")
    response = control.call(
        lambda stub: stub.GetRunResults(pb.GetRunResultsRequest(run_id=int(run)), timeout=30)
    )
    return f"run {response.run_id}", json.loads(response.results_json)


@app.command("report")
@operator_command
def report_command(
    run: Annotated[
        str, typer.Argument(help="A coordinator run id, or the --out directory of a simulation.")
    ],
    control: Control = Control(),
) -> None:
    """Print the privacy table of a finished run: epsilon and accuracy per round."""
    from fedge.privacy.report import privacy_report

    try:
        title, results = _results(run, control)
        report = privacy_report(results)
    except (FedgeError, ValueError, KeyError) as err:
        fail(str(err))
    print_figures(
        f"privacy: {title}",
        ("round", "accuracy", "epsilon", "device eps (max)", "clients", "refused"),
        [
            (
                str(r.round),
                f"{r.accuracy:.4f}",
                "-" if r.epsilon is None else f"{r.epsilon:.4f}",
                "-" if r.device_epsilon_max is None else f"{r.device_epsilon_max:.4f}",
                str(r.sampled),
                str(r.refused),
            )
            for r in report.rounds
        ],
    )
    for line in report.summary_lines():
        console.print(line, soft_wrap=True, highlight=False)
