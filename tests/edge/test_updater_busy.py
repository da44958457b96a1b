"""A hub that stays at its download cap: the updater gives up for now without a failure."""

from __future__ import annotations

from pathlib import Path

import grpc

from fedge.coordinator.hub import serve_hub
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import pin_release_key
from fedge.edge.updater import Updater
from fedge.protocol.manifest import public_key_pem
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import publish_linear
from fedge.v1 import hub_pb2, hub_pb2_grpc


def test_a_busy_hub_is_not_a_failed_install_and_the_next_check_installs(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    server, port = serve_hub(store, max_downloads=1)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        # ~8 MB: far more than the transport buffers, so an unread stream stays open.
        signed = publish_linear(store, tmp_path, seed=1, features=4096, classes=512)
        version = signed.manifest.version
        held = hub_pb2_grpc.ModelHubServiceStub(channel).DownloadArtifact(
            hub_pb2.DownloadArtifactRequest(
                sha256=signed.manifest.sha256, chunk_size=4096, device_id="other"
            ),
            timeout=60,
        )
        assert next(held).offset == 0  # another device holds the only download slot

        pin_release_key(tmp_path / "dev", public_key_pem(key.public_key()))
        phases: list[str] = []
        device = Updater(
            state_dir=tmp_path / "dev",
            hub=GrpcHubClient(channel, timeout=10),
            device_id="dev",
            on_phase=phases.append,
            busy_budget=1.0,
            busy_backoff_max=0.2,
        )
        report = device.check_once()
        assert report is not None and report.state == "downloading", report
        assert "download cap" in report.reason
        assert "busy" in phases and device.active_version() == 0
        assert not device.outbox.path.exists()  # nothing queued as an outcome
        counts = store.status(version)
        assert counts["downloading"] == 1 and counts["failed"] == 0

        held.cancel()  # the slot is free again
        report = device.check_once()
        assert report is not None and report.state == "installed", report
        assert device.active_version() == version
        assert store.status(version)["failed"] == 0
    finally:
        channel.close()
        server.stop(grace=None)
        store.close()
