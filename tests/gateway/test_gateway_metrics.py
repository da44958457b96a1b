"""The cloud's ``/metrics`` counts a device behind a gateway as ``fedge fleet ls`` shows it: online
while its gateway says it is connected, offline once it goes silent."""

import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedge.v1 import control_pb2 as pb

from .conftest import Site, start_site, wait_for


@pytest.fixture
def observed_site(tmp_path: Path) -> Iterator[Site]:
    """A cloud serving /metrics on an ephemeral loopback port, and one site gateway."""
    with closing(start_site(tmp_path, metrics_address="127.0.0.1:0")) as s:
        yield s


def device_gauges(port: int) -> dict[str, float]:
    """``fedge_devices{state}`` by state, and ``fedge_devices_online`` under ``"ONLINE"``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    gauges = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fedge_devices":
                gauges[sample.labels["state"]] = sample.value
            elif sample.name == "fedge_devices_online":
                gauges["ONLINE"] = sample.value
    return gauges


def test_a_device_behind_a_gateway_counts_as_fleet_ls_shows_it(observed_site: Site) -> None:
    site = observed_site
    port = site.fleet.coordinator.ports["metrics"]
    control = site.fleet.control_stub()

    def cam1_state() -> str:
        devices = control.ListDevices(pb.ListDevicesRequest(), timeout=10).devices
        return str(next(d.state for d in devices if d.name == "cam1"))

    site.trainer("cam1", partition=0, partitions=2)
    wait_for(lambda: cam1_state() == "idle", 20, "cam1 idle at the cloud")
    wait_for(lambda: device_gauges(port).get("idle") == 1, 10, "cam1 idle in /metrics")
    gauges = device_gauges(port)
    assert gauges["offline"] == 0, gauges
    assert gauges["ONLINE"] == 2, gauges  # the gateway and cam1

    (agent, _), *_ = site.agents
    agent.stop()
    wait_for(lambda: cam1_state() == "offline", 20, "cam1 offline at the cloud")
    wait_for(lambda: device_gauges(port).get("offline") == 1, 10, "cam1 offline in /metrics")
    assert device_gauges(port)["ONLINE"] == 1  # the gateway alone
