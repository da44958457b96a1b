"""A device, composed: its agent (heartbeats, tasks) and its model delivery, wired together.

The one place a device is put together: ``fedge edge start`` and the tests both call
:func:`start_device`. The agent tells the coordinator what the delivery serves in every
heartbeat, and the delivery hears the coordinator's release news from the agent's heartbeats.
A device without delivery (``DeviceSettings.delivery=None``) only trains.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc

from fedge.edge.agent import AgentSettings, EdgeAgent
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.identity import DeviceIdentity
from fedge.errors import ConfigError
from fedge.protocol.transport import create_channel

__all__ = ["Device", "DeviceSettings", "hold_state", "start_device"]

#: The state directory's lock file: one running agent per device identity.
LOCK_FILE = ".agent.lock"


@dataclass(frozen=True)
class DeviceSettings:
    """What a device runs: the agent's settings and data, and its delivery (``None``: none)."""

    data_dir: Path | None = None
    train: bool = True
    # The task this device's operator installed (FILE.py:NAME or module:NAME): the only task
    # code it runs; a run of another task (by code sha256) is refused with that reason.
    task: str | None = None
    agent: AgentSettings = field(default_factory=AgentSettings)
    delivery: DeliverySettings | None = field(default_factory=DeliverySettings)


@dataclass
class Device:
    """A started device: :meth:`run` (or :meth:`run_in_thread`), then :meth:`stop`."""

    identity: DeviceIdentity
    agent: EdgeAgent
    delivery: DeviceDelivery | None

    def run(self) -> None:
        """Serve until stopped (the delivery stops with it); raises the agent's
        :class:`~fedge.edge.agent.RefusedError` when the coordinator refuses this device."""
        try:
            self.agent.run()
        finally:
            if self.delivery is not None:
                self.delivery.stop()

    def run_in_thread(self) -> threading.Thread:
        """:meth:`run` on a thread of its own (started); join it after :meth:`stop`."""
        thread = threading.Thread(target=self.run, name=f"agent-{self.identity.device_id}")
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the device to finish after its current call."""
        self.agent.stop()


def hold_state(state_dir: Path) -> IO[str]:
    """Lock ``state_dir`` while the returned file stays open (closing it, or the process's
    exit, releases it), or
    :class:`~fedge.errors.ConfigError` naming the process that holds it: two agents of one
    identity would take the same tasks and fight over its slots."""
    handle = (Path(state_dir) / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(
            "--state", str(state_dir), f"is in use by another fedge edge process (pid {holder})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def start_device(
    identity: DeviceIdentity, settings: DeviceSettings, *, channel: grpc.Channel | None = None
) -> Device:
    """The device of ``identity``, its delivery started (on ``channel``, else a channel of its
    own: mutual TLS unless the device was enrolled ``--insecure``) and its agent ready to run."""
    delivery_settings = settings.delivery
    agent = EdgeAgent(
        identity,
        data_dir=settings.data_dir,
        settings=settings.agent,
        profile=delivery_settings.profile.name if delivery_settings is not None else "",
        train=settings.train,
        task=settings.task,
    )
    if delivery_settings is None:
        return Device(identity, agent, None)
    delivery = DeviceDelivery(
        channel=channel or create_channel(identity.coordinator, tls=identity.tls()),
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=delivery_settings,
    ).start()
    agent.set_serving(delivery.serving)
    agent.set_release_news(delivery.release_news)
    return Device(identity, agent, delivery)
