"""The ``fedge`` Typer application: registers every command group."""

import typer

from fedge.cli.certs import app as certs_app
from fedge.cli.console import console_command
from fedge.cli.coordinator import app as coordinator_app
from fedge.cli.edge import app as edge_app
from fedge.cli.fleet import app as fleet_app
from fedge.cli.gateway import app as gateway_app
from fedge.cli.new import new_command
from fedge.cli.privacy import app as privacy_app
from fedge.cli.release import app as release_app
from fedge.cli.run import app as run_app
from fedge.cli.simulate import simulate_command
from fedge.log import route_flower_logs

__all__ = ["app"]

app = typer.Typer(
    name="fedge",
    help="fedge: hybrid edge-cloud federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",  # as command_group
)
app.command("simulate")(simulate_command)
app.command("console")(console_command)
app.command("new")(new_command)
app.add_typer(certs_app, name="certs")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(edge_app, name="edge")
app.add_typer(gateway_app, name="gateway")
app.add_typer(fleet_app, name="fleet")
app.add_typer(run_app, name="run")
app.add_typer(privacy_app, name="privacy")
app.add_typer(release_app, name="release")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    """fedge: hybrid edge-cloud federated learning."""
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    route_flower_logs()
