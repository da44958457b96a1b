"""Release delivery against a real coordinator on loopback (mutual TLS): the release key pinned
at enrolment, the cap on concurrent artifact downloads, and the "downloading" state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from fedge.coordinator.config import CoordinatorConfig, load_coordinator_config
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import PINNED_KEY_FILE, DeviceIdentity
from fedge.edge.updater import Updater
from fedge.errors import ConfigError
from fedge.protocol.manifest import key_id, public_key_pem
from fedge.protocol.metadata import DEVICE_ID_METADATA
from fedge.release.signing import generate_release_key, load_private_key
from fedge.release.store import RELEASE_KEY_FILE, ReleaseStore
from fedge.release.testing import publish_linear
from fedge.v1 import hub_pb2, hub_pb2_grpc

from .conftest import Fleet, start_fleet


def _coordinator_store(fleet: Fleet) -> ReleaseStore:
    """The coordinator's own release store."""
    return fleet.coordinator.releases


def _updater(fleet: Fleet, identity: DeviceIdentity, **kwargs: object) -> Updater:
    client = GrpcHubClient(fleet.channel(identity.tls()), timeout=30, chunk_size=64 * 1024)
    return Updater(
        state_dir=Path(identity.state_dir),
        hub=client,
        device_id=identity.device_id,
        **kwargs,  # type: ignore[arg-type]
    )


def test_enrolment_pins_the_coordinators_release_key(fleet: Fleet, tmp_path: Path) -> None:
    identity = fleet.enroll("dev")
    release_key = load_private_key(path=fleet.root / "state" / RELEASE_KEY_FILE).public_key()
    pinned = (Path(identity.state_dir) / PINNED_KEY_FILE).read_bytes()
    assert pinned == public_key_pem(release_key)
    assert identity.release_key_id == key_id(release_key)

    # A manifest in the coordinator's store signed by another key is refused by the device.
    other = generate_release_key(path=tmp_path / "other.pem")
    forged_store = ReleaseStore(
        root=fleet.root / "state" / "releases",
        key=other,
    )
    forged = publish_linear(forged_store, tmp_path, seed=1)
    forged_store.close()
    delivery = DeviceDelivery(
        channel=fleet.channel(identity.tls()),
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=DeliverySettings(interval=3600, inference_address=None),
    ).start()
    store = _coordinator_store(fleet)
    try:
        report = delivery.tick()
        assert report is not None and report.state == "refused"
        assert report.reason.startswith("signature: signed by unknown key")
        assert delivery.updater is not None and delivery.updater.active_version() == 0
        reports = store.device_reports(forged.manifest.version)
        assert [(r.device_id, r.state) for r in reports] == [(identity.device_id, "refused")]

        # The same bytes signed with the coordinator's release key install.
        good = publish_linear(store, tmp_path, seed=1)
        report = delivery.tick()
        assert report is not None and report.state == "installed", report
        assert delivery.updater.active_version() == good.manifest.version
    finally:
        delivery.stop()
        store.close()


