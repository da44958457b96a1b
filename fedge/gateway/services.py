"""What a site gateway serves its devices: fleet, model hub and enrolment, as delegations.

The devices speak the protocol they would speak to the cloud (:mod:`fedge.protocol`), so the
same ``fedge edge start`` runs behind a gateway. :class:`GatewayAuth` is the gateway's policy
for the one interceptor: a device's certificate (issued by the cloud's CA, which TLS checks)
must name a device of this site's roster with its current serial, and not a revoked one, so a
device the cloud revoked is refused here on its next call. Enrolment is relayed to the cloud,
which alone checks tokens and signs certificates.
"""

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from flwr.app import MessageType

from fedge.app.validation import validate_train_replies
from fedge.errors import (
    AuthenticationError,
    BusyError,
    PayloadError,
    PermissionDeniedError,
    PkiError,
)
from fedge.gateway.releases import SiteReleases
from fedge.gateway.state import GatewayState, RosterEntry
from fedge.gateway.uplink import Uplink
from fedge.protocol.fleet import pull_task, receive_result, send_task
from fedge.protocol.interceptor import caller
from fedge.protocol.pki import ROLE_DEVICE, certificate_serial, peer_identity
from fedge.protocol.serde import manifest_response
from fedge.protocol.tasks import TaskHub
from fedge.v1 import enrollment_pb2, gateway_pb2, hub_pb2
from fedge.v1 import fleet_pb2 as pb

__all__ = [
    "GatewayAuth",
    "SiteDevice",
    "SiteEnrollmentServicer",
    "SiteFleetServicer",
    "SiteHubServicer",
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


def _me(context: grpc.ServicerContext, claimed: str) -> SiteDevice:
    device: SiteDevice = caller(context)
    if claimed and claimed != device.device_id:
        raise PermissionDeniedError(f"device {device.device_id!r} cannot act as {claimed!r}")
    return device


class SiteFleetServicer:
    """``fedge.v1.FleetService`` for the site's devices: tasks of the site's rounds."""

    def __init__(
        self,
        *,
        state: GatewayState,
        hub: TaskHub,
        heartbeat_seconds: float,
        chunk_bytes: int,
        max_payload_bytes: int,
        release_state: Callable[[], str] = lambda: "",
    ) -> None:
        self._state = state
        self._hub = hub
        self._heartbeat = heartbeat_seconds
        self._chunk_bytes = chunk_bytes
        self._max_payload = max_payload_bytes
        self._release_state = release_state

    def Heartbeat(  # noqa: N802
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        """Record that the device is alive and what it says (the cloud hears it next sync)."""
        device: SiteDevice = caller(context)
        self._hub.seen(device.node_id)
        self._state.heard_from(device.device_id, request.SerializeToString())
        return pb.HeartbeatResponse(
            interval_seconds=self._heartbeat, release_state=self._release_state()
        )

    def PullTask(  # noqa: N802
        self, request: pb.PullTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Stream the device's next task, or nothing after the wait."""
        device: SiteDevice = caller(context)
        task = pull_task(
            self._hub, device.node_id, wait_seconds=request.wait_seconds, context=context
        )
        if task is None:
            return
        yield from send_task(
            task, self._hub, node_id=device.node_id, chunk_bytes=self._chunk_bytes, insecure=False
        )

    def PushResult(  # noqa: N802
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> pb.PushResultResponse:
        """Receive one task result; an update the cloud would refuse is refused here."""
        device: SiteDevice = caller(context)
        task, reply = receive_result(
            request_iterator,
            hub=self._hub,
            node_id=device.node_id,
            max_bytes=self._max_payload,
            require_sha256=False,
        )
        if (
            not reply.has_error()
            and task.message_type == MessageType.TRAIN
            and task.reference is not None
        ):
            _, dropped = validate_train_replies([reply], task.reference)
            if dropped:
                raise PayloadError(f"update refused: {dropped[0].reason}")
        self._hub.complete(task, reply)
        self._hub.seen(device.node_id)
        return pb.PushResultResponse(accepted=True)


class _Slots:
    """Downloads served at once; beyond the cap a device is told to retry."""

    def __init__(self, limit: int) -> None:
        self._sem = threading.BoundedSemaphore(limit)
        self.limit = limit

    def acquire(self) -> bool:
        return self._sem.acquire(blocking=False)

    def release(self) -> None:
        self._sem.release()


class SiteHubServicer:
    """``fedge.v1.ModelHubService`` for the site's devices, from the gateway's relay and cache."""

    def __init__(
        self, releases: SiteReleases, *, max_downloads: int, retry_after_ms: int = 500
    ) -> None:
        self._releases = releases
        self._slots = _Slots(max_downloads)
        self._retry_after_ms = retry_after_ms

    def GetManifest(  # noqa: N802
        self, request: hub_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> hub_pb2.GetManifestResponse:
        """The cloud's release for this device (its last answer while the link is down)."""
        device = _me(context, request.device_id)
        signed = self._releases.manifest_for(
            device.device_id,
            profile=request.profile,
            installed_version=request.installed_version,
        )
        return manifest_response(signed)

    def DownloadArtifact(  # noqa: N802
        self, request: hub_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.DownloadArtifactResponse]:
        """The artifact from the gateway's cache (fetched from the cloud once), from an offset."""
        _me(context, request.device_id)
        if not self._slots.acquire():
            raise BusyError(
                f"the gateway serves {self._slots.limit} downloads at once; "
                f"retry in {self._retry_after_ms} ms",
                retry_after_ms=self._retry_after_ms,
            )
        released = [False]

        def release() -> None:
            if not released[0]:
                released[0] = True
                self._slots.release()

        context.add_callback(release)
        try:
            self._releases.artifact(request.sha256)
            cache = self._releases.cache
            length = cache.length(request.sha256)
            for offset, data in cache.read(
                request.sha256, offset=request.offset, chunk_size=request.chunk_size
            ):
                yield hub_pb2.DownloadArtifactResponse(offset=offset, data=data, length=length)
        finally:
            release()

    def ReportInstallStatus(  # noqa: N802
        self, request: hub_pb2.ReportInstallStatusRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInstallStatusResponse:
        """Queue the install report for the cloud (kept until the cloud has it)."""
        device = _me(context, request.device_id)
        request.device_id = device.device_id
        self._releases.report_install(request)
        return hub_pb2.ReportInstallStatusResponse()

    def ReportInferenceStats(  # noqa: N802
        self, request: hub_pb2.ReportInferenceStatsRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInferenceStatsResponse:
        """Keep the device's latest inference telemetry for the cloud."""
        device = _me(context, request.device_id)
        request.device_id = device.device_id
        self._releases.report_telemetry(request)
        return hub_pb2.ReportInferenceStatsResponse()


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
