"""``fedge coordinator start``: run the coordinator (fleet + control services)."""

from pathlib import Path
from typing import Annotated, Any

import typer

from fedge.cli.common import (
    command_group,
    console,
    err_console,
    fail,
    require_extra,
    stop_on_signals,
)
from fedge.errors import FedgeError

__all__ = ["app"]

app = command_group("The coordinator process.")


@app.command("start")
def start_command(
    config: Annotated[Path, typer.Option("--config", help="coordinator.toml")] = Path(
        "coordinator.toml"
    ),
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS and no device identity (test networks only).")
    ] = False,
) -> None:
    """Serve the fleet and control services until interrupted (SIGINT/SIGTERM)."""
    require_extra("server", "the coordinator")
    from fedge.coordinator.config import load_coordinator_config
    from fedge.coordinator.server import Coordinator

    overrides: dict[str, Any] = {"insecure": True} if insecure else {}
    if insecure:
        err_console.print("[bold yellow]WARNING:[/] --insecure: no TLS, no device identity")
    try:
        coordinator = Coordinator(load_coordinator_config(config, **overrides))
        ports = coordinator.start()
    except (FedgeError, OSError) as err:
        fail(str(err))
    stop_on_signals(coordinator.stop, saying="stopping (a running run resumes on restart)")
    console.print(
        f"coordinator: fleet+control on port {ports['fleet']}, enrolment on port "
        f"{ports['enroll']}, state in {coordinator.config.state_dir}",
        soft_wrap=True,
    )
    if coordinator.console is not None:
        login = "; `fedge console` prints a login link"
        login = login if coordinator.console.login_required else ""
        console.print(f"console: {coordinator.console.url}{login}", soft_wrap=True, markup=False)
    if "metrics" in ports:
        host = coordinator.config.metrics_address.rpartition(":")[0]
        console.print(f"metrics: http://{host}:{ports['metrics']}/metrics", soft_wrap=True)
    coordinator.wait()
