"""``--insecure``: no TLS, explicitly asked for, and loudly warned about."""

import logging
from pathlib import Path

import pytest

from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.server import Coordinator
from fedge.edge.identity import enroll_device
from fedge.protocol.transport import create_channel
from fedge.v1 import fleet_pb2, fleet_pb2_grpc


def test_insecure_coordinator_works_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = CoordinatorConfig(
        address="127.0.0.1:0",
        enroll_address="127.0.0.1:0",
        state_dir=tmp_path / "state",
        certs_dir=tmp_path / "no-certs",
        insecure=True,
    )
    coordinator = Coordinator(config)
    with caplog.at_level(logging.WARNING, logger="fedge"):
        ports = coordinator.start()
    try:
        assert any("WITHOUT TLS" in r.message for r in caplog.records)
        secret = coordinator.state.create_token(ttl_seconds=60).secret
        identity = enroll_device(
            coordinator=f"127.0.0.1:{ports['fleet']}",
            enroll_address=f"127.0.0.1:{ports['enroll']}",
            token=secret,
            state_dir=tmp_path / "dev",
            insecure=True,
        )
        assert identity.tls() is None
        channel = create_channel(identity.coordinator, tls=None)
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        metadata = (("fedge-device-id", identity.device_id),)
        reply = stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10, metadata=metadata)
        assert reply.interval_seconds == config.heartbeat_seconds
        channel.close()
    finally:
        coordinator.stop(grace=0.5)
