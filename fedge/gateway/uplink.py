"""The gateway's link to the cloud: one enrolled identity, one mutual-TLS channel.

Towards the cloud a gateway is a device with the gateway role: it uses the fleet service (its
site's share of each round), the model hub (releases, and its devices' manifests, install
reports and telemetry, which the cloud lets it relay for its own site) and the gateway service
(its site's state and its devices' enrolment). :meth:`Uplink.relay` makes a cloud call on a
device's behalf and turns the cloud's answer into what the device is told: the cloud's own
refusal with its status, or :class:`~fedge.errors.UnavailableError` while the link is down.
"""

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import DeviceIdentity
from fedge.errors import (
    AuthenticationError,
    BusyError,
    FedgeError,
    NotFoundError,
    PayloadError,
    PermissionDeniedError,
    UnavailableError,
)
from fedge.log import logger
from fedge.protocol.metadata import retry_hint
from fedge.protocol.transport import TransportOptions, create_channel
from fedge.protocol.wire import use_zero_copy_streams
from fedge.v1 import fleet_pb2, fleet_pb2_grpc, gateway_pb2_grpc

__all__ = ["LINK_DOWN", "Uplink"]

T = TypeVar("T")

#: Codes that say the cloud is not reachable (rather than that it refused).
LINK_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

_REFUSALS: dict[grpc.StatusCode, type[FedgeError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: PayloadError,
}


class Uplink:
    """The gateway's channel to the cloud, its stubs, and whether the link is up."""

    def __init__(
        self, identity: DeviceIdentity, *, options: TransportOptions, timeout: float = 10.0
    ) -> None:
        self.identity = identity
        self.timeout = timeout
        self.channel = create_channel(identity.coordinator, tls=identity.tls(), options=options)
        self.fleet = fleet_pb2_grpc.FleetServiceStub(self.channel)
        use_zero_copy_streams(
            self.fleet, self.channel, fleet_pb2.DESCRIPTOR.services_by_name["FleetService"]
        )
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.hub = GrpcHubClient(self.channel, timeout=timeout)
        self._lock = threading.Lock()
        self._online = False
        self._ever_online = False
        self._since = time.monotonic()

    @property
    def online(self) -> bool:
        """Whether the last call to the cloud went through."""
        return self._online

    def mark(self, online: bool) -> None:
        """Record whether the cloud answered; say so when that changes."""
        with self._lock:
            if online == self._online:
                return
            self._online = online
            first = not self._ever_online
            self._ever_online = self._ever_online or online
            down_for = time.monotonic() - self._since
            self._since = time.monotonic()
        if online and first:
            logger.info("cloud link up (%s)", self.identity.coordinator)
        elif online:
            logger.warning(
                "cloud link up again (%s), after %.0fs down", self.identity.coordinator, down_for
            )
        else:
            logger.warning(
                "cloud link DOWN (%s): serving the site from its cache", self.identity.coordinator
            )

    def relay(self, call: Callable[[], T]) -> T:
        """Make ``call`` (a cloud call on a device's behalf); the cloud's refusal as the
        matching fedge error, :class:`UnavailableError` while the link is down."""
        try:
            result = call()
        except grpc.RpcError as err:
            code = err.code()
            if code in LINK_DOWN:
                self.mark(False)
                raise UnavailableError(
                    f"the gateway cannot reach the cloud now ({code.name}); retry later"
                ) from err
            self.mark(True)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # busy: the device backs off too
                wait = retry_hint(err, default=0.5)
                raise BusyError(
                    f"the cloud is busy: {err.details()}", retry_after_ms=int(wait * 1000)
                ) from err
            raise _REFUSALS.get(code, FedgeError)(f"the cloud refused: {err.details()}") from err
        self.mark(True)
        return result

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()
