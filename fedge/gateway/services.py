"""What a site gateway serves its devices: the fleet endpoint's backends, and enrolment.

The devices speak the protocol they would speak to the cloud, on the one fleet endpoint
(:mod:`fedge.protocol.endpoint`), so the same ``fedge edge start`` runs behind a gateway:
:class:`SiteFleet` and :class:`SiteHub` answer it from the site's roster, relay and cache.
:class:`GatewayAuth` is the gateway's policy for the one interceptor: a device's certificate
(issued by the cloud's CA, which TLS checks) must name a device of this site's roster with its
current serial, and not a revoked one, so a device the cloud revoked is refused here on its
next call. Enrolment is relayed to the cloud, which alone checks tokens and signs certificates.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from flwr.app import Message

from fedge.app.validation import refuse_invalid_update
from fedge.errors import AuthenticationError, PermissionDeniedError, PkiError
from fedge.gateway.cache import ArtifactCache
from fedge.gateway.releases import SiteReleases
from fedge.gateway.state import GatewayState, RosterEntry
from fedge.gateway.uplink import Uplink
from fedge.protocol.manifest import SignedManifest
from fedge.protocol.pki import ROLE_DEVICE, certificate_serial, peer_identity
from fedge.protocol.tasks import Task, TaskHub
from fedge.v1 import enrollment_pb2, gateway_pb2, hub_pb2
from fedge.v1 import fleet_pb2 as pb

__all__ = [
    "GatewayAuth",
    "SiteDevice",
    "SiteEnrollmentServicer",
    "SiteFleet",
    "SiteHub",
]


@dataclass(frozen=True)
class SiteDevice:
    """A device of the site, authenticated by its certificate."""

    device_id: str
    node_id: int


class GatewayAuth:
    """The gateway's policy: the site's devices on fleet and hub, anyone (with a token) on
    enrolment, nothing else."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def __call__(self, method: str, context: grpc.ServicerContext) -> SiteDevice | None:
        """The caller of ``method`` (``Service/Method``), or a refusal."""
        service = method.partition("/")[0]
        if service == "EnrollmentService":
            return None
        if service in ("FleetService", "ModelHubService"):
            return self._device(context)
        raise PermissionDeniedError(f"{method} is not served by a site gateway")

    def _device(self, context: grpc.ServicerContext) -> SiteDevice:
        certs = context.auth_context().get("x509_pem_cert")
        if not certs:
            raise AuthenticationError("no client certificate: enrol the device first")
        try:
            identity = peer_identity(certs[0])
        except PkiError as err:
            raise AuthenticationError(str(err)) from err
        if identity.role != ROLE_DEVICE:
            raise PermissionDeniedError(f"a {identity.role!r} certificate cannot use this API")
        if identity.not_after < dt.datetime.now(dt.UTC):
            raise AuthenticationError(f"the certificate of {identity.name} has expired")
        row = self._state.device(identity.name)
        if row is None:
            raise AuthenticationError(f"{identity.name} is not a device of this site")
        if row.cert_serial != str(identity.serial):
            raise AuthenticationError(f"{identity.name} presented a superseded certificate")
        if row.revoked:
            raise PermissionDeniedError(f"device {identity.name} is revoked")
        return SiteDevice(row.device_id, row.node_id)


class SiteFleet:
    """The fleet backend of a site: its roster and the site's task hub (the cloud hears what
    its devices say at the next sync)."""

    def __init__(
        self, *, state: GatewayState, hub: TaskHub, release_state: Callable[[], str]
    ) -> None:
        self._state = state
        self.hub = hub
        self.release_state = release_state

    def node_of(self, device: SiteDevice) -> int:
        """The cloud's node id of the device."""
        return device.node_id

    def heartbeat(self, device: SiteDevice, request: pb.HeartbeatRequest) -> None:
        """Keep the device's heartbeat for the next sync."""
        self._state.heard_from(device.device_id, request.SerializeToString())

    def take_result(self, device: SiteDevice, task: Task, reply: Message) -> None:
        """Refuse an update the cloud would refuse; complete the task."""
        refuse_invalid_update(reply, message_type=task.message_type, reference=task.reference)
        self.hub.complete(task, reply)


class SiteHub:
    """The hub backend of a site: the cloud's answers relayed, artifacts from the cache,
    reports queued for the cloud (kept until the cloud has them)."""

    def __init__(self, releases: SiteReleases) -> None:
        self._releases = releases

    def speaks_for(self, device: SiteDevice, claimed: str) -> bool:
        """A device speaks for itself only."""
        return False

    def manifest_for(
        self, device_id: str, *, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """The cloud's release for this device (its last answer while the link is down)."""
        return self._releases.manifest_for(
            device_id, profile=profile, installed_version=installed_version
        )

    def artifact(self, sha256: str) -> ArtifactCache:
        """The cache, holding the artifact (fetched from the cloud once)."""
        self._releases.artifact(sha256)
        return self._releases.cache

    def downloaded(self, device_id: str, sha256: str, *, offset: int, sent: int) -> None:
        """The cloud counts the gateway's one download, not its devices'."""

    def report_install(self, device_id: str, request: hub_pb2.ReportInstallStatusRequest) -> None:
        """Queue the install report for the cloud."""
        request.device_id = device_id
        self._releases.report_install(request)

    def report_telemetry(
        self, device_id: str, request: hub_pb2.ReportInferenceStatsRequest
    ) -> None:
        """Keep the device's latest inference telemetry for the cloud."""
        request.device_id = device_id
        self._releases.report_telemetry(request)


class SiteEnrollmentServicer:
    """``fedge.v1.EnrollmentService`` at the gateway: relayed to the cloud, which checks the
    site's token and signs the device's certificate."""

    def __init__(self, *, uplink: Uplink, state: GatewayState) -> None:
        self._uplink = uplink
        self._state = state

    def Enroll(  # noqa: N802
        self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> enrollment_pb2.EnrollResponse:
        """Relay the enrolment; the new device joins the site's roster at once."""
        reply = self._uplink.relay(
            lambda: self._uplink.gateway.EnrollDevice(
                gateway_pb2.EnrollDeviceRequest(enrollment=request), timeout=self._uplink.timeout
            )
        )
        response = reply.enrollment
        serial = certificate_serial(response.certificate_pem.encode())
        self._state.update_roster(
            [RosterEntry(response.device_id, int(response.node_id), request.name, serial, False)]
        )
        return response
