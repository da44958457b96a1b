"""ModelHubService: the coordinator's side of over-the-air model delivery, as delegations.

Every RPC delegates to :class:`fedge.release.store.ReleaseStore`; the interceptor authenticates
the device and maps errors to status codes. A request may name a device id, but only its own:
the identity is the authenticated caller (the mTLS certificate's device), except for a site
gateway, which asks for its site's devices' manifests and relays their install reports and
telemetry (``delegate`` says whom a caller may speak for). Every download served to its end is
recorded, so ``fedge release status`` shows how many the cloud served.

Downloads are capped (``max_downloads`` at once): a device beyond the cap is refused at once
with :class:`~fedge.errors.BusyError` (``RESOURCE_EXHAUSTED`` plus the standard
``grpc-retry-pushback-ms`` hint) instead of queueing on a worker thread the other RPCs need.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from fedge.errors import BusyError, ConfigError, PayloadError, PermissionDeniedError
from fedge.log import logger
from fedge.protocol.interceptor import Authenticate, FedgeInterceptor, caller
from fedge.protocol.metadata import DEVICE_ID_METADATA
from fedge.protocol.serde import install_state_from_proto, manifest_response
from fedge.protocol.transport import ServerTLS, add_service, bind, create_server
from fedge.release.drift import DeviceDrift, Window
from fedge.release.store import Measured, ReleaseStore
from fedge.release.telemetry import DeviceTelemetry
from fedge.v1 import hub_pb2

__all__ = [
    "ClaimedDevice",
    "Delegate",
    "DownloadSlots",
    "HubServicer",
    "add_hub_service",
    "serve_hub",
]


@dataclass(frozen=True)
class ClaimedDevice:
    """A device identified by its certificate's name or, on a test network, its own claim."""

    device_id: str


