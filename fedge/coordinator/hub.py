"""ModelHubService: the coordinator's side of over-the-air model delivery.

Thin by design: every RPC delegates to :class:`fedge.release.ReleaseStore` and maps fedge errors
to gRPC status codes. When the channel is mutual TLS, the device identity is the peer
certificate's common name and a request claiming another identity is refused.

Downloads are capped (``max_downloads`` at once): a device beyond the cap gets
``RESOURCE_EXHAUSTED`` at once, with the standard ``grpc-retry-pushback-ms`` trailing metadata
as a retry hint, instead of queueing on a worker thread the other RPCs need.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc

from fedge.errors import ConfigError, FedgeError
from fedge.log import logger
from fedge.release import (
    ArtifactNotFoundError,
    DeviceTelemetry,
    ReleaseError,
    ReleaseNotFoundError,
    ReleaseStore,
    VerificationError,
    open_release_store,
)
from fedge.v1 import hub_pb2, hub_pb2_grpc

__all__ = [
    "RETRY_PUSHBACK_KEY",
    "STATE_FROM_PROTO",
    "STATE_TO_PROTO",
    "HubServicer",
    "add_hub_service",
    "certificate_identity",
    "coordinator_hub_servicer",
    "serve_hub",
    "status_code_for",
]

STATE_TO_PROTO = {
    "offered": hub_pb2.INSTALL_STATE_OFFERED,
    "downloading": hub_pb2.INSTALL_STATE_DOWNLOADING,
    "installed": hub_pb2.INSTALL_STATE_INSTALLED,
    "refused": hub_pb2.INSTALL_STATE_REFUSED,
    "rolled_back": hub_pb2.INSTALL_STATE_ROLLED_BACK,
    "failed": hub_pb2.INSTALL_STATE_FAILED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}

T = TypeVar("T")

# gRPC's own name for a server's retry hint (gRPC A6 retry design): milliseconds to wait.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def status_code_for(exc: FedgeError) -> grpc.StatusCode:
    """The gRPC status code for a fedge error."""
    if isinstance(exc, ReleaseNotFoundError | ArtifactNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, VerificationError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, ReleaseError | ConfigError):
        return grpc.StatusCode.INVALID_ARGUMENT
    from fedge.coordinator.errors import status_for  # authentication and other service errors

    return status_for(exc)


def _guard(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    try:
        return call()
    except FedgeError as exc:
        context.abort(status_code_for(exc), str(exc))
        raise  # unreachable: abort raises


Authenticate = Callable[[grpc.ServicerContext, str], str]


def certificate_identity(context: grpc.ServicerContext, claimed: str) -> str:
    """Default identity: the mTLS certificate CN when there is one, else ``claimed``."""
    names = context.auth_context().get("x509_common_name") or []
    if names:
        peer = names[0].decode("utf-8", "replace")
        if claimed and claimed != peer:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"device {peer!r} cannot act as {claimed!r}"
            )
        return peer
    if not claimed:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "device_id must not be empty")
    return claimed


class _DownloadSlots:
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


class HubServicer(hub_pb2_grpc.ModelHubServiceServicer):
    """Serves manifests, artifact chunks and install reports from a release store.

    ``max_downloads`` caps artifact downloads in flight (``None``: no cap); beyond it a
    download is refused with ``RESOURCE_EXHAUSTED`` and a retry hint of ``retry_after_ms``.
    """

    def __init__(
        self,
        store: ReleaseStore,
        *,
        authenticate: Authenticate | None = None,
        max_downloads: int | None = None,
        retry_after_ms: int = 500,
    ) -> None:
        self.store = store
        # The coordinator passes its own device authentication (enrolled, not revoked).
        self.authenticate = authenticate or certificate_identity
        self.downloads = _DownloadSlots(max_downloads)
        self.retry_after_ms = retry_after_ms

    def _identity(self, context: grpc.ServicerContext, request: Any, kind: type) -> str:
        if not isinstance(request, kind):  # the coordinator's lenient decoder: a Malformed
            reason = getattr(request, "reason", "malformed request")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(reason))
        return _guard(context, lambda: self.authenticate(context, request.device_id))

    def GetManifest(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> hub_pb2.GetManifestResponse:
        device_id = self._identity(context, request, hub_pb2.GetManifestRequest)
        signed = _guard(
            context,
            lambda: self.store.manifest_for(
                device_id=device_id,
                profile=request.profile,
                installed_version=request.installed_version,
            ),
        )
        if signed is None:
            return hub_pb2.GetManifestResponse(available=False)
        return hub_pb2.GetManifestResponse(
            available=True,
            manifest=hub_pb2.SignedManifest(
                manifest_json=signed.manifest_json,
                signature=signed.signature,
                key_id=signed.key_id,
            ),
        )

    def DownloadArtifact(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.DownloadArtifactResponse]:
        self._identity(context, request, hub_pb2.DownloadArtifactRequest)
        length = _guard(context, lambda: self.store.artifact_length(request.sha256))
        release = self.downloads.try_acquire()
        if release is None:
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(self.retry_after_ms)),))
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the hub serves {self.downloads.limit} downloads at once; "
                f"retry in {self.retry_after_ms} ms",
            )
        assert release is not None  # abort raised
        context.add_callback(release)  # a cancelled stream frees its slot too
        try:
            chunks = _guard(
                context,
                lambda: self.store.read_artifact(
                    request.sha256, offset=request.offset, chunk_size=request.chunk_size
                ),
            )
            for offset, data in chunks:
                yield hub_pb2.DownloadArtifactResponse(offset=offset, data=data, length=length)
        except FedgeError as exc:
            context.abort(status_code_for(exc), str(exc))
        finally:
            release()

    def ReportInstallStatus(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.ReportInstallStatusRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInstallStatusResponse:
        device_id = self._identity(context, request, hub_pb2.ReportInstallStatusRequest)
        state = STATE_FROM_PROTO.get(request.state)
        if state is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown state {request.state}")
        logger.info(
            "device %s: release %d %s %s", device_id, request.version, state, request.reason
        )
        _guard(
            context,
            lambda: self.store.record_status(
                device_id=device_id,
                version=request.version,
                state=str(state),
                reason=request.reason,
                active_version=request.active_version,
            ),
        )
        return hub_pb2.ReportInstallStatusResponse()

    def ReportInferenceStats(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.ReportInferenceStatsRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInferenceStatsResponse:
        device_id = self._identity(context, request, hub_pb2.ReportInferenceStatsRequest)
        telemetry = DeviceTelemetry(
            device_id=device_id,
            active_version=request.active_version,
            requests=request.requests,
            errors=request.errors,
            latency_p50_ms=request.latency_p50_ms,
            latency_p99_ms=request.latency_p99_ms,
            swaps=request.swaps,
            updated="",
        )
        _guard(context, lambda: self.store.record_telemetry(telemetry))
        return hub_pb2.ReportInferenceStatsResponse()


def add_hub_service(
    server: grpc.Server,
    store: ReleaseStore,
    *,
    authenticate: Authenticate | None = None,
    max_downloads: int | None = None,
) -> HubServicer:
    """Register a :class:`HubServicer` on an existing server (the coordinator's)."""
    servicer = HubServicer(store, authenticate=authenticate, max_downloads=max_downloads)
    hub_pb2_grpc.add_ModelHubServiceServicer_to_server(servicer, server)
    return servicer


def coordinator_hub_servicer(
    *, state_dir: Path, state: Any, insecure: bool, max_downloads: int | None = 32
) -> HubServicer:
    """The hub of a coordinator: its state directory's store and its device authentication.

    ``state`` is the coordinator's :class:`fedge.coordinator.state.State`: a device must be
    enrolled and not revoked (its mTLS certificate, or with ``insecure`` its metadata claim).
    ``max_downloads`` is the coordinator config's ``max-concurrent-downloads``.
    """
    from fedge.coordinator.auth import authenticate_device

    def fleet() -> list[str]:  # percentages are of the enrolled, unrevoked fleet
        return [d.device_id for d in state.devices() if not d.revoked]

    store = open_release_store(state_dir=state_dir, with_key=True, fleet=fleet)

    def authenticate(context: grpc.ServicerContext, _claimed: str) -> str:
        return str(authenticate_device(context, state, insecure=insecure).device_id)

    return HubServicer(store, authenticate=authenticate, max_downloads=max_downloads)


def serve_hub(
    store: ReleaseStore,
    *,
    address: str = "127.0.0.1:0",
    max_workers: int = 16,
    servicer: HubServicer | None = None,
    max_downloads: int | None = None,
) -> tuple[grpc.Server, int]:
    """Start a stand-alone insecure hub server on loopback; return ``(server, port)``.

    For tests and benchmarks (no download cap unless ``max_downloads``); the coordinator
    registers the servicer on its own TLS server.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    if servicer is None:
        add_hub_service(server, store, max_downloads=max_downloads)
    else:
        hub_pb2_grpc.add_ModelHubServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