def test_a_state_dir_without_a_pinned_key_refuses_to_start_delivery(fleet: Fleet) -> None:
    from fedge.errors import VerificationError

    identity = fleet.enroll("dev")
    (Path(identity.state_dir) / PINNED_KEY_FILE).unlink()  # an old, pre-pinning state dir
    delivery = DeviceDelivery(
        channel=fleet.channel(identity.tls()),
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=DeliverySettings(interval=3600, inference_address=None),
    )
    with pytest.raises(VerificationError, match="enrol it again"):
        delivery.start()


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator that serves one artifact download at a time."""
    with closing(start_fleet(tmp_path, max_concurrent_downloads=1)) as f:
        yield f


def test_download_cap_answers_resource_exhausted_and_the_updater_retries(
    capped: Fleet, tmp_path: Path
) -> None:
    first, second = capped.enroll("first"), capped.enroll("second")
    store = _coordinator_store(capped)
    try:
        # ~8 MB: far more than the transport buffers, so an unread stream stays open.
        signed = publish_linear(store, tmp_path, seed=1, features=4096, classes=512)
        sha = signed.manifest.sha256

        def download(identity: DeviceIdentity) -> Iterator[hub_pb2.DownloadArtifactResponse]:
            stub = hub_pb2_grpc.ModelHubServiceStub(capped.channel(identity.tls()))
            request = hub_pb2.DownloadArtifactRequest(
                sha256=sha, chunk_size=4096, device_id=identity.device_id
            )
            meta = ((DEVICE_ID_METADATA, identity.device_id),)
            return stub.DownloadArtifact(request, timeout=60, metadata=meta)  # type: ignore[no-any-return]

        held = download(first)
        assert next(held).offset == 0  # the one download slot is taken

        with pytest.raises(grpc.RpcError) as busy:
            next(download(second))
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailing = dict(busy.value.trailing_metadata())  # type: ignore[attr-defined]
        assert int(trailing["grpc-retry-pushback-ms"]) > 0

        phases: list[str] = []
        backed_off = threading.Event()

        def on_phase(phase: str) -> None:
            phases.append(phase)
            if phase == "busy":
                backed_off.set()

        updater = _updater(capped, second, on_phase=on_phase, busy_backoff_max=0.5)
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(updater.check_once()))
        worker.start()
        assert backed_off.wait(60), phases  # refused while the first download holds the slot
        held.cancel()  # type: ignore[attr-defined]  # the first device goes away
        worker.join(120)
        (report,) = result
        assert report is not None and report.state == "installed", report  # type: ignore[attr-defined]
        assert updater.active_version() == signed.manifest.version
        counts = store.status(signed.manifest.version)
        assert counts["installed"] == 1 and counts["failed"] == 0
    finally:
        store.close()


def test_download_cap_is_a_validated_coordinator_option(tmp_path: Path) -> None:
    assert CoordinatorConfig().max_concurrent_downloads == 32
    config = tmp_path / "coordinator.toml"
    config.write_text("[coordinator]\nmax-concurrent-downloads = 4\n")
    assert load_coordinator_config(config).max_concurrent_downloads == 4
    config.write_text("[coordinator]\nmax-concurrent-downloads = 0\n")
    with pytest.raises(ConfigError, match="max-concurrent-downloads: 0 must be an integer >= 1"):
        load_coordinator_config(config)


def test_downloading_state_is_reported_and_shown_by_release_status(
    fleet: Fleet, tmp_path: Path
) -> None:
    from fedge.cli.main import app

    identity = fleet.enroll("dev")
    store = _coordinator_store(fleet)
    in_download, resume = threading.Event(), threading.Event()

    def on_phase(phase: str) -> None:
        if phase == "chunk" and not in_download.is_set():
            in_download.set()
            resume.wait(60)  # hold the install mid-download while the operator looks

    try:
        signed = publish_linear(store, tmp_path, seed=1, features=512, classes=64)
        version = signed.manifest.version
        updater = _updater(fleet, identity, on_phase=on_phase)
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(updater.check_once()))
        worker.start()
        try:
            assert in_download.wait(60)
            assert store.status(version)["downloading"] == 1
            out = CliRunner().invoke(
                app,
                [
                    "release",
                    "status",
                    str(version),
                    "--devices",
                    *fleet.operator_args,
                ],
            )
            assert out.exit_code == 0, out.output
            assert "downloading 1" in out.output and "installed 0" in out.output
            assert f"{identity.device_id} (dev): downloading" in out.output
        finally:
            resume.set()
            worker.join(60)
        (report,) = result
        assert report is not None and report.state == "installed"  # type: ignore[attr-defined]
        counts = store.status(version)
        assert counts["downloading"] == 0 and counts["installed"] == 1
    finally:
        store.close()
