"""The release store: content-addressed artifacts, SQLite metadata, staged rollout."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedge.errors import ConfigError, ReleaseError, ReleaseNotFoundError
from fedge.protocol.manifest import verify_manifest
from fedge.release.onnx_info import describe_onnx
from fedge.release.rollout import (
    ReleaseTarget,
    bucket_of,
    covered_count,
    rollout_order,
    select_release,
)
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import make_linear_model


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReleaseStore]:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    yield store
    store.close()


def _publish(store: ReleaseStore, tmp_path: Path, *, seed: int, percent: int = 100) -> int:
    model = make_linear_model(tmp_path / f"m{seed}.onnx", seed=seed)
    inputs, outputs = describe_onnx(model)
    signed = store.publish(
        artifact=model,
        name="linear",
        profile="cpu-small",
        percent=percent,
        inputs=inputs,
        outputs=outputs,
        report={"accuracy": 0.9},
    )
    return signed.manifest.version


def test_publish_is_content_addressed_signed_and_monotonic(
    store: ReleaseStore, tmp_path: Path
) -> None:
    v1 = _publish(store, tmp_path, seed=1)
    v2 = _publish(store, tmp_path, seed=2)
    assert (v1, v2) == (1, 2)
    assert store.key is not None
    manifest = verify_manifest(store.signed(v2), public_key=store.key.public_key())
    raw = (tmp_path / "m2.onnx").read_bytes()
    assert manifest.sha256 == hashlib.sha256(raw).hexdigest()
    assert manifest.length == len(raw)
    assert manifest.inputs[0].name == "x" and manifest.inputs[0].shape == (-1, 16)
    assert manifest.report == {"accuracy": 0.9}
    assert store.artifacts.path(manifest.sha256).read_bytes() == raw


def test_read_artifact_from_offset(store: ReleaseStore, tmp_path: Path) -> None:
    version = _publish(store, tmp_path, seed=1)
    sha = store.get(version).sha256
    raw = (tmp_path / "m1.onnx").read_bytes()
    chunks = list(store.artifacts.read(sha, offset=100, chunk_size=64))
    assert chunks[0][0] == 100
    assert b"".join(c for _, c in chunks) == raw[100:]
    with pytest.raises(ReleaseError, match="outside"):
        list(store.artifacts.read(sha, offset=len(raw) + 1))


def test_staged_rollout_targets_a_stable_prefix_of_the_fleet(
    store: ReleaseStore, tmp_path: Path
) -> None:
    devices = [f"device-{i}" for i in range(200)]
    for d in devices:  # the fleet is known before the release
        assert store.manifest_for(device_id=d, profile="cpu-small") is None
    v1 = _publish(store, tmp_path, seed=1, percent=100)
    v2 = _publish(store, tmp_path, seed=2, percent=30)

    def on(version: int) -> set[str]:
        targets = {d: store.manifest_for(device_id=d, profile="cpu-small") for d in devices}
        return {d for d, s in targets.items() if s is not None and s.manifest.version == version}

    canaries = on(v2)
    assert canaries == set(rollout_order(devices)[:60])  # exactly 30%, by identity hash
    assert on(v1) == set(devices) - canaries
    assert store.manifest_for(device_id="device-0", profile="gpu-big") is None
    store.promote(v2, percent=50)
    assert on(v2) > canaries and len(on(v2)) == 100  # canaries stay canaries
    store.promote(v2, percent=100)
    assert on(v2) == set(devices)
    assert store.status(v2)["offered"] == 200


def test_rollout_percent_of_three_devices() -> None:
    releases = [ReleaseTarget(1, "p", 100, False), ReleaseTarget(2, "p", 34, False)]
    fleet = ["a", "b", "c"]
    chosen = [select_release(releases, device_id=d, profile="p", fleet=fleet) for d in fleet]
    assert sorted(chosen) == [1, 1, 2]  # 34% of three devices is exactly one
    assert covered_count(1, 3) == 1 and covered_count(0, 3) == 0 and covered_count(100, 3) == 3
    # Sticky: a device offered release 2 keeps it when the fleet grows and the order shifts.
    canary = fleet[chosen.index(2)]
    bigger = [*fleet, *[f"new-{i}" for i in range(20)]]
    assert select_release(releases, device_id=canary, profile="p", fleet=bigger, offered={2}) == 2
    assert bucket_of("a") == bucket_of("a") and 0 <= bucket_of("a") < 100


def test_rollback_is_a_new_higher_version_with_the_last_good_artifact(
    store: ReleaseStore, tmp_path: Path
) -> None:
    v1 = _publish(store, tmp_path, seed=1)
    v2 = _publish(store, tmp_path, seed=2)
    signed = store.rollback()
    manifest = signed.manifest
    assert manifest.version == 3 and manifest.rollback_of == v2
    assert manifest.sha256 == store.get(v1).sha256
    assert store.get(v2).withdrawn
    served = store.manifest_for(device_id="d", profile="cpu-small")
    assert served is not None and served.manifest.version == 3
    with pytest.raises(ReleaseError, match="rolled back"):
        store.promote(v2, percent=50)


def test_rollout_errors_are_clear_and_lose_nothing(store: ReleaseStore, tmp_path: Path) -> None:
    with pytest.raises(ReleaseNotFoundError, match="no live release"):
        store.rollback()
    v1 = _publish(store, tmp_path, seed=1)
    with pytest.raises(ReleaseError, match="no earlier good release"):
        store.rollback()
    with pytest.raises(ConfigError, match="percent"):
        store.promote(v1, percent=101)
    with pytest.raises(ReleaseNotFoundError, match="version 42"):
        store.promote(42, percent=10)
    with pytest.raises(ReleaseError, match="does not exist"):
        store.publish(
            artifact=tmp_path / "nope.onnx",
            name="x",
            profile="p",
            percent=10,
            inputs=(),
            outputs=(),
        )
    assert [r.version for r in store.list_releases()] == [v1]
    assert not store.get(v1).withdrawn


def test_status_counts_devices_per_state_and_persists(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    version = _publish(store, tmp_path, seed=1)
    for device in ("a", "b", "c"):
        store.manifest_for(device_id=device, profile="cpu-small")
    store.record_status(device_id="a", version=version, state="installed", active_version=version)
    store.record_status(device_id="b", version=version, state="rolled_back", reason="nan")
    with pytest.raises(ReleaseError, match="unknown install state"):
        store.record_status(device_id="c", version=version, state="exploded")
    store.close()
    reopened = ReleaseStore(root=tmp_path / "store")
    status = reopened.status(version)
    assert (status["installed"], status["rolled_back"], status["offered"]) == (1, 1, 1)
    assert ("b", "rolled_back", "nan") in [
        (r.device_id, r.state, r.reason) for r in reopened.device_reports(version)
    ]
    with pytest.raises(ReleaseError, match="signing key"):
        reopened.rollback()
    reopened.close()


def test_describe_onnx_refuses_non_models(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ReleaseError, match="not a readable ONNX model"):
        describe_onnx(bad)


def test_two_writers_on_one_database_wait_instead_of_failing(tmp_path: Path) -> None:
    """The coordinator (polls) and the operator CLI (publish) write the same SQLite file."""
    import threading

    key = generate_release_key(path=tmp_path / "release.pem")
    coordinator = ReleaseStore(root=tmp_path / "store", key=key)
    operator = ReleaseStore(root=tmp_path / "store", key=key)
    errors: list[Exception] = []
    stop = threading.Event()

    def poll() -> None:
        i = 0
        while not stop.is_set():
            try:
                coordinator.manifest_for(device_id=f"d{i % 7}", profile="cpu-small")
            except Exception as exc:  # "database is locked" is the failure looked for
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        versions = [_publish(operator, tmp_path, seed=s) for s in range(5)]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert versions == [1, 2, 3, 4, 5]
    coordinator.close()
    operator.close()
