"""An in-process coordinator on loopback with TLS, and helpers to act as its devices."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from flwr.app import Message

from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.fleet import make_token
from fedge.coordinator.pki import fingerprint, init_certs
from fedge.coordinator.serde import PayloadAssembler, decode_message
from fedge.coordinator.server import Coordinator
from fedge.edge.identity import DeviceIdentity, enroll_device
from fedge.net import ClientTLS, create_channel
from fedge.v1 import control_pb2_grpc, fleet_pb2, fleet_pb2_grpc


@dataclass
class Fleet:
    """A running coordinator and what tests need to reach it."""

    coordinator: Coordinator
    root: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator.ports['fleet']}"

    @property
    def enroll_address(self) -> str:
        return f"127.0.0.1:{self.coordinator.ports['enroll']}"

    def token(self) -> str:
        issued = self.coordinator.state.create_token(ttl_seconds=60)
        pem = (self.root / "certs" / "enroll.pem").read_bytes()
        return make_token(issued.secret, fingerprint(pem))

    def enroll(self, name: str = "dev") -> DeviceIdentity:
        return enroll_device(
            coordinator=self.address,
            token=self.token(),
            state_dir=self.root / name,
            name=name,
            enroll_address=self.enroll_address,
        )

    def fleet_stub(self, identity: DeviceIdentity) -> fleet_pb2_grpc.FleetServiceStub:
        channel = create_channel(self.address, tls=identity.tls())
        self._channels.append(channel)
        return fleet_pb2_grpc.FleetServiceStub(channel)

    def channel(self, tls: ClientTLS) -> grpc.Channel:
        channel = create_channel(self.address, tls=tls)
        self._channels.append(channel)
        return channel

    def control_stub(self) -> control_pb2_grpc.ControlServiceStub:
        op = self.root / "certs" / "operator"
        tls = ClientTLS(
            ca_pem=(op / "ca.pem").read_bytes(),
            cert_pem=(op / "operator.pem").read_bytes(),
            key_pem=(op / "operator.key").read_bytes(),
        )
        return control_pb2_grpc.ControlServiceStub(self.channel(tls))

    def __post_init__(self) -> None:
        self._channels: list[grpc.Channel] = []

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.coordinator.stop(grace=0.5)


def start_fleet(tmp_path: Path, **overrides: Any) -> Fleet:
    """A started coordinator with TLS on ephemeral loopback ports (config ``overrides``)."""
    init_certs(tmp_path / "certs", hosts=("127.0.0.1",))
    settings: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "enroll_address": "127.0.0.1:0",
        "state_dir": tmp_path / "state",
        "certs_dir": tmp_path / "certs",
        "heartbeat_seconds": 0.5,
        "liveness_seconds": 2.0,
        "wait_for_devices_seconds": 10.0,
        "max_message_bytes": 4 * 2**20,
        "chunk_bytes": 1 * 2**20,
    }
    coordinator = Coordinator(CoordinatorConfig(**{**settings, **overrides}))
    coordinator.start()
    return Fleet(coordinator, tmp_path)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator with TLS on ephemeral loopback ports; stopped at the end."""
    f = start_fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()
        assert not [t for t in threading.enumerate() if t.name == "fedge-runs" and t.is_alive()]


def pull_task(stub: Any, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Any, Message]:
    """Pull one task as a device does: its header and its decoded message."""
    request = fleet_pb2.PullTaskRequest(wait_seconds=5)
    parts = list(stub.PullTask(request, timeout=10, metadata=metadata))
    header = parts[0].header
    assembler = PayloadAssembler(
        expected_bytes=header.payload_bytes,
        part_bytes=header.part_bytes,
        sha256=header.payload_sha256,
        require_sha256=False,  # as over mutual TLS; a hash that is sent is still checked
    )
    for part in parts[1:]:
        assembler.add(part.chunk.data)
    return header, decode_message(assembler.finish())
