"""The ``fedge`` Typer application: registers every command group."""

import typer

from fedge.cli.simulate import simulate_command

__all__ = ["app"]

app = typer.Typer(
    name="fedge",
    help="fedge: hybrid edge-cloud federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("simulate")(simulate_command)


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
