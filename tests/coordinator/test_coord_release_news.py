"""A release reaches a running device within heartbeats, not at its next release check.

Real coordinator on loopback (mutual TLS), a real device agent heartbeating and its delivery
loop with a one-hour release interval: only the heartbeat's release state can bring a release
sooner.
"""

from __future__ import annotations

from pathlib import Path

from fedge.release.testing import publish_linear

from ..conftest import heartbeat_listener, wait_for
from .conftest import Fleet


def test_publish_promote_and_rollback_reach_a_device_at_its_next_heartbeat(
    fleet: Fleet, tmp_path: Path
) -> None:
    identity = fleet.enroll("cam")
    store = fleet.coordinator.releases
    with heartbeat_listener(identity, fleet.channel(identity.tls())) as delivery:

        def running() -> int:
            return delivery.updater.active_version() if delivery.updater is not None else 0

        wait_for(lambda: delivery.updater is not None, 10, "the delivery loop's first check")
        wait_for(lambda: delivery.release_state == store.targeting(), 10, "a first heartbeat")
        first = publish_linear(store, tmp_path / "one", seed=1)
        wait_for(lambda: running() == first.manifest.version, 15, "the published release")
        second = publish_linear(store, tmp_path / "two", seed=2, percent=0)
        store.promote(second.manifest.version, percent=100)
        wait_for(lambda: running() == second.manifest.version, 15, "the promoted release")
        back = store.rollback()
        wait_for(lambda: running() == back.manifest.version, 15, "the rollback release")
