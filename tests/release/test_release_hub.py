"""ModelHubService over a real gRPC server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedge.coordinator.hub import serve_hub
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import publish_linear
from fedge.v1 import hub_pb2, hub_pb2_grpc


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[ReleaseStore, hub_pb2_grpc.ModelHubServiceStub]]:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    server, port = serve_hub(store)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield store, hub_pb2_grpc.ModelHubServiceStub(channel)
    channel.close()
    server.stop(grace=None)
    store.close()


def test_manifest_download_and_report(
    hub: tuple[ReleaseStore, hub_pb2_grpc.ModelHubServiceStub], tmp_path: Path
) -> None:
    store, stub = hub
    signed = publish_linear(store, tmp_path, seed=1)
    reply = stub.GetManifest(hub_pb2.GetManifestRequest(device_id="d1", profile="cpu-small"))
    assert reply.available
    assert reply.manifest.manifest_json == signed.manifest_json
    assert reply.manifest.signature == signed.signature
    sha = signed.manifest.sha256
    raw = store.artifacts.path(sha).read_bytes()
    chunks = list(
        stub.DownloadArtifact(
            hub_pb2.DownloadArtifactRequest(sha256=sha, offset=7, chunk_size=100, device_id="d1")
        )
    )
    assert chunks[0].offset == 7 and all(c.length == len(raw) for c in chunks)
    assert b"".join(c.data for c in chunks) == raw[7:]
    assert max(len(c.data) for c in chunks) == 100
    stub.ReportInstallStatus(
        hub_pb2.ReportInstallStatusRequest(
            device_id="d1",
            version=signed.manifest.version,
            state=hub_pb2.INSTALL_STATE_ROLLED_BACK,
            reason="health check failed",
        )
    )
    assert store.status(signed.manifest.version)["rolled_back"] == 1


def test_no_release_for_profile(hub: tuple[ReleaseStore, hub_pb2_grpc.ModelHubServiceStub]) -> None:
    _, stub = hub
    reply = stub.GetManifest(hub_pb2.GetManifestRequest(device_id="d1", profile="cpu-small"))
    assert not reply.available


def test_errors_map_to_status_codes(
    hub: tuple[ReleaseStore, hub_pb2_grpc.ModelHubServiceStub], tmp_path: Path
) -> None:
    store, stub = hub
    signed = publish_linear(store, tmp_path, seed=1)
    cases = [
        (
            hub_pb2.DownloadArtifactRequest(sha256="0" * 64, device_id="d"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (hub_pb2.DownloadArtifactRequest(sha256="xyz", device_id="d"), grpc.StatusCode.NOT_FOUND),
        (hub_pb2.DownloadArtifactRequest(sha256="0" * 64), grpc.StatusCode.INVALID_ARGUMENT),
        (
            hub_pb2.DownloadArtifactRequest(
                sha256=signed.manifest.sha256, offset=10**9, device_id="d"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.DownloadArtifact(request))
        assert err.value.code() == code
    with pytest.raises(grpc.RpcError) as err:
        stub.GetManifest(hub_pb2.GetManifestRequest(device_id="", profile="cpu-small"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportInstallStatus(hub_pb2.ReportInstallStatusRequest(device_id="d", version=1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_authentication_hook_decides_identity(tmp_path: Path) -> None:
    from fedge.coordinator.hub import ClaimedDevice
    from fedge.errors import AuthenticationError
    from fedge.protocol.metadata import DEVICE_ID_METADATA

    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    publish_linear(store, tmp_path, seed=1)

    def authenticate(_method: str, context: grpc.ServicerContext) -> ClaimedDevice:
        claimed = dict(context.invocation_metadata()).get(DEVICE_ID_METADATA, "")
        if claimed != "enrolled":
            raise AuthenticationError(f"unknown device {claimed!r}")
        return ClaimedDevice("enrolled")

    server, port = serve_hub(store, authenticate=authenticate)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = hub_pb2_grpc.ModelHubServiceStub(channel)
        request = hub_pb2.GetManifestRequest(profile="cpu-small")
        with pytest.raises(grpc.RpcError) as err:
            stub.GetManifest(request, metadata=((DEVICE_ID_METADATA, "rogue"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown device 'rogue'" in str(err.value.details())
        reply = stub.GetManifest(request, metadata=((DEVICE_ID_METADATA, "enrolled"),))
        assert reply.available
        with pytest.raises(grpc.RpcError) as err:  # an identity may not act as another
            stub.GetManifest(
                hub_pb2.GetManifestRequest(device_id="other", profile="cpu-small"),
                metadata=((DEVICE_ID_METADATA, "enrolled"),),
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    server.stop(grace=None)
    store.close()


def test_inference_telemetry_reaches_the_store(
    hub: tuple[ReleaseStore, hub_pb2_grpc.ModelHubServiceStub],
) -> None:
    store, stub = hub
    for device, version in (("d1", 3), ("d2", 3), ("d3", 2)):
        stub.ReportInferenceStats(
            hub_pb2.ReportInferenceStatsRequest(
                device_id=device,
                active_version=version,
                requests=10,
                errors=1,
                latency_p50_ms=0.5,
                latency_p99_ms=2.5,
            )
        )
    rows = store.telemetry.latest(version=3)
    assert [(t.device_id, t.requests, t.errors, t.latency_p99_ms) for t in rows] == [
        ("d1", 10, 1, 2.5),
        ("d2", 10, 1, 2.5),
    ]
    assert len(store.telemetry.latest()) == 3
