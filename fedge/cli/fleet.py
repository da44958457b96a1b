"""``fedge fleet``: enrolment tokens, the device list, revocation (operator commands)."""

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from fedge.cli._control import CoordinatorOpt, InsecureOpt, OperatorOpt, call_control
from fedge.cli.common import command_group, console
from fedge.v1 import control_pb2 as pb

__all__ = ["app"]

app = command_group("The fleet of devices.")
token_app = command_group("One-time enrolment tokens.")
app.add_typer(token_app, name="token")


def _ago(unix: float) -> str:
    if unix <= 0:
        return "never"
    seconds = max(0.0, dt.datetime.now(dt.UTC).timestamp() - unix)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


@token_app.command("create")
def token_create(
    ttl: Annotated[float, typer.Option(help="Seconds the token stays valid.")] = 3600.0,
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Print a one-time token for `fedge edge enroll`."""
    response = call_control(
        coordinator,
        operator,
        insecure,
        lambda stub: stub.CreateEnrollToken(
            pb.CreateEnrollTokenRequest(ttl_seconds=ttl), timeout=30
        ),
    )
    console.print(response.token, soft_wrap=True, highlight=False)


@app.command("ls")
def ls_command(
    coordinator: CoordinatorOpt = None, operator: OperatorOpt = None, insecure: InsecureOpt = False
) -> None:
    """List devices: last seen, state, version, privacy spent (ε)."""
    response = call_control(
        coordinator,
        operator,
        insecure,
        lambda stub: stub.ListDevices(pb.ListDevicesRequest(), timeout=30),
    )
    table = Table(title="fedge fleet")
    for column in ("device", "name", "node", "state", "last seen", "version", "privacy spent (ε)"):
        table.add_column(column)
    for d in response.devices:
        eps = f"{d.privacy_spent:.3f}" if d.HasField("privacy_spent") else "-"
        table.add_row(
            d.device_id, d.name, str(d.node_id), d.state, _ago(d.last_seen_unix), d.version, eps
        )
    console.print(table)


@app.command("revoke")
def revoke_command(
    device: Annotated[str, typer.Argument(help="Device id (from `fedge fleet ls`).")],
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Revoke a device: its next call is refused."""
    call_control(
        coordinator,
        operator,
        insecure,
        lambda stub: stub.RevokeDevice(pb.RevokeDeviceRequest(device_id=device), timeout=30),
    )
    console.print(f"revoked {device}")
