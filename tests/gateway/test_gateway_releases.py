"""Releases through a site gateway: fetched once from the cloud for the whole site, installed
and verified by each device against the cloud's key (bytes the gateway altered are refused),
and installed from the gateway's cache while the cloud link is down, with the install report
delivered when it returns."""

from pathlib import Path

import grpc

from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.identity import DeviceIdentity
from fedge.protocol.transport import create_channel
from fedge.release.testing import publish_linear
from fedge.v1 import fleet_pb2, fleet_pb2_grpc

from ..conftest import heartbeat_listener
from .conftest import Site, wait_for


def _delivery(identity: DeviceIdentity, channels: list[grpc.Channel]) -> DeviceDelivery:
    # Not started: the test ticks the device's release check by hand.
    channel = create_channel(identity.coordinator, tls=identity.tls())
    channels.append(channel)
    settings = DeliverySettings(inference_address=None)
    return DeviceDelivery(
        channel=channel,
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=settings,
    )


def _say_hello(site: Site, identity: DeviceIdentity, version: int) -> None:
    """A heartbeat, so the gateway knows the device's profile and the release it runs."""
    channel = create_channel(site.address, tls=identity.tls())
    try:
        request = fleet_pb2.HeartbeatRequest(profile="cpu-small", release_version=version)
        fleet_pb2_grpc.FleetServiceStub(channel).Heartbeat(request, timeout=10)
    finally:
        channel.close()


def test_releases_reach_the_site_once_and_install_offline(site: Site, tmp_path: Path) -> None:
    store = site.fleet.coordinator.releases
    devices = [site.enroll(f"cam-{i}") for i in range(2)]
    channels: list[grpc.Channel] = []
    deliveries = [_delivery(d, channels) for d in devices]
    try:
        first = publish_linear(store, tmp_path, seed=1).manifest
        for delivery in deliveries:
            report = delivery.tick()
            assert report is not None and (report.state, report.version) == ("installed", 1)
        # both devices installed it; the cloud served its artifact once, to the gateway
        wait_for(lambda: store.status(first.version)["installed"] == 2, 10, "two install reports")
        assert store.status(first.version)["downloads"] == 1

        # cam-1 is idle when release 2 comes out; the gateway asks the cloud for it anyway
        _say_hello(site, devices[1], version=1)
        second = publish_linear(store, tmp_path, seed=2).manifest
        report = deliveries[0].tick()
        assert report is not None and (report.state, report.version) == ("installed", 2)

        def offered_to_cam1() -> bool:
            _, signed, _ = site.gateway.state.manifest(devices[1].device_id)
            return signed is not None and signed.manifest.version == second.version

        wait_for(offered_to_cam1, 10, "the gateway to hold cam-1's release")

        # the uplink goes down; cam-1 installs release 2 from the gateway's cache
        site.link.cut()
        wait_for(lambda: not site.gateway.uplink.online, 10, "the gateway to see the cut")
        report = deliveries[1].tick()
        assert report is not None and (report.state, report.version) == ("installed", 2)
        assert store.status(second.version)["installed"] == 1  # cam-1's report waits ...
        assert site.gateway.state.owed() >= 1  # ... at the gateway
        site.link.restore()
        wait_for(lambda: store.status(second.version)["installed"] == 2, 20, "the queued report")
        assert store.status(second.version)["downloads"] == 1

        # the gateway cannot alter a model: the device checks the bytes against the manifest
        third = publish_linear(store, tmp_path, seed=3).manifest
        cached = site.gateway.releases.cache.ensure(third.sha256)
        cached.write_bytes(cached.read_bytes()[::-1])
        report = deliveries[0].tick()
        assert report is not None and report.state == "refused" and "sha256" in report.reason
        assert deliveries[0].serving()[0] == 2
    finally:
        for channel in channels:
            channel.close()


def test_a_release_reaches_a_device_behind_the_gateway_within_syncs_and_heartbeats(
    site: Site, tmp_path: Path
) -> None:
    """The cloud's release state travels in the site sync and on in device heartbeats: a
    device with a one-hour release interval installs a new release within seconds."""
    identity = site.enroll("cam")
    store = site.fleet.coordinator.releases
    channel = create_channel(identity.coordinator, tls=identity.tls())
    try:
        with heartbeat_listener(identity, channel) as delivery:
            wait_for(lambda: delivery.updater is not None, 10, "the device's first release check")
            wait_for(
                lambda: delivery.release_state == store.targeting(),
                10,
                "the device to hear the cloud's release state through the gateway",
            )
            first = publish_linear(store, tmp_path, seed=1).manifest
            wait_for(
                lambda: (
                    delivery.updater is not None
                    and delivery.updater.active_version() == first.version
                ),
                15,
                "the release behind the gateway",
            )
    finally:
        channel.close()
