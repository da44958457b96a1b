"""One fleet endpoint for the cloud coordinator and a site gateway: ports, services, slots.

A device speaks the same protocol to the cloud and to its site's gateway, so one endpoint
serves both: two gRPC ports made by :mod:`fedge.protocol.transport` with the one interceptor
(the main port with mutual TLS, the enrolment port with TLS pinned by tokens), the
``FleetService`` and ``ModelHubService`` servicers, and the download slots. What it serves comes
from a backend: the cloud's state and release store, or a site's roster, relay and artifact
cache (:class:`FleetBackend`, :class:`HubBackend`). The servicers are short delegations into
the handlers of :mod:`fedge.protocol.fleet` and :mod:`fedge.protocol.hub`; the caller is the
one the interceptor authenticated (:func:`~fedge.protocol.interceptor.caller`).
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from flwr.app import Message
from google.protobuf.descriptor import ServiceDescriptor

from fedge.protocol import hub as handlers
from fedge.protocol.fleet import pull_task, receive_result, send_task
from fedge.protocol.hub import ArtifactSource, DownloadSlots
from fedge.protocol.interceptor import Authenticate, FedgeInterceptor, Refusal, caller
from fedge.protocol.manifest import SignedManifest
from fedge.protocol.server_config import EndpointConfig
from fedge.protocol.tasks import Task, TaskHub
from fedge.protocol.transport import ServerTLS, add_service, bind, create_server
from fedge.records import copy_fields
from fedge.v1 import enrollment_pb2, hub_pb2
from fedge.v1 import fleet_pb2 as pb

__all__ = [
    "EndpointSettings",
    "FleetBackend",
    "FleetEndpoint",
    "FleetService",
    "HubBackend",
    "HubService",
]

FLEET_SERVICE = pb.DESCRIPTOR.services_by_name["FleetService"]
HUB_SERVICE = hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"]
ENROLLMENT_SERVICE = enrollment_pb2.DESCRIPTOR.services_by_name["EnrollmentService"]


@dataclass(frozen=True)
class EndpointSettings:
    """How the endpoint serves devices, the same for the cloud and a site."""

    heartbeat_seconds: float
    chunk_bytes: int
    max_payload_bytes: int
    # No TLS: task payloads carry a hash, and a result must carry one.
    insecure: bool = False
    max_downloads: int | None = None


class FleetBackend(Protocol):
    """What the fleet service asks of the cloud or a site about its devices' tasks."""

    #: The task hub the devices pull from and push to.
    hub: TaskHub

    def node_of(self, device: Any) -> int:
        """The task-hub node of the authenticated ``device``."""

    def heartbeat(self, device: Any, request: pb.HeartbeatRequest) -> None:
        """Record what ``device`` says of itself."""

    def release_state(self) -> str:
        """The release state passed on in heartbeat replies (devices ask again when it moves)."""

    def take_result(self, device: Any, task: Task, reply: Message) -> None:
        """Refuse (raise) a reply this side would not aggregate, else complete ``task`` on the
        hub and record what the reply says (its privacy spent, say)."""


