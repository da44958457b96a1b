"""The operator's connection to the coordinator's control service, for every operator command.

``fedge run``, ``fedge fleet``, ``fedge release``, ``fedge privacy`` and ``fedge console`` find
the coordinator and the operator credential through ``--coordinator``/``--operator`` or the
environment (``FEDGE_COORDINATOR``, ``FEDGE_OPERATOR``), so they work from any host and
directory. A command declares this once, with :func:`operator_command`: it gets the three
options and is handed a :class:`Control`.
"""

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer

from fedge.cli.common import err_console, fail
from fedge.errors import ConfigError, FedgeError
from fedge.protocol.transport import ClientTLS, create_channel, parse_address
from fedge.v1 import control_pb2_grpc

__all__ = [
    "DEFAULT_COORDINATOR",
    "DEFAULT_OPERATOR_DIR",
    "Control",
    "CoordinatorOpt",
    "InsecureOpt",
    "OperatorOpt",
    "call_control",
    "connect_control",
    "operator_command",
]

T = TypeVar("T")

DEFAULT_COORDINATOR = "127.0.0.1:7443"
DEFAULT_OPERATOR_DIR = Path("certs/operator")

CoordinatorOpt = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        envvar="FEDGE_COORDINATOR",
        help=f"HOST:PORT of the coordinator (default: {DEFAULT_COORDINATOR})",
    ),
]
OperatorOpt = Annotated[
    Path | None,
    typer.Option(
        "--operator",
        envvar="FEDGE_OPERATOR",
        help=f"Operator credential dir (default: {DEFAULT_OPERATOR_DIR})",
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="No TLS (only against an --insecure coordinator).")
]


def connect_control(
    address: str, *, operator_dir: Path, insecure: bool = False
) -> tuple[grpc.Channel, control_pb2_grpc.ControlServiceStub]:
    """A control stub authenticated with the operator certificate in ``operator_dir``."""
    parse_address(address, option="--coordinator")
    if insecure:
        channel = create_channel(address, tls=None)
        return channel, control_pb2_grpc.ControlServiceStub(channel)
    files = {name: operator_dir / name for name in ("ca.pem", "operator.pem", "operator.key")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ConfigError(
            "--operator",
            str(operator_dir),
            f"lacks {', '.join(missing)}: give the operator credential `fedge certs init` made "
            "(--operator DIR or FEDGE_OPERATOR)",
        )
    tls = ClientTLS(
        ca_pem=files["ca.pem"].read_bytes(),
        cert_pem=files["operator.pem"].read_bytes(),
        key_pem=files["operator.key"].read_bytes(),
    )
    channel = create_channel(address, tls=tls)
    return channel, control_pb2_grpc.ControlServiceStub(channel)


def call_control(
    coordinator: str | None,
    operator: Path | None,
    insecure: bool,
    fn: Callable[[control_pb2_grpc.ControlServiceStub], T],
) -> T:
    """Run ``fn(stub)`` against the control service; every error is one line, exit 2."""
    address = coordinator or os.environ.get("FEDGE_COORDINATOR") or DEFAULT_COORDINATOR
    operator_dir = operator or Path(os.environ.get("FEDGE_OPERATOR") or DEFAULT_OPERATOR_DIR)
    if insecure:
        err_console.print(
            "[bold yellow]WARNING:[/] --insecure: talking to the coordinator without TLS"
        )
    try:
        channel, stub = connect_control(address, operator_dir=operator_dir, insecure=insecure)
    except FedgeError as err:
        fail(str(err))
    try:
        return fn(stub)
    except grpc.RpcError as err:
        fail(_rpc_message(err, address))
    except FedgeError as err:
        fail(str(err))
    finally:
        channel.close()


@dataclass(frozen=True)
class Control:
    """Where and as whom an operator command reaches the coordinator's control service."""

    coordinator: str | None = None
    operator: Path | None = None
    insecure: bool = False

    @property
    def address(self) -> str:
        """The coordinator's HOST:PORT: the option, else ``FEDGE_COORDINATOR``, else the default."""
        return self.coordinator or os.environ.get("FEDGE_COORDINATOR") or DEFAULT_COORDINATOR

    def call(self, fn: Callable[[control_pb2_grpc.ControlServiceStub], T]) -> T:
        """Run ``fn(stub)`` on a fresh connection; every error is one line, exit 2."""
        return call_control(self.coordinator, self.operator, self.insecure, fn)


_OPERATOR_OPTIONS = (
    ("coordinator", CoordinatorOpt, None),
    ("operator", OperatorOpt, None),
    ("insecure", InsecureOpt, False),
)


def operator_command(command: Callable[..., T]) -> Callable[..., T]:
    """``command`` with ``--coordinator``, ``--operator`` and ``--insecure`` (and their
    environment variables) as its last options, called with a :class:`Control` built from them
    as its ``control`` parameter. Register the result with ``app.command``."""
    signature = inspect.signature(command, eval_str=True)  # modules with postponed annotations
    if "control" not in signature.parameters:
        raise TypeError(f"{command.__qualname__} takes no 'control' parameter")
    kept = [p for p in signature.parameters.values() if p.name != "control"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option)
        for name, option, default in _OPERATOR_OPTIONS
    ]

    @functools.wraps(command)
    def with_control(*args: Any, **kwargs: Any) -> T:
        control = Control(*(kwargs.pop(name, default) for name, _, default in _OPERATOR_OPTIONS))
        return command(*args, control=control, **kwargs)

    # Typer reads a command's options from its signature and its annotations.
    with_control.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    with_control.__annotations__ = {
        **{p.name: p.annotation for p in kept},
        **{name: option for name, option, _ in _OPERATOR_OPTIONS},
    }
    return with_control


def _rpc_message(err: grpc.RpcError, address: str) -> str:
    code, details = err.code(), err.details() or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"cannot reach the coordinator at {address} ({code.name}); is it running there?"
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        return details
    return f"{code.name}: {details}"
