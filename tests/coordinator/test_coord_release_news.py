"""A release reaches a running device within heartbeats, not at its next release check.

Real coordinator on loopback (mutual TLS), a real device agent heartbeating and its delivery
loop with a one-hour release interval: only the heartbeat's release state can bring a release
sooner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedge.edge.agent import AgentSettings, EdgeAgent
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.release.testing import publish_linear

from .conftest import Fleet


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_publish_promote_and_rollback_reach_a_device_at_its_next_heartbeat(
    fleet: Fleet, tmp_path: Path
) -> None:
    identity = fleet.enroll("cam")
    store = fleet.coordinator.releases
    delivery = DeviceDelivery(
        channel=fleet.channel(identity.tls()),
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=DeliverySettings(interval=3600, inference_address=None),
    ).start()
    agent = EdgeAgent(
        identity, data_dir=None, settings=AgentSettings(wait_seconds=1.0, heartbeat_seconds=0.3)
    )
    agent.set_serving(delivery.serving)
    agent.set_release_news(delivery.release_news)
    thread = threading.Thread(target=agent.run)
    thread.start()

    def running() -> int:
        return delivery.updater.active_version() if delivery.updater is not None else 0

    try:
        _wait_for(lambda: delivery.updater is not None, 10, "the delivery loop's first check")
        _wait_for(lambda: delivery.release_state == store.targeting(), 10, "a first heartbeat")
        first = publish_linear(store, tmp_path / "one", seed=1)
        _wait_for(lambda: running() == first.manifest.version, 15, "the published release")
        second = publish_linear(store, tmp_path / "two", seed=2, percent=0)
        store.promote(second.manifest.version, percent=100)
        _wait_for(lambda: running() == second.manifest.version, 15, "the promoted release")
        back = store.rollback()
        _wait_for(lambda: running() == back.manifest.version, 15, "the rollback release")
    finally:
        agent.stop()
        thread.join(timeout=30)
        delivery.stop()