class DownloadSlots:
    """A non-blocking counting semaphore for downloads in flight (``None`` = no cap)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise ConfigError("max-concurrent-downloads", limit, "must be an integer >= 1")
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> Callable[[], None] | None:
        """A release function if a slot was free, else ``None``. Releasing twice is harmless
        (a stream ends both by its generator closing and by the RPC's termination callback)."""
        with self._lock:
            if self.limit is not None and self.active >= self.limit:
                return None
            self.active += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.active -= 1

        return release


#: ``delegate(caller, claimed)``: whether the authenticated ``caller`` may speak for the device
#: ``claimed`` (raises to refuse with a reason of its own).
Delegate = Callable[[Any, str], bool]


def _device_id(context: grpc.ServicerContext, claimed: str, delegate: Delegate | None) -> str:
    who = caller(context)
    if who is None:  # a stand-alone hub on a test network: the request names the device
        if not claimed:
            raise PayloadError("device_id must not be empty")
        return claimed
    device_id = str(who.device_id)
    if claimed and claimed != device_id:
        if delegate is not None and delegate(who, claimed):
            return claimed
        raise PermissionDeniedError(f"device {device_id!r} cannot act as {claimed!r}")
    return device_id


class HubServicer:
    """Serves manifests, artifact chunks and install reports from a release store.

    ``max_downloads`` caps artifact downloads in flight (``None``: no cap); beyond it a
    download is refused with a retry hint of ``retry_after_ms``.
    """

    def __init__(
        self,
        store: ReleaseStore,
        *,
        max_downloads: int | None = None,
        retry_after_ms: int = 500,
        on_drift: Callable[[DeviceDrift], None] | None = None,
        delegate: Delegate | None = None,
    ) -> None:
        self.store = store
        # Told when a device starts drifting (the coordinator records an event).
        self.on_drift = on_drift
        self.downloads = DownloadSlots(max_downloads)
        self.retry_after_ms = retry_after_ms
        self.delegate = delegate

    def _who(self, context: grpc.ServicerContext, claimed: str) -> str:
        return _device_id(context, claimed, self.delegate)

    def GetManifest(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> hub_pb2.GetManifestResponse:
        """The signed manifest of the release this device should run, if any."""
        signed = self.store.manifest_for(
            device_id=self._who(context, request.device_id),
            profile=request.profile,
            installed_version=request.installed_version,
        )
        return manifest_response(signed)

    def DownloadArtifact(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.DownloadArtifactResponse]:
        """The artifact's bytes from the requested offset, in chunks."""
        device_id = self._who(context, request.device_id)
        length = self.store.artifacts.length(request.sha256)
        release = self.downloads.try_acquire()
        if release is None:
            raise BusyError(
                f"the hub serves {self.downloads.limit} downloads at once; "
                f"retry in {self.retry_after_ms} ms",
                retry_after_ms=self.retry_after_ms,
            )
        context.add_callback(release)  # a cancelled stream frees its slot too
        try:
            chunks = self.store.artifacts.read(
                request.sha256, offset=request.offset, chunk_size=request.chunk_size
            )
            for offset, data in chunks:
                yield hub_pb2.DownloadArtifactResponse(offset=offset, data=data, length=length)
        finally:
            release()
        # Reached only when the whole stream was sent (a cancelled one ends at its yield).
        self.store.record_download(
            device_id=device_id,
            sha256=request.sha256,
            offset=request.offset,
            sent=length - request.offset,
        )

    def ReportInstallStatus(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.ReportInstallStatusRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInstallStatusResponse:
        """Record the outcome of an install attempt."""
        device_id = self._who(context, request.device_id)
        state = install_state_from_proto(request.state)
        logger.info(
            "device %s: release %d %s %s", device_id, request.version, state, request.reason
        )
        self.store.record_status(
            device_id=device_id,
            version=request.version,
            state=state,
            reason=request.reason,
            active_version=request.active_version,
            measured=Measured(
                request.latency_p50_ms, request.latency_p99_ms, request.peak_memory_mb
            ),
        )
        return hub_pb2.ReportInstallStatusResponse()

    def ReportInferenceStats(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.ReportInferenceStatsRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInferenceStatsResponse:
        """Keep the device's latest inference telemetry."""
        telemetry = DeviceTelemetry(
            device_id=self._who(context, request.device_id),
            active_version=request.active_version,
            requests=request.requests,
            errors=request.errors,
            latency_p50_ms=request.latency_p50_ms,
            latency_p99_ms=request.latency_p99_ms,
            swaps=request.swaps,
            updated="",
        )
        self.store.telemetry.record(telemetry)
        if request.HasField("drift"):
            self._record_drift(telemetry.device_id, request.drift)
        return hub_pb2.ReportInferenceStatsResponse()

    def _record_drift(self, device_id: str, drift: hub_pb2.DriftWindow) -> None:
        window = Window(
            version=drift.version,
            window=drift.window,
            samples=drift.samples,
            class_counts=tuple(drift.class_counts),
            input_counts=tuple(drift.input_counts),
        )
        result, started = self.store.drift.record(
            device_id, window, self.store.reference(drift.version)
        )
        if started and self.on_drift is not None:
            self.on_drift(result)


def add_hub_service(server: grpc.Server, servicer: HubServicer) -> HubServicer:
    """Register ``servicer`` on a server created by :mod:`fedge.protocol.transport`."""
    add_service(server, hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"], servicer)
    return servicer


def _claimed_device(method: str, context: grpc.ServicerContext) -> ClaimedDevice | None:
    names = context.auth_context().get("x509_common_name") or []
    if names:
        return ClaimedDevice(names[0].decode("utf-8", "replace"))
    claimed = dict(context.invocation_metadata()).get(DEVICE_ID_METADATA)
    return ClaimedDevice(str(claimed)) if claimed else None


def serve_hub(
    store: ReleaseStore,
    *,
    address: str = "127.0.0.1:0",
    max_workers: int = 16,
    max_downloads: int | None = None,
    servicer: HubServicer | None = None,
    authenticate: Authenticate | None = None,
    tls: ServerTLS | None = None,
) -> tuple[grpc.Server, int]:
    """Start a stand-alone hub server (tests, benchmarks), plaintext unless ``tls``;
    ``(server, port)``.

    By default a device is who its certificate or its metadata claim says (``authenticate``
    decides otherwise); the coordinator instead registers the servicer on its own mutual-TLS
    server with its device authentication.
    """
    interceptor = FedgeInterceptor(authenticate=authenticate or _claimed_device)
    server = create_server(max_workers=max_workers, interceptors=[interceptor])
    add_hub_service(server, servicer or HubServicer(store, max_downloads=max_downloads))
    port = bind(server, address, tls, warn_plaintext=False)
    server.start()
    return server, port
