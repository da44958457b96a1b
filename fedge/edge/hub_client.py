"""The device's client of ModelHubService: manifests, resumable downloads, reports, telemetry.

:class:`HubClient` is what the updater needs of a hub; :class:`GrpcHubClient` is that over a
gRPC channel (the device's mutual-TLS channel to its coordinator or site gateway). With an
``--insecure`` test network there is no certificate and the device names itself in metadata.
"""

from collections.abc import Iterator
from typing import Protocol

import grpc

from fedge.edge.inference import InferenceStats
from fedge.protocol.drift import NoisyWindow
from fedge.protocol.manifest import SignedManifest
from fedge.protocol.metadata import DEVICE_ID_METADATA
from fedge.protocol.serde import (
    InstallReport,
    install_state_to_proto,
    signed_manifest_from_proto,
)
from fedge.protocol.wire import use_zero_copy_streams
from fedge.records import copy_fields
from fedge.v1 import hub_pb2, hub_pb2_grpc

__all__ = ["GrpcHubClient", "HubClient"]


class HubClient(Protocol):
    """The updater's view of ModelHubService."""

    def get_manifest(
        self, *, device_id: str, profile: str, installed_version: int
    ) -> SignedManifest | None: ...

    def download(
        self, *, sha256: str, offset: int, device_id: str
    ) -> Iterator[tuple[int, bytes]]: ...

    def report(self, *, device_id: str, report: InstallReport) -> None: ...


def _metadata(device_id: str) -> tuple[tuple[str, str], ...]:
    return ((DEVICE_ID_METADATA, device_id),)


class GrpcHubClient:
    """:class:`HubClient` over a gRPC channel."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 30.0, chunk_size: int = 0):
        self.stub = hub_pb2_grpc.ModelHubServiceStub(channel)
        # Downloads decode without copying each chunk's data twice (fedge.protocol.wire).
        use_zero_copy_streams(
            self.stub, channel, hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"]
        )
        self.timeout = timeout
        self.chunk_size = chunk_size

    def get_manifest(
        self, *, device_id: str, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """The signed manifest the hub targets at this device."""
        reply = self.stub.GetManifest(
            hub_pb2.GetManifestRequest(
                device_id=device_id, profile=profile, installed_version=installed_version
            ),
            timeout=self.timeout,
            metadata=_metadata(device_id),
        )
        return signed_manifest_from_proto(reply.manifest) if reply.available else None

    def download(self, *, sha256: str, offset: int, device_id: str) -> Iterator[tuple[int, bytes]]:
        """Stream ``(offset, chunk)`` from ``offset``."""
        request = hub_pb2.DownloadArtifactRequest(
            sha256=sha256, offset=offset, chunk_size=self.chunk_size, device_id=device_id
        )
        stream = self.stub.DownloadArtifact(
            request, timeout=self.timeout * 10, metadata=_metadata(device_id)
        )
        for chunk in stream:
            yield chunk.offset, chunk.data

    def report(self, *, device_id: str, report: InstallReport) -> None:
        """Send one install report."""
        self.stub.ReportInstallStatus(
            copy_fields(
                hub_pb2.ReportInstallStatusRequest,
                report,
                device_id=device_id,
                state=install_state_to_proto(report.state),
            ),
            timeout=self.timeout,
            metadata=_metadata(device_id),
        )

    def report_inference(
        self, *, device_id: str, stats: InferenceStats, drift: NoisyWindow | None = None
    ) -> None:
        """Send the local inference server's telemetry (counts and latencies only) and, when
        one closed, the latest noisy drift window."""
        request = copy_fields(hub_pb2.ReportInferenceStatsRequest, stats, device_id=device_id)
        if drift is not None:
            features = [hub_pb2.FeatureCounts(counts=c) for c in drift.feature_counts]
            request.drift.CopyFrom(copy_fields(hub_pb2.DriftWindow, drift, features=features))
        self.stub.ReportInferenceStats(
            request,
            timeout=self.timeout,
            metadata=_metadata(device_id),
        )