class HubBackend(Protocol):
    """What the hub service asks of the cloud's release store or a site's relay and cache."""

    def speaks_for(self, device: Any, claimed: str) -> bool:
        """Whether ``device`` may act for the device ``claimed`` (raise to refuse with why)."""

    def manifest_for(
        self, device_id: str, *, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """The signed manifest of the release ``device_id`` should run, if any."""

    def artifact(self, sha256: str) -> ArtifactSource:
        """Where the artifact's bytes are read from (fetched first, if need be)."""

    def downloaded(self, device_id: str, sha256: str, *, offset: int, sent: int) -> None:
        """A download was served to its end."""

    def report_install(self, device_id: str, request: hub_pb2.ReportInstallStatusRequest) -> None:
        """Take a device's install report."""

    def report_telemetry(
        self, device_id: str, request: hub_pb2.ReportInferenceStatsRequest
    ) -> None:
        """Take a device's inference telemetry."""


class FleetService:
    """``fedge.v1.FleetService``: an enrolled device on every call."""

    def __init__(self, backend: FleetBackend, settings: EndpointSettings) -> None:
        self._backend = backend
        self._settings = settings

    def Heartbeat(  # noqa: N802
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        """Record that the device is alive, and what it says of itself."""
        device = caller()
        self._backend.hub.seen(self._backend.node_of(device))
        self._backend.heartbeat(device, request)
        return pb.HeartbeatResponse(
            interval_seconds=self._settings.heartbeat_seconds,
            release_state=self._backend.release_state(),
        )

    def PullTask(  # noqa: N802
        self, request: pb.PullTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Stream the device's next task (header, then chunks), or nothing after the wait."""
        node, hub = self._backend.node_of(caller()), self._backend.hub
        task = pull_task(hub, node, wait_seconds=request.wait_seconds, context=context)
        if task is not None:
            settings = self._settings
            yield from send_task(
                task,
                hub,
                node_id=node,
                chunk_bytes=settings.chunk_bytes,
                insecure=settings.insecure,
            )

    def PushResult(  # noqa: N802
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> pb.PushResultResponse:
        """Receive one task result (header, then chunks); a reply this side refuses is refused."""
        device, backend = caller(), self._backend
        node, max_bytes = backend.node_of(device), self._settings.max_payload_bytes
        task, reply = receive_result(
            request_iterator,
            hub=backend.hub,
            node_id=node,
            max_bytes=max_bytes,
            require_sha256=self._settings.insecure,
        )
        backend.take_result(device, task, reply)
        backend.hub.seen(node)
        return pb.PushResultResponse(accepted=True)


class HubService:
    """``fedge.v1.ModelHubService``: manifests, artifact chunks and reports, from a backend.

    A request may name a device id, but only its own (or one its caller speaks for); downloads
    are capped by ``downloads``, beyond which a device is told when to retry.
    """

    def __init__(self, backend: HubBackend, downloads: DownloadSlots) -> None:
        self.backend = backend
        self.downloads = downloads

    def _device_id(self, claimed: str) -> str:
        return handlers.device_id_of(caller(), claimed, self.backend.speaks_for)

    def GetManifest(  # noqa: N802
        self, request: hub_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> hub_pb2.GetManifestResponse:
        """The signed manifest of the release this device should run, if any."""
        device_id = self._device_id(request.device_id)
        return handlers.manifest(self.backend, device_id, request)

    def DownloadArtifact(  # noqa: N802
        self, request: hub_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.DownloadArtifactResponse]:
        """The artifact's bytes from the requested offset, in chunks."""
        device_id = self._device_id(request.device_id)
        yield from handlers.download(self.backend, self.downloads, device_id, request, context)

    def ReportInstallStatus(  # noqa: N802
        self, request: hub_pb2.ReportInstallStatusRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInstallStatusResponse:
        """Record the outcome of an install attempt."""
        self.backend.report_install(self._device_id(request.device_id), request)
        return hub_pb2.ReportInstallStatusResponse()

    def ReportInferenceStats(  # noqa: N802
        self, request: hub_pb2.ReportInferenceStatsRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInferenceStatsResponse:
        """Keep the device's latest inference telemetry."""
        self.backend.report_telemetry(self._device_id(request.device_id), request)
        return hub_pb2.ReportInferenceStatsResponse()


class FleetEndpoint:
    """The two ports devices reach, with the one interceptor: :meth:`bind`, :meth:`serve`,
    :meth:`start`, then :meth:`stop`.

    Binding comes first and alone, so a process that cannot listen has written nothing yet.
    """

    def __init__(
        self,
        config: EndpointConfig,
        *,
        authenticate: Authenticate,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        self.config = config
        interceptor = FedgeInterceptor(authenticate=authenticate, on_refused=on_refused)
        options = config.transport_options()
        self.main = create_server(
            options=options, max_workers=config.max_workers, interceptors=[interceptor]
        )
        self.enroller = create_server(options=options, max_workers=4, interceptors=[interceptor])
        self.ports: dict[str, int] = {}
        self.hub_service: HubService | None = None

    def bind(self, *, tls: ServerTLS | None, enroll_tls: ServerTLS | None) -> dict[str, int]:
        """Listen on the config's ``address`` and ``enroll`` address; ``{"fleet": port,
        "enroll": port}``."""
        self.ports["fleet"] = bind(self.main, self.config.address, tls, option="address")
        self.ports["enroll"] = bind(
            self.enroller, self.config.enroll, enroll_tls, option="enroll-address"
        )
        return dict(self.ports)

    def serve(
        self,
        *,
        fleet: FleetBackend,
        hub: HubBackend,
        enrollment: object,
        insecure: bool = False,
        more: Sequence[tuple[ServiceDescriptor, object]] = (),
    ) -> HubService:
        """Register the fleet, hub and enrolment services, and ``more`` on the main port
        (``insecure``: no TLS, so task payloads and results must carry their hash)."""
        settings = copy_fields(
            EndpointSettings,
            self.config,
            insecure=insecure,
            max_downloads=self.config.max_concurrent_downloads,
        )
        add_service(self.main, FLEET_SERVICE, FleetService(fleet, settings))
        self.hub_service = HubService(hub, DownloadSlots(settings.max_downloads))
        add_service(self.main, HUB_SERVICE, self.hub_service)
        add_service(self.enroller, ENROLLMENT_SERVICE, enrollment)
        for service, servicer in more:
            add_service(self.main, service, servicer)
        return self.hub_service

    def start(self) -> None:
        """Start serving on both ports."""
        self.main.start()
        self.enroller.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving; calls in flight get ``grace`` seconds."""
        for server in (self.main, self.enroller):
            server.stop(grace).wait(grace + 1)
