"""Prometheus ``/metrics`` of a running coordinator and of a device, scraped over HTTP and
checked against the state they report (devices online, installs done, refusals, requests)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedge.coordinator.config import load_coordinator_config
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.errors import AddressInUseError, ConfigError
from fedge.protocol.http import listen_socket
from fedge.release.testing import publish_linear
from fedge.v1 import control_pb2, control_pb2_grpc, fleet_pb2

from .conftest import Fleet, start_fleet


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``http://127.0.0.1:PORT/metrics``: (name, sorted labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_coordinator_and_device_metrics_match_the_state(observed: Fleet, tmp_path: Path) -> None:
    fleet = observed
    port = fleet.coordinator.ports["metrics"]
    identities = [fleet.enroll(f"cam{i}") for i in range(3)]
    deliveries = [
        DeviceDelivery(
            channel=fleet.channel(identity.tls()),
            state_dir=Path(identity.state_dir),
            device_id=identity.device_id,
            settings=DeliverySettings(
                interval=3600, inference_address=None, metrics_address="127.0.0.1:0"
            ),
        ).start()
        for identity in identities[:2]
    ]
    try:
        # Two devices heartbeat (online); the third enrolled and went quiet (offline).
        for identity in identities[:2]:
            fleet.fleet_stub(identity).Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)
        signed = publish_linear(fleet.coordinator.releases, tmp_path, seed=3, percent=100)
        version = signed.manifest.version
        for delivery in deliveries:  # its own loop may have installed it already
            delivery.tick()
            assert delivery.serving()[0] == version

        # A device's certificate on the control API is refused: an error by RPC and code.
        device_channel = fleet.channel(identities[0].tls())
        with pytest.raises(grpc.RpcError):
            control_pb2_grpc.ControlServiceStub(device_channel).ListRuns(
                control_pb2.ListRunsRequest(), timeout=10
            )

        coordinator = scrape(port)
        assert coordinator[("fedge_devices_online", ())] == 2
        assert coordinator[("fedge_devices", (("state", "offline"),))] == 1
        # Every state `fedge fleet ls` shows, counted the same.
        listed = fleet.control_stub().ListDevices(control_pb2.ListDevicesRequest(), timeout=10)
        for state in {d.state for d in listed.devices}:
            count = sum(d.state == state for d in listed.devices)
            assert coordinator[("fedge_devices", (("state", state),))] == count
        installed = (("state", "installed"), ("version", str(version)))
        assert coordinator[("fedge_release_devices", installed)] == 2
        assert coordinator[("fedge_release_rollout_percent", (("version", str(version)),))] == 100
        refused = (("code", "PERMISSION_DENIED"), ("method", "ControlService/ListRuns"))
        assert coordinator[("fedge_rpc_refusals_total", refused)] == 1
        assert coordinator[("fedge_downloads_in_flight", ())] == 0
        assert coordinator[("fedge_runs", (("state", "running"),))] == 0

        # The device: five good predictions and one bad input, served by release `version`.
        first = deliveries[0]
        assert first.metrics_port is not None
        for _ in range(5):
            first.engine.predict(np.zeros((2, 16), np.float32))
        with pytest.raises(Exception, match=r"(?i)invalid|dimension|shape"):
            first.engine.predict(np.zeros((2, 3), np.float32))
        device = scrape(first.metrics_port)
        assert device[("fedge_inference_requests_total", ())] == 6
        assert device[("fedge_inference_errors_total", ())] == 1
        assert device[("fedge_inference_latency_seconds_count", ())] == 5
        assert device[("fedge_inference_latency_seconds_sum", ())] > 0
        assert device[("fedge_device_active_release", ())] == version
        assert device[("fedge_device_install_reports_total", (("state", "installed"),))] == 1
        # The other device served nothing.
        assert deliveries[1].metrics_port is not None
        other = scrape(deliveries[1].metrics_port)
        assert other[("fedge_inference_requests_total", ())] == 0
    finally:
        for delivery in deliveries:
            delivery.stop()


def test_a_metrics_port_in_use_is_refused_before_any_state(tmp_path: Path) -> None:
    taken = listen_socket("127.0.0.1:0", option="test")
    try:
        port = taken.getsockname()[1]
        with pytest.raises(AddressInUseError, match=f"metrics.address: .*{port}.*in use"):
            start_fleet(tmp_path, metrics_address=f"127.0.0.1:{port}")
        assert not (tmp_path / "state").exists()
    finally:
        taken.close()


def test_console_and_metrics_tables_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text(
        '[coordinator]\naddress = "127.0.0.1:7443"\n'
        '[console]\naddress = "127.0.0.1:7480"\n[metrics]\naddress = "127.0.0.1:9464"\n'
    )
    loaded = load_coordinator_config(config)
    assert (loaded.console_address, loaded.metrics_address) == ("127.0.0.1:7480", "127.0.0.1:9464")
    config.write_text('[console]\nadress = "127.0.0.1:7480"\n')
    with pytest.raises(ConfigError, match=r"console.adress: .* is not a \[console\] option"):
        load_coordinator_config(config)
    config.write_text('[metrics]\naddress = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"metrics\.address: 'nowhere' must be HOST:PORT"):
        load_coordinator_config(config)
    config.write_text('[console]\naddress = "0.0.0.0:7480"\n')
    with pytest.raises(ConfigError, match=r"console\.address: .* needs TLS"):
        load_coordinator_config(config, insecure=True)
