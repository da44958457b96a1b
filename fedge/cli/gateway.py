"""``fedge gateway``: run a site gateway between the cloud coordinator and a site's devices."""

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.common import (
    CoordinatorOption,
    EnrollAddressOption,
    EnrollNameOption,
    command_group,
    console,
    fail,
    log_fedge_info,
    require_extra,
    stop_on_signals,
)
from fedge.errors import FedgeError

__all__ = ["app"]

app = command_group("The site gateway: a device to the cloud, a coordinator to its site.")


@app.command("start")
def start_command(
    config: Annotated[Path, typer.Option("--config", help="gateway.toml")] = Path("gateway.toml"),
    coordinator: CoordinatorOption = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Enrol first with this gateway token (`fedge fleet token create --gateway "
            "--site NAME`) when state-dir is not enrolled."
        ),
    ] = None,
    name: EnrollNameOption = "",
    enroll_address: EnrollAddressOption = None,
) -> None:
    """Serve a site's devices (fleet, releases, enrolment) and its share of cloud rounds.

    With --token an unenrolled state-dir is enrolled with the cloud first, so one command
    brings a gateway up; afterwards `fedge gateway start --config gateway.toml` is enough.
    """
    require_extra("server", "the site gateway")
    from fedge.gateway.config import load_gateway_config
    from fedge.gateway.server import Gateway

    log_fedge_info()
    try:
        gateway = Gateway(load_gateway_config(config))
        ports = gateway.start(
            coordinator=coordinator, token=token, name=name, enroll_address=enroll_address
        )
    except (FedgeError, OSError) as err:
        fail(str(err))
    stop_on_signals(gateway.stop, saying="stopping the gateway")
    identity = gateway.identity
    assert identity is not None
    console.print(
        f"gateway {identity.device_id} of site {identity.site}: devices on port "
        f"{ports['fleet']}, enrolment on port {ports['enroll']}, cloud at "
        f"{identity.coordinator}, state in {gateway.config.state_dir}",
        soft_wrap=True,
        markup=False,
    )
    fatal = gateway.wait()
    if fatal:
        gateway.stop()
        fail(fatal)
