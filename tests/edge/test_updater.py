"""Device updater fault tests against a real ModelHubService on loopback.

Faults are injected by a servicer subclass on the server side (cut streams, flipped bytes,
replayed or forged manifests); the updater, slots, health check and store under test are real.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from fedge.coordinator.hub import CloudHub, serve_hub
from fedge.edge.health import HealthConfig, check_health
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import pin_release_key
from fedge.edge.updater import Updater
from fedge.inference.profiles import get_profile
from fedge.protocol.endpoint import HubService
from fedge.protocol.hub import DownloadSlots
from fedge.protocol.manifest import SignedManifest, format_time, public_key_pem
from fedge.release.onnx_info import describe_onnx
from fedge.release.signing import generate_release_key, sign_manifest
from fedge.release.store import ReleaseStore
from fedge.release.testing import make_labelled_data, publish_linear
from fedge.v1 import hub_pb2

FEATURES, CLASSES = 256, 32  # ~33 kB model: several 4 kB chunks


class FaultyHub(HubService):
    """A hub that can cut a download, corrupt a chunk or serve a chosen manifest."""

    def __init__(self, store: ReleaseStore) -> None:
        super().__init__(CloudHub(store), DownloadSlots(None))
        self.cut_at: int | None = None
        self.corrupt_at: int | None = None
        self.serve: SignedManifest | None = None
        self.offsets: list[int] = []

    def GetManifest(  # noqa: N802
        self, request: hub_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> hub_pb2.GetManifestResponse:
        if self.serve is None:
            return super().GetManifest(request, context)
        s = self.serve
        return hub_pb2.GetManifestResponse(
            available=True,
            manifest=hub_pb2.SignedManifest(
                manifest_json=s.manifest_json, signature=s.signature, key_id=s.key_id
            ),
        )

    def DownloadArtifact(  # noqa: N802
        self, request: hub_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.DownloadArtifactResponse]:
        self.offsets.append(request.offset)
        for reply in super().DownloadArtifact(request, context):
            end = reply.offset + len(reply.data)
            if self.cut_at is not None and end > self.cut_at:
                keep = self.cut_at - reply.offset
                self.cut_at = None
                if keep > 0:
                    yield hub_pb2.DownloadArtifactResponse(
                        offset=reply.offset, data=reply.data[:keep], length=reply.length
                    )
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection cut by the test")
            if self.corrupt_at is not None and reply.offset <= self.corrupt_at < end:
                data = bytearray(reply.data)
                data[self.corrupt_at - reply.offset] ^= 0xFF
                self.corrupt_at = None
                reply = hub_pb2.DownloadArtifactResponse(
                    offset=reply.offset, data=bytes(data), length=reply.length
                )
            yield reply


@dataclass
class Env:
    tmp: Path
    store: ReleaseStore
    hub: FaultyHub
    channel: grpc.Channel

    def device(self, name: str, **kwargs: object) -> Updater:
        state = self.tmp / "devices" / name
        assert self.store.key is not None
        pin_release_key(state, public_key_pem(self.store.key.public_key()))
        client = GrpcHubClient(self.channel, timeout=10, chunk_size=4096)
        return Updater(state_dir=state, hub=client, device_id=name, **kwargs)  # type: ignore[arg-type]

    def publish(self, seed: int, **kwargs: object) -> SignedManifest:
        return publish_linear(
            self.store, self.tmp, seed=seed, features=FEATURES, classes=CLASSES, **kwargs
        )  # type: ignore[arg-type]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    hub = FaultyHub(store)
    server, port = serve_hub(store, servicer=hub)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Env(tmp_path, store, hub, channel)
    channel.close()
    server.stop(grace=None)
    store.close()


def assert_on_good_model(device: Updater, version: int) -> None:
    """The device serves ``version``, its bytes verify against the pinned key, and it is healthy."""
    state = device.slots.state()
    assert not state.trial and state.serving is not None
    manifest = device.slots.verify_slot(state.serving, public_key=device.public_key)
    assert manifest.version == version
    assert check_health(device.slots.model_path(state.serving), manifest, config=HealthConfig()).ok


def test_install_and_update(env: Env) -> None:
    v1 = env.publish(1).manifest.version
    device = env.device("dev")
    report = device.check_once()
    assert report is not None and (report.state, report.version) == ("installed", v1)
    assert_on_good_model(device, v1)
    assert device.check_once() is None  # nothing new
    v2 = env.publish(2).manifest.version
    report = device.check_once()
    assert report is not None and report.state == "installed"
    assert_on_good_model(device, v2)
    assert env.store.status(v2)["installed"] == 1


def test_twenty_cut_downloads_all_resume(env: Env) -> None:
    rng = random.Random(0)
    signed = env.publish(1)
    length = signed.manifest.length
    for i in range(20):
        device = env.device(f"dev-{i}")
        cuts = sorted(rng.sample(range(1, length), rng.randint(1, 3)))
        for cut in cuts:
            env.hub.cut_at = cut
            env.hub.offsets.clear()
            report = device.check_once()
            assert report is not None and report.state == "failed", report
            assert "interrupted" in report.reason
            part = device.downloads / f"{signed.manifest.sha256}.part"
            assert part.stat().st_size == cut  # every byte before the cut was kept
            assert device.active_version() == 0
        env.hub.offsets.clear()
        report = device.check_once()
        assert report is not None and report.state == "installed", report
        assert env.hub.offsets == [cuts[-1]]  # resumed exactly where it was cut
        assert_on_good_model(device, signed.manifest.version)
    assert env.store.status(signed.manifest.version)["installed"] == 20


def _forge(signed: SignedManifest, key_path: Path, **changes: object) -> SignedManifest:
    from fedge.release.signing import load_private_key

    return sign_manifest(replace(signed.manifest, **changes), key=load_private_key(path=key_path))  # type: ignore[arg-type]


@pytest.mark.parametrize("trial", range(3))
def test_every_tampering_case_is_refused(env: Env, trial: int) -> None:
    rng = random.Random(trial)
    v1 = env.publish(1)
    small = get_profile("cpu-small")
    small = replace(small, budget=replace(small.budget, max_model_bytes=200_000))
    device = env.device("dev", profile=small)
    assert device.check_once() is not None
    good_key = env.tmp / "release.pem"
    attacker = env.tmp / f"attacker-{trial}.pem"
    generate_release_key(path=attacker)
    v2 = env.publish(2, percent=0)  # signed, but not rolled out: served only by the tamperer
    future = format_time(datetime.now(UTC) + timedelta(days=1))
    past = format_time(datetime.now(UTC) - timedelta(seconds=1))
    big = env.publish(3, percent=0)
    cases: list[tuple[str, SignedManifest, str]] = [
        ("wrong signature", _forge(v2, attacker), "signature"),
        (
            "signature of another manifest",
            SignedManifest(
                replace(v2.manifest, version=99).canonical_bytes(), v2.signature, v2.key_id
            ),
            "signature",
        ),
        ("replayed manifest", v1, "not-newer"),
        ("older manifest", _forge(v1, good_key, version=1, created=future), "not-newer"),
        ("expired manifest", _forge(v2, good_key, version=50, expires=past), "expired"),
        ("another profile", _forge(v2, good_key, version=51, profile="gpu-big"), "profile"),
        ("too big for the device", _forge(big, good_key, version=52, length=10**9), "profile"),
    ]
    rng.shuffle(cases)
    for label, manifest, reason in cases:
        env.hub.serve = manifest
        env.hub.offsets.clear()
        report = device.install(manifest)
        assert report.state == "refused", label
        assert report.reason.startswith(reason), (label, report.reason)
        assert env.hub.offsets == [], f"{label}: downloaded before verifying"
        assert_on_good_model(device, v1.manifest.version)
    # Corrupted chunk: the bytes are refused, nothing reaches a slot, a clean retry installs.
    env.hub.serve = v2
    env.hub.corrupt_at = rng.randrange(v2.manifest.length)
    report = device.check_once()
    assert report is not None and report.state == "refused" and report.reason.startswith("sha256")
    assert_on_good_model(device, v1.manifest.version)
    assert list(device.downloads.iterdir()) == []
    report = device.check_once()
    assert report is not None and report.state == "installed"
    assert_on_good_model(device, v2.manifest.version)
    reasons = {r.reason for r in env.store.device_reports(v2.manifest.version)}
    assert reasons  # the operator sees the outcome


@pytest.mark.parametrize("trial", range(3))
def test_failing_health_check_always_rolls_back(env: Env, trial: int) -> None:
    labelled = make_labelled_data(
        env.tmp / "labelled.npz", features=FEATURES, classes=CLASSES, seed=1, samples=128
    )
    health = HealthConfig(accuracy_floor=0.9, labelled=labelled, seed=trial)
    base = env.publish(1)
    device = env.device("dev", health=health)
    assert device.check_once() is not None
    # Three bad releases in a row: NaN outputs, below the accuracy floor, not loadable.
    garbage = env.tmp / "garbage.onnx"
    garbage.write_bytes(random.Random(trial).randbytes(5000))
    inputs, outputs = describe_onnx(env.tmp / f"linear-1-None-{FEATURES}.onnx")
    bad = [
        lambda: env.publish(1, poison="nan"),
        lambda: env.publish(7 + trial),
        lambda: env.store.publish(
            artifact=garbage,
            name="garbage",
            profile="cpu-small",
            percent=100,
            inputs=inputs,
            outputs=outputs,
        ),
    ]
    expected = ["not finite", "below floor", "does not load"]
    for publish, why in zip(bad, expected, strict=True):
        signed = publish()
        report = device.check_once()
        assert report is not None and report.state == "rolled_back", report
        assert why in report.reason
        assert_on_good_model(device, base.manifest.version)
        assert env.store.status(signed.manifest.version)["rolled_back"] == 1
        env.hub.offsets.clear()
        assert device.check_once() is None  # a failed release is not retried
        assert env.hub.offsets == []
        again = device.install(signed)  # not even when pushed directly
        assert again.state == "refused" and again.reason.startswith("rejected")
    # The operator rolls back: a new, higher version with the good artifact, no download.
    rollback = env.store.rollback()
    env.hub.offsets.clear()
    report = device.check_once()
    assert report is not None and report.state == "installed"
    assert env.hub.offsets == []  # identical bytes came from the local slot
    assert_on_good_model(device, rollback.manifest.version)
    assert rollback.manifest.sha256 == base.manifest.sha256


def test_reports_wait_in_the_outbox_until_the_hub_is_back(env: Env, tmp_path: Path) -> None:
    v1 = env.publish(1)
    device = env.device("dev")
    dead = grpc.insecure_channel("127.0.0.1:1")  # nothing listens on port 1
    device.hub = GrpcHubClient(dead, timeout=2)
    report = device.install(v1)  # cannot download: reported as failed, queued
    assert report.state == "failed"
    assert device.outbox.path.read_text().count("\n") == 1
    dead.close()
    device.hub = GrpcHubClient(env.channel, timeout=10)
    assert device.flush_reports() == 1
    assert device.outbox.path.read_text() == ""
    assert env.store.status(v1.manifest.version)["failed"] == 1


def test_updater_without_pinned_key_refuses_to_start(tmp_path: Path) -> None:
    from fedge.errors import VerificationError

    channel = grpc.insecure_channel("127.0.0.1:1")
    with pytest.raises(VerificationError, match="no release key pinned"):
        Updater(state_dir=tmp_path, hub=GrpcHubClient(channel), device_id="d")
    channel.close()


def test_installs_hot_swap_the_inference_server_without_failing_requests(env: Env) -> None:
    import threading

    import numpy as np

    from fedge.edge.inference import InferenceEngine

    engine = InferenceEngine()
    device = env.device("dev", on_installed=lambda path, version: engine.swap(path, version))
    env.publish(1)
    first = device.check_once()
    assert first is not None and first.state == "installed", first
    stop = threading.Event()
    failures: list[Exception] = []
    seen: list[int] = []

    def client() -> None:
        x = np.ones((1, FEATURES), dtype=np.float32)
        while not stop.is_set():
            try:
                seen.append(engine.predict(x)[1])
            except Exception as exc:  # any failure is the bug this test looks for
                failures.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    versions = []
    try:
        for seed in (2, 3, 4, 5):
            versions.append(env.publish(seed).manifest.version)
            report = device.check_once()
            assert report is not None and report.state == "installed", report
    finally:
        stop.set()
        thread.join(timeout=30)
    assert failures == []
    assert seen == sorted(seen)  # never an older model once a newer one answered
    assert seen[-1] == versions[-1] and len(set(seen)) >= 2
    assert engine.stats().swaps == 5
