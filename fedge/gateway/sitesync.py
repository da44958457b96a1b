"""What a gateway tells the cloud of its site's devices: what changed since the cloud last heard.

A site's uplink may be metered and a site may have thousands of devices: a sync that listed
every device every few seconds would keep the uplink busy saying nothing new. A device is
listed when the cloud has not heard of it from this gateway process, when it comes online or
goes offline, when its heartbeat says something new, and, for all devices, every
``full_every`` seconds (so a cloud whose database was restored from a backup catches up). The
cloud takes "online" as "seen at this sync" (``State.sync_site``), so an online device that
says nothing new costs nothing. Nothing counts as told before the cloud has taken the sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fedge.gateway.state import SiteDeviceRow
from fedge.v1 import gateway_pb2

__all__ = ["FULL_SYNC_SECONDS", "SiteSync", "SyncDraft"]

FULL_SYNC_SECONDS = 300.0


@dataclass(frozen=True)
class _Told:
    online: bool
    heartbeat: bytes


@dataclass
class SyncDraft:
    """One sync's listed devices, and what the cloud will know once it takes them."""

    devices: list[gateway_pb2.SiteDevice]
    full: bool
    told: dict[str, _Told] = field(default_factory=dict)


class SiteSync:
    """Tracks what the cloud was told of each device, to list only what changed."""

    def __init__(
        self,
        *,
        full_every: float = FULL_SYNC_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._full_every = full_every
        self._clock = clock
        self._told: dict[str, _Told] = {}
        self._last_full: float | None = None

    def draft(
        self, rows: Iterable[SiteDeviceRow], online: Callable[[SiteDeviceRow], bool]
    ) -> SyncDraft:
        """The devices to list now (revoked ones are never listed)."""
        full = self._last_full is None or self._clock() - self._last_full >= self._full_every
        draft = SyncDraft(devices=[], full=full)
        for row in rows:
            if row.revoked:
                continue
            now = _Told(online=online(row), heartbeat=row.heartbeat)
            before = self._told.get(row.device_id)
            if not full and before == now:
                continue
            device = gateway_pb2.SiteDevice(
                device_id=row.device_id, online=now.online, last_seen_unix=row.last_seen
            )
            if row.heartbeat and (full or before is None or before.heartbeat != row.heartbeat):
                device.heartbeat.ParseFromString(row.heartbeat)
            draft.devices.append(device)
            draft.told[row.device_id] = now
        return draft

    def taken(self, draft: SyncDraft) -> None:
        """The cloud took ``draft``: remember what it now knows."""
        self._told.update(draft.told)
        if draft.full:
            self._last_full = self._clock()
