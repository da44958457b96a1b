"""The operator's connection to the control service (``fedge run``, ``fedge fleet``)."""

import os
from pathlib import Path

import grpc

from fedge.errors import ConfigError
from fedge.net import ClientTLS, create_channel
from fedge.v1 import control_pb2_grpc

__all__ = ["DEFAULT_COORDINATOR", "DEFAULT_OPERATOR_DIR", "connect_control"]

DEFAULT_COORDINATOR = os.environ.get("FEDGE_COORDINATOR", "127.0.0.1:7443")
DEFAULT_OPERATOR_DIR = Path(os.environ.get("FEDGE_OPERATOR", "certs/operator"))


def connect_control(
    address: str, *, operator_dir: Path, insecure: bool = False
) -> tuple[grpc.Channel, control_pb2_grpc.ControlServiceStub]:
    """A control stub authenticated with the operator certificate in ``operator_dir``."""
    if insecure:
        channel = create_channel(address, tls=None)
        return channel, control_pb2_grpc.ControlServiceStub(channel)
    files = {name: operator_dir / name for name in ("ca.pem", "operator.pem", "operator.key")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ConfigError(
            "--operator", str(operator_dir), f"lacks {', '.join(missing)} (from `fedge certs init`)"
        )
    tls = ClientTLS(
        ca_pem=files["ca.pem"].read_bytes(),
        cert_pem=files["operator.pem"].read_bytes(),
        key_pem=files["operator.key"].read_bytes(),
    )
    channel = create_channel(address, tls=tls)
    return channel, control_pb2_grpc.ControlServiceStub(channel)
