"""The cloud's side of site gateways: the gateway service, and where each device can be reached.

A gateway keeps the cloud's picture of its site current (:meth:`GatewayServicer.SyncSite`: its
devices, as it hears from them; the reply is the site's roster, revoked devices marked) and
relays its devices' enrolment (:meth:`GatewayServicer.EnrollDevice`: the cloud checks the site
token and signs the certificate, so every device of every site chains to the cloud's CA and
the cloud can name, list and revoke it). :class:`Sites` tells the run loop which devices sit
behind which gateway and whether they can be reached now.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from fedge.coordinator.fleet import FleetSettings, enroll, heartbeat_of
from fedge.coordinator.hub import Delegate
from fedge.coordinator.pki import CertificateAuthority
from fedge.coordinator.state import KIND_DEVICE, DeviceRow, SiteDeviceReport, State
from fedge.errors import PermissionDeniedError
from fedge.protocol.interceptor import caller
from fedge.protocol.serde import device_state_from_proto
from fedge.protocol.tasks import TaskHub
from fedge.records import copy_fields
from fedge.v1 import gateway_pb2 as pb

__all__ = ["GatewayServicer", "SiteRef", "Sites", "may_speak_for"]


@dataclass(frozen=True)
class SiteRef:
    """The site a device is behind: its name and its gateway's node and device ids."""

    site: str
    gateway_node: int
    gateway_id: str


class Sites:
    """Which devices are behind which gateway, and which devices can be reached now.

    A device of the cloud itself is reachable when it is alive on the cloud's task hub; a
    device behind a gateway when its gateway is alive on the hub and last said the device is
    connected to it.
    """

    def __init__(self, state: State, hub: TaskHub) -> None:
        self._state = state
        self._hub = hub

    def of(self, node_ids: list[int] | None = None) -> dict[int, SiteRef]:
        """The site of every device behind a gateway (among ``node_ids`` when given)."""
        rows = self._state.devices()
        gateways = {d.site: d for d in rows if d.is_gateway and not d.revoked}
        wanted = set(node_ids) if node_ids is not None else None
        sites = {}
        for d in rows:
            gateway = gateways.get(d.site)
            wanted_here = wanted is None or d.id in wanted
            if d.kind == KIND_DEVICE and d.site and gateway is not None and wanted_here:
                sites[d.id] = SiteRef(d.site, gateway.id, gateway.device_id)
        return sites

    def online(self, node_ids: list[int]) -> list[int]:
        """The reachable devices among ``node_ids``, in their order."""
        rows = {d.id: d for d in self._state.devices()}
        sites = self.of(node_ids)
        alive = set(self._hub.online([*node_ids, *(s.gateway_node for s in sites.values())]))
        reachable = []
        for node in node_ids:
            site = sites.get(node)
            row = rows.get(node)
            if site is None:
                ok = node in alive
            else:
                ok = site.gateway_node in alive and row is not None and row.reachable
            if ok:
                reachable.append(node)
        return reachable

    def unreachable_reason(self, site: SiteRef) -> str:
        """Why a site's devices cannot be reached, as the operator reads it."""
        row = self._state.device_by_node(site.gateway_node)
        seen = row.last_seen if row is not None else 0.0
        ago = f"last seen {time.time() - seen:.0f}s ago" if seen else "never connected"
        return f"site {site.site} unreachable: its gateway {site.gateway_id} is offline ({ago})"


def may_speak_for(state: State) -> Delegate:
    """The hub's ``delegate``: a gateway speaks for the unrevoked devices of its own site."""

    def delegate(who: Any, claimed: str) -> bool:
        if not isinstance(who, DeviceRow) or not who.is_gateway:
            return False
        device = state.device(claimed)
        if device is None or device.site != who.site or device.kind != KIND_DEVICE:
            return False
        if device.revoked:
            raise PermissionDeniedError(f"device {claimed} is revoked")
        return True

    return delegate


class GatewayServicer:
    """gRPC handlers of ``fedge.v1.GatewayService`` (a site gateway on every call)."""

    def __init__(
        self,
        *,
        state: State,
        hub: TaskHub,
        settings: FleetSettings,
        ca: CertificateAuthority | None,
        release_state: Callable[[], str] = lambda: "",
    ) -> None:
        self._state = state
        self._hub = hub
        self._settings = settings
        self._ca = ca
        self._release_state = release_state

    def SyncSite(  # noqa: N802
        self, request: pb.SyncSiteRequest, context: grpc.ServicerContext
    ) -> pb.SyncSiteResponse:
        """Record the gateway's view of its site; reply with the site's roster."""
        gateway: DeviceRow = caller()
        self._hub.seen(gateway.id)
        reports = [
            SiteDeviceReport(
                device_id=d.device_id,
                online=d.online,
                last_seen=d.last_seen_unix,
                state=device_state_from_proto(d.heartbeat.state),
                version=d.heartbeat.version,
                heartbeat=heartbeat_of(d.heartbeat) if d.HasField("heartbeat") else None,
            )
            for d in request.devices
        ]
        self._state.sync_site(
            gateway.device_id, enroll_fingerprint=request.enroll_fingerprint, reports=reports
        )
        if request.version:
            self._state.touch(gateway.device_id, version=request.version)
        return pb.SyncSiteResponse(
            interval_seconds=self._settings.heartbeat_seconds,
            site=gateway.site,
            release_state=self._release_state(),
            roster=[
                copy_fields(pb.RosterEntry, d, node_id=d.id)
                for d in self._state.site_devices(gateway.site)
            ],
        )

    def EnrollDevice(  # noqa: N802
        self, request: pb.EnrollDeviceRequest, context: grpc.ServicerContext
    ) -> pb.EnrollDeviceResponse:
        """Enrol a device of the gateway's site (the request relayed from the gateway)."""
        gateway: DeviceRow = caller()
        response = enroll(
            request.enrollment,
            state=self._state,
            ca=self._ca,
            settings=self._settings,
            gateway=gateway,
        )
        return pb.EnrollDeviceResponse(enrollment=response)
