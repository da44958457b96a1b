"""A cloud coordinator and a site gateway in this process, on loopback with TLS (``site``).

The gateway reaches the cloud through a :class:`~tests.conftest.LinkProxy`, so a test can cut
the site's uplink. Devices enrol at the gateway with the site's tokens and run as threads,
composed as ``fedge edge start`` composes them (:func:`~fedge.edge.device.start_device`).
"""

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.edge.agent import AgentSettings, EdgeAgent
from fedge.edge.device import DeviceSettings, start_device
from fedge.edge.identity import DeviceIdentity, enroll_device
from fedge.gateway.config import GatewayConfig
from fedge.gateway.server import Gateway
from fedge.v1 import control_pb2 as pb

from ..conftest import Fleet, LinkProxy, start_fleet, wait_for

__all__ = ["Site", "wait_for"]

SITE = "factory-a"


@dataclass
class Site:
    """The cloud, one site gateway behind a cuttable uplink, and the site's devices."""

    fleet: Fleet
    gateway: Gateway
    link: LinkProxy
    root: Path
    agents: list[tuple[EdgeAgent, threading.Thread]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.ports['fleet']}"

    @property
    def enroll_address(self) -> str:
        return f"127.0.0.1:{self.gateway.ports['enroll']}"

    def token(self) -> str:
        """A device token of this site, as the operator makes it."""
        request = pb.CreateEnrollTokenRequest(site=SITE)
        return str(self.fleet.control_stub().CreateEnrollToken(request, timeout=10).token)

    def enroll(self, name: str) -> DeviceIdentity:
        """A device of the site, enrolled at the gateway."""
        return enroll_device(
            coordinator=self.address,
            token=self.token(),
            state_dir=self.root / name,
            name=name,
            enroll_address=self.enroll_address,
        )

    def trainer(
        self, name: str, *, partition: int, partitions: int, step_delay: float = 0.0
    ) -> EdgeAgent:
        """A device of the site training on its simulated partition of ``digits``, running."""
        identity = self.enroll(name)
        data = self.root / f"{name}-data"
        write_device_data(
            data,
            DeviceDataSpec(
                dataset="digits", partition_id=partition, num_partitions=partitions, format="npz"
            ),
        )
        return self.run_device(identity, data, reconnect_wait=2.0, step_delay=step_delay)

    def run_device(
        self,
        identity: DeviceIdentity,
        data: Path,
        *,
        reconnect_wait: float = 30.0,
        step_delay: float = 0.0,
    ) -> EdgeAgent:
        """Run the training device of ``identity`` in a thread until the fixture ends; its agent
        (``step_delay``: seconds added per training step, a slower device)."""
        agent_settings = AgentSettings(
            wait_seconds=1.0,
            heartbeat_seconds=0.3,
            reconnect_wait=reconnect_wait,
            step_delay=step_delay,
        )
        settings = DeviceSettings(data_dir=data, agent=agent_settings, delivery=None)
        device = start_device(identity, settings)
        self.agents.append((device.agent, device.run_in_thread()))
        return device.agent

    def close(self) -> None:
        for agent, _ in self.agents:
            agent.stop()
        for _, thread in self.agents:
            thread.join(timeout=30)
        self.gateway.stop(grace=0.5)
        self.link.close()
        self.fleet.close()


def start_site(tmp_path: Path, **cloud: object) -> Site:
    """A cloud and the gateway of :data:`SITE`, enrolled and connected."""
    fleet = start_fleet(tmp_path, wait_for_devices_seconds=4.0, **cloud)
    link = LinkProxy(fleet.address)
    request = pb.CreateEnrollTokenRequest(site=SITE, gateway=True)
    token = fleet.control_stub().CreateEnrollToken(request, timeout=10).token
    config = GatewayConfig(
        address="127.0.0.1:0",
        enroll_address="127.0.0.1:0",
        hosts=("127.0.0.1",),
        state_dir=tmp_path / "gateway",
        heartbeat_seconds=0.3,
        liveness_seconds=1.5,
        sync_seconds=0.3,
        release_interval=0.5,
        round_margin_seconds=1.0,
    )
    gateway = Gateway(config)
    gateway.start(
        coordinator=link.address, token=token, name="gw-a", enroll_address=fleet.enroll_address
    )
    site = Site(fleet, gateway, link, tmp_path)
    wait_for(lambda: gateway.uplink.online, 10, "the gateway's first sync")
    return site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A cloud and one site gateway in this process; everything stopped at the end."""
    with closing(start_site(tmp_path)) as s:
        yield s
