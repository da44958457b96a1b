"""Options and error handling shared by the operator commands (``fedge run``, ``fedge fleet``)."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer

from fedge.cli.common import err_console, fail
from fedge.errors import FedgeError

__all__ = ["CoordinatorOpt", "InsecureOpt", "OperatorOpt", "call_control"]

T = TypeVar("T")

CoordinatorOpt = Annotated[
    str | None,
    typer.Option(
        "--coordinator", help="HOST:PORT of the coordinator [env FEDGE_COORDINATOR, 127.0.0.1:7443]"
    ),
]
OperatorOpt = Annotated[
    Path | None,
    typer.Option("--operator", help="Operator credential dir [env FEDGE_OPERATOR, certs/operator]"),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="No TLS (only against an --insecure coordinator).")
]


def call_control(
    coordinator: str | None,
    operator: Path | None,
    insecure: bool,
    fn: Callable[..., T],
) -> T:
    """Run ``fn(stub)`` against the control service; errors become one line, exit 2."""
    from fedge.coordinator.client import DEFAULT_COORDINATOR, DEFAULT_OPERATOR_DIR, connect_control

    if insecure:
        err_console.print(
            "[bold yellow]WARNING:[/] --insecure: talking to the coordinator without TLS"
        )
    try:
        channel, stub = connect_control(
            coordinator or DEFAULT_COORDINATOR,
            operator_dir=operator or DEFAULT_OPERATOR_DIR,
            insecure=insecure,
        )
    except FedgeError as err:
        fail(str(err))
    try:
        return fn(stub)
    except grpc.RpcError as err:
        fail(f"{err.code().name}: {err.details()}")
    except FedgeError as err:
        fail(str(err))
    finally:
        channel.close()
