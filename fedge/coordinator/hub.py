"""ModelHubService: the coordinator's side of over-the-air model delivery.

Thin by design: every RPC delegates to :class:`fedge.release.ReleaseStore` and maps fedge errors
to gRPC status codes. When the channel is mutual TLS, the device identity is the peer
certificate's common name and a request claiming another identity is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TypeVar

import grpc

from fedge.errors import ConfigError, FedgeError
from fedge.log import logger
from fedge.release import (
    ArtifactNotFoundError,
    ReleaseNotFoundError,
    ReleaseStore,
    VerificationError,
)
from fedge.v1 import hub_pb2, hub_pb2_grpc

__all__ = [
    "STATE_FROM_PROTO",
    "STATE_TO_PROTO",
    "HubServicer",
    "add_hub_service",
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


def status_code_for(exc: FedgeError) -> grpc.StatusCode:
    """The gRPC status code for a fedge error."""
    if isinstance(exc, ReleaseNotFoundError | ArtifactNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, VerificationError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, ConfigError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INVALID_ARGUMENT


def _guard(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    try:
        return call()
    except FedgeError as exc:
        context.abort(status_code_for(exc), str(exc))
        raise  # unreachable: abort raises


def _identity(context: grpc.ServicerContext, claimed: str) -> str:
    """The caller's identity: the mTLS certificate CN when there is one, else ``claimed``."""
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


class HubServicer(hub_pb2_grpc.ModelHubServiceServicer):
    """Serves manifests, artifact chunks and install reports from a release store."""

    def __init__(self, store: ReleaseStore) -> None:
        self.store = store

    def GetManifest(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> hub_pb2.GetManifestResponse:
        device_id = _identity(context, request.device_id)
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
        length = _guard(context, lambda: self.store.artifact_length(request.sha256))
        chunks = _guard(
            context,
            lambda: self.store.read_artifact(
                request.sha256, offset=request.offset, chunk_size=request.chunk_size
            ),
        )
        try:
            for offset, data in chunks:
                yield hub_pb2.DownloadArtifactResponse(offset=offset, data=data, length=length)
        except FedgeError as exc:
            context.abort(status_code_for(exc), str(exc))

    def ReportInstallStatus(  # noqa: N802 (gRPC method name)
        self, request: hub_pb2.ReportInstallStatusRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ReportInstallStatusResponse:
        device_id = _identity(context, request.device_id)
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


def add_hub_service(server: grpc.Server, store: ReleaseStore) -> HubServicer:
    """Register a :class:`HubServicer` on an existing server (the coordinator's)."""
    servicer = HubServicer(store)
    hub_pb2_grpc.add_ModelHubServiceServicer_to_server(servicer, server)
    return servicer


def serve_hub(
    store: ReleaseStore,
    *,
    address: str = "127.0.0.1:0",
    max_workers: int = 16,
    servicer: HubServicer | None = None,
) -> tuple[grpc.Server, int]:
    """Start a stand-alone insecure hub server on loopback; return ``(server, port)``.

    For tests and benchmarks; the coordinator registers the servicer on its own TLS server.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    if servicer is None:
        add_hub_service(server, store)
    else:
        hub_pb2_grpc.add_ModelHubServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
