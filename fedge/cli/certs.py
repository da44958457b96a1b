"""``fedge certs``: create the coordinator's CA, server, enrolment and operator credentials."""

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.common import command_group, console, fail
from fedge.errors import FedgeError

__all__ = ["app"]

app = command_group("Coordinator certificates.")


@app.command("init")
def init_command(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the PKI.")] = Path(
        "certs"
    ),
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A name or IP devices use to reach the coordinator (repeat)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing PKI.")] = False,
) -> None:
    """Create a CA, the server and enrolment certificates and an operator credential."""
    from fedge.coordinator.pki import init_certs

    try:
        files = init_certs(directory, hosts=tuple(host or ()), force=force)
    except (FedgeError, OSError) as err:
        fail(str(err))
    console.print(f"wrote {len(files)} files to {directory}/ (keep ca.key secret)")
    console.print(f"operator credential: {directory / 'operator'}/ (use with --operator)")
