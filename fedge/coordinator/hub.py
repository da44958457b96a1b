"""The cloud's model hub: the hub backend over the release store (see :mod:`fedge.protocol.hub`).

Manifests, artifacts and install outcomes come from :class:`fedge.release.store.ReleaseStore`;
every download served to its end is recorded, so ``fedge release status`` shows how many the
cloud served. A site gateway asks for its site's devices' manifests and relays their install
reports and telemetry (``delegate`` says whom a caller may speak for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from fedge.log import logger
from fedge.protocol.drift import NoisyWindow
from fedge.protocol.endpoint import HUB_SERVICE, HubService
from fedge.protocol.hub import ArtifactSource, DownloadSlots
from fedge.protocol.interceptor import Authenticate, FedgeInterceptor
from fedge.protocol.manifest import SignedManifest
from fedge.protocol.metadata import DEVICE_ID_METADATA
from fedge.protocol.serde import install_state_from_proto
from fedge.protocol.transport import ServerTLS, add_service, bind, create_server
from fedge.records import copy_fields
from fedge.release.drift import DeviceDrift
from fedge.release.store import Measured, ReleaseStore
from fedge.release.telemetry import DeviceTelemetry
from fedge.v1 import hub_pb2

__all__ = ["ClaimedDevice", "CloudHub", "Delegate", "serve_hub"]

#: ``delegate(caller, claimed)``: whether the authenticated ``caller`` may speak for the device
#: ``claimed`` (raises to refuse with a reason of its own).
Delegate = Callable[[Any, str], bool]


@dataclass(frozen=True)
class ClaimedDevice:
    """A device identified by its certificate's name or, on a test network, its own claim."""

    device_id: str


class CloudHub:
    """The hub backend of the cloud: the release store answers."""

    def __init__(
        self,
        store: ReleaseStore,
        *,
        on_drift: Callable[[DeviceDrift], None] | None = None,
        delegate: Delegate | None = None,
    ) -> None:
        self.store = store
        # Told when a device starts drifting (the coordinator records an event).
        self.on_drift = on_drift
        self._delegate = delegate

    def speaks_for(self, device: Any, claimed: str) -> bool:
        """A gateway for its site's devices (``delegate``); nobody else for another."""
        return self._delegate is not None and self._delegate(device, claimed)

    def manifest_for(
        self, device_id: str, *, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """The release store's choice for ``device_id``."""
        return self.store.manifest_for(
            device_id=device_id, profile=profile, installed_version=installed_version
        )

    def artifact(self, sha256: str) -> ArtifactSource:
        """The store's artifacts."""
        return self.store.artifacts

    def downloaded(self, device_id: str, sha256: str, *, offset: int, sent: int) -> None:
        """Count the download in the release's status."""
        self.store.record_download(device_id=device_id, sha256=sha256, offset=offset, sent=sent)

    def report_install(self, device_id: str, request: hub_pb2.ReportInstallStatusRequest) -> None:
        """Record the outcome of an install attempt."""
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

    def report_telemetry(
        self, device_id: str, request: hub_pb2.ReportInferenceStatsRequest
    ) -> None:
        """Keep the device's latest inference telemetry, and its drift window."""
        telemetry = copy_fields(DeviceTelemetry, request, device_id=device_id, updated="")
        self.store.telemetry.record(telemetry)
        if request.HasField("drift"):
            self._record_drift(device_id, request.drift)

    def _record_drift(self, device_id: str, drift: hub_pb2.DriftWindow) -> None:
        window = copy_fields(
            NoisyWindow,
            drift,
            class_counts=tuple(drift.class_counts),
            input_counts=tuple(drift.input_counts),
            feature_counts=tuple(tuple(f.counts) for f in drift.features),
        )
        result, started = self.store.drift.record(
            device_id, window, self.store.reference(drift.version)
        )
        if started and self.on_drift is not None:
            self.on_drift(result)


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
    servicer: HubService | None = None,
    authenticate: Authenticate | None = None,
    tls: ServerTLS | None = None,
) -> tuple[grpc.Server, int]:
    """Start a stand-alone hub server (tests, benchmarks), plaintext unless ``tls``;
    ``(server, port)``.

    By default a device is who its certificate or its metadata claim says (``authenticate``
    decides otherwise); the coordinator instead serves the hub on its fleet endpoint with its
    device authentication.
    """
    interceptor = FedgeInterceptor(authenticate=authenticate or _claimed_device)
    server = create_server(max_workers=max_workers, interceptors=[interceptor])
    hub = servicer or HubService(CloudHub(store), DownloadSlots(max_downloads))
    add_service(server, HUB_SERVICE, hub)
    port = bind(server, address, tls, warn_plaintext=False)
    server.start()
    return server, port
