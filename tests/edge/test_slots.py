"""A/B slots, the atomic pointer and start-up recovery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import pin_release_key
from fedge.edge.slots import Slots, SlotState
from fedge.edge.updater import Updater
from fedge.errors import VerificationError
from fedge.files import atomic_write
from fedge.protocol.manifest import SignedManifest, public_key_pem
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import publish_linear


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReleaseStore]:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    yield store
    store.close()


def _fill(slots: Slots, slot: str, store: ReleaseStore, signed: SignedManifest) -> None:
    tmp = slots.state_dir / f"incoming-{slot}"
    store.artifacts.copy_to(signed.manifest.sha256, tmp)
    slots.write_slot(slot, model=tmp, signed=signed)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "slots.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["slots.json"]


def test_pointer_round_trip() -> None:
    state = SlotState(active="b", previous="a", trial=True, attempts={3: 1}, rejected={2: "nan"})
    assert SlotState.from_json(state.to_json()) == state
    assert state.serving == "a"


def test_trial_commit_and_revert(tmp_path: Path, store: ReleaseStore) -> None:
    v1 = publish_linear(store, tmp_path, seed=1)
    v2 = publish_linear(store, tmp_path, seed=2)
    slots = Slots(tmp_path / "dev")
    _fill(slots, "a", store, v1)
    slots.write_state(SlotState(active="a"))
    assert slots.writable_slot() == "b"
    with pytest.raises(RuntimeError, match="in use"):
        _fill(slots, "a", store, v2)
    _fill(slots, "b", store, v2)
    slots.begin_trial("b", version=2)
    assert slots.state().serving == "a"  # the trial model does not serve yet
    with pytest.raises(RuntimeError, match="both slots"):
        slots.writable_slot()
    slots.revert(reject=(2, "health"))
    assert slots.state() == SlotState(active="a", attempts={2: 1}, rejected={2: "health"})
    slots.begin_trial("b", version=3)
    slots.commit()
    assert slots.state().serving == "b" and slots.state().previous == "a"


def test_verify_slot_detects_tampering(tmp_path: Path, store: ReleaseStore) -> None:
    v1 = publish_linear(store, tmp_path, seed=1)
    slots = Slots(tmp_path / "dev")
    _fill(slots, "a", store, v1)
    assert store.key is not None
    public = store.key.public_key()
    assert slots.verify_slot("a", public_key=public).version == v1.manifest.version
    model = slots.model_path("a")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="hash"):
        slots.verify_slot("a", public_key=public)
    with pytest.raises(VerificationError, match="no manifest"):
        slots.verify_slot("b", public_key=public)


def _updater(state: Path, store: ReleaseStore) -> tuple[Updater, grpc.Channel]:
    assert store.key is not None
    pin_release_key(state, public_key_pem(store.key.public_key()))
    channel = grpc.insecure_channel("127.0.0.1:1")  # recovery needs no hub; reports queue
    return Updater(state_dir=state, hub=GrpcHubClient(channel, timeout=1), device_id="d"), channel


def test_recovery_falls_back_when_the_serving_slot_is_damaged(
    tmp_path: Path, store: ReleaseStore
) -> None:
    v1 = publish_linear(store, tmp_path, seed=1)
    v2 = publish_linear(store, tmp_path, seed=2)
    updater, channel = _updater(tmp_path / "dev", store)
    _fill(updater.slots, "a", store, v1)
    _fill(updater.slots, "b", store, v2)
    updater.slots.write_state(SlotState(active="b", previous="a"))
    updater.slots.model_path("b").write_bytes(b"bit rot")
    reports = updater.recover()
    assert [r.state for r in reports] == ["failed"]
    assert updater.slots.state().serving == "a"
    assert updater.active_version() == v1.manifest.version
    assert updater.outbox.path.read_text().count("\n") == 1  # queued for the coordinator
    channel.close()


def test_an_install_interrupted_twice_is_rejected(tmp_path: Path, store: ReleaseStore) -> None:
    v1 = publish_linear(store, tmp_path, seed=1)
    v2 = publish_linear(store, tmp_path, seed=2)
    updater, channel = _updater(tmp_path / "dev", store)
    _fill(updater.slots, "a", store, v1)
    updater.slots.write_state(SlotState(active="a"))
    for attempt in (1, 2):
        _fill(updater.slots, "b", store, v2)
        updater.slots.begin_trial("b", version=v2.manifest.version)
        reports = updater.recover()  # as after a SIGKILL during the health check
        assert [r.state for r in reports] == ["rolled_back"]
        assert updater.slots.state().serving == "a"
        assert (v2.manifest.version in updater.slots.state().rejected) == (attempt == 2)
    channel.close()
