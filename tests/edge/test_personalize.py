"""On-device personalisation: a personal last layer, within the ledger, behind the guard, through
the A/B slots, health check and rollback; and on a slim device without torch.

Releases are real signed manifests from a real store, installed by the real updater from a
ModelHubService on loopback; the device's data is dimmed (its sensor differs from the fleet's).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from fedge.app.config import RunConfig
from fedge.app.personalize import NO_BUDGET, TOO_LITTLE_DATA
from fedge.coordinator.hub import serve_hub
from fedge.edge.head import FEATURES_OUTPUT
from fedge.edge.health import HealthConfig, load_model
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import pin_release_key
from fedge.edge.personalize import (
    REASONS,
    PersonalizeSettings,
    PersonalOutcome,
    load_outcome,
    noisy_outcome,
    personalize_serving,
)
from fedge.edge.slots import HEAD_FILE
from fedge.edge.updater import Updater
from fedge.protocol.manifest import public_key_pem
from fedge.release.onnx_info import describe_onnx
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import make_feature_model

from ..conftest import wait_for

DIM = 0.1
FEDGE = [sys.executable, "-m", "fedge.cli"]


@dataclass
class Env:
    tmp: Path
    store: ReleaseStore
    channel: grpc.Channel

    def publish(self, seed: int) -> int:
        model = make_feature_model(self.tmp / f"features-{seed}.onnx", seed=seed)
        inputs, outputs = describe_onnx(model)
        signed = self.store.publish(
            artifact=model,
            name="features",
            profile="cpu-small",
            percent=100,
            inputs=inputs,
            outputs=outputs,
        )
        return signed.manifest.version

    def device(self, name: str, **kwargs: object) -> Updater:
        state = self.tmp / "devices" / name
        assert self.store.key is not None
        pin_release_key(state, public_key_pem(self.store.key.public_key()))
        client = GrpcHubClient(self.channel, timeout=10)
        return Updater(state_dir=state, hub=client, device_id=name, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    server, port = serve_hub(store)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Env(tmp_path, store, channel)
    channel.close()
    server.stop(grace=None)
    store.close()


def dim_data(path: Path, *, samples: int, seed: int = 0) -> Path:
    """Labelled data of a dimmed sensor: labelled by what the fleet model says of the undimmed
    input, seen by this device at a tenth of its brightness."""
    session = ort.InferenceSession(str(make_feature_model(path.with_suffix(".onnx"), seed=seed)))
    x = np.random.default_rng(seed + 7).standard_normal((samples, 16)).astype(np.float32)
    y = session.run(["logits"], {"x": x})[0].argmax(1)
    np.savez(path, x=x * DIM, y=y)
    return path


def accuracy(device: Updater, data: Path) -> float:
    from fedge.inference.runners import predict

    slot = device.slots.state().serving
    assert slot is not None
    with np.load(data) as arrays:
        x, y = arrays["x"], arrays["y"]
    return float(
        (predict(load_model(device.slots.model_path(slot), "onnxruntime"), x).argmax(1) == y).mean()
    )


def test_a_dim_device_serves_its_personal_layer_fitted_within_its_ledger(env: Env) -> None:
    version = env.publish(0)
    device = env.device("dim")
    assert device.check_once().state == "installed"  # type: ignore[union-attr]
    data = dim_data(env.tmp / "dim.npz", samples=600)
    global_slot = device.slots.state().serving
    before = accuracy(device, data)
    settings = PersonalizeSettings(data=data, epsilon=8.0, fits=2, epochs=8)
    outcome = personalize_serving(device.state_dir, settings, public_key=device.public_key)
    assert outcome.served and outcome.reason == "gain", outcome
    assert outcome.method == "dp-sgd" and outcome.epsilon is not None
    assert 0 < outcome.epsilon <= 8.0
    assert outcome.personal_accuracy > outcome.global_accuracy
    state = device.slots.state()
    assert state.serving != global_slot and not state.trial
    assert (device.slots.slot_dir(state.serving) / HEAD_FILE).is_file()  # type: ignore[arg-type]
    assert device.active_version() == version  # the release it was fitted on, still verified
    assert accuracy(device, data) > before
    assert load_outcome(device.state_dir) == outcome
    # The same budget runs out: the ledger refuses the third fit planned for two.
    personalize_serving(device.state_dir, settings, public_key=device.public_key)
    third = personalize_serving(device.state_dir, settings, public_key=device.public_key)
    assert (third.served, third.reason) == (False, NO_BUDGET)


def test_a_personal_layer_that_fails_the_health_check_rolls_back_to_the_global_model(
    env: Env,
) -> None:
    env.publish(0)
    device = env.device("floor")
    device.check_once()
    data = dim_data(env.tmp / "dim.npz", samples=600)
    global_slot = device.slots.state().serving
    floor = HealthConfig(accuracy_floor=1.0, labelled=data)  # better than any fit can be
    outcome = personalize_serving(
        device.state_dir,
        PersonalizeSettings(data=data, method="numpy"),
        public_key=device.public_key,
        health=floor,
    )
    assert not outcome.served and outcome.reason.startswith("rolled back: health check failed")
    state = device.slots.state()
    assert (state.serving, state.trial) == (global_slot, False)
    assert not (device.slots.slot_dir(global_slot) / HEAD_FILE).exists()  # type: ignore[arg-type]


def test_too_little_data_keeps_the_global_model_and_says_why(env: Env) -> None:
    env.publish(0)
    device = env.device("few")
    device.check_once()
    serving = device.slots.state().serving
    data = dim_data(env.tmp / "few.npz", samples=12)
    outcome = personalize_serving(
        device.state_dir, PersonalizeSettings(data=data), public_key=device.public_key
    )
    assert (outcome.served, outcome.reason) == (False, TOO_LITTLE_DATA)
    assert device.slots.state().serving == serving
    proc = subprocess.run(
        [*FEDGE, "edge", "personalize", "--data", str(data), "--state", str(device.state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "keeps the global model (too little data)" in proc.stdout


def test_a_new_release_replaces_the_personal_layer_and_is_personalised_again(env: Env) -> None:
    env.publish(0)
    device = env.device("again")
    device.check_once()
    data = dim_data(env.tmp / "dim.npz", samples=600)
    settings = PersonalizeSettings(data=data, method="numpy")
    assert personalize_serving(device.state_dir, settings, public_key=device.public_key).served
    v2 = env.publish(1)
    assert device.check_once().state == "installed"  # type: ignore[union-attr]
    slot = device.slots.state().serving
    assert not (device.slots.slot_dir(slot) / HEAD_FILE).exists()  # type: ignore[arg-type]
    outcome = personalize_serving(device.state_dir, settings, public_key=device.public_key)
    assert outcome.version == v2


def test_a_slim_device_without_torch_fits_its_last_layer_with_numpy(env: Env) -> None:
    env.publish(0)
    device = env.device("slim")
    device.check_once()
    data = dim_data(env.tmp / "dim.npz", samples=600)
    script = textwrap.dedent(
        f"""
        import sys
        from importlib.abc import MetaPathFinder

        class NoTorch(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "opacus", "flwr"):
                    raise ImportError(f"{{name}} is not installed on a slim device")
                return None

        sys.meta_path.insert(0, NoTorch())
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda n, *a: None if n in ("torch", "opacus") else real(n, *a)
        from pathlib import Path
        from fedge.edge.identity import load_pinned_key
        from fedge.edge.personalize import PersonalizeSettings, personalize_serving
        state = Path({str(device.state_dir)!r})
        outcome = personalize_serving(
            state, PersonalizeSettings(data=Path({str(data)!r})),
            public_key=load_pinned_key(state),
        )
        assert "torch" not in sys.modules
        print(outcome.method, outcome.served, outcome.reason)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numpy", "True", "gain"]
    assert (device.slots.slot_dir(device.slots.state().serving) / HEAD_FILE).is_file()  # type: ignore[arg-type]


def test_the_reported_outcome_is_noised_and_its_reason_one_of_a_fixed_set() -> None:
    outcome = PersonalOutcome(3, True, "gain", gain=0.2, samples=100)
    rng = np.random.default_rng(0)
    draws = [noisy_outcome(outcome, epsilon=1.0, rng=rng) for _ in range(4000)]
    gains = np.array([g for g, _ in draws])
    assert gains.std() > 0.5  # one device's figure is drowned ...
    assert abs(np.clip(gains, -1, 1).mean() - 0.2) < 0.15  # ... a fleet's mean is not
    reasons = [r for _, r in draws]
    assert set(reasons) <= set(REASONS)
    # Randomised response: the true reason is the most frequent across a fleet's reports.
    assert max(set(reasons), key=reasons.count) == "gain"


def test_a_device_personalises_each_release_it_installs_and_serves_the_result(env: Env) -> None:
    from fedge.edge.delivery import DeliverySettings, DeviceDelivery

    version = env.publish(0)
    device = env.device("delivery")  # pins the key in its state directory
    data = dim_data(env.tmp / "dim.npz", samples=600)
    settings = DeliverySettings(
        interval=3600,
        inference_address=None,
        drift=None,
        personalize=PersonalizeSettings(data=data, method="numpy"),
    )
    delivery = DeviceDelivery(
        channel=env.channel, state_dir=device.state_dir, device_id="delivery", settings=settings
    ).start()
    try:
        # The update loop installs the release as it starts, then personalises it.
        wait_for(lambda: load_outcome(device.state_dir) is not None, 60, "a personalisation")
        outcome = load_outcome(device.state_dir)
        assert outcome is not None and outcome.served and outcome.version == version
        with np.load(data) as arrays:
            x, y = arrays["x"], arrays["y"]

        def served_accuracy() -> float:
            served, served_version = delivery.engine.predict(x)
            assert served_version == version
            return float((served.argmax(1) == y).mean())

        # The engine swaps to the personal slot right after the outcome is written.
        wait_for(lambda: served_accuracy() > outcome.global_accuracy, 30, "the personal layer")
    finally:
        delivery.stop()


def test_a_release_built_by_simulate_is_personalised_on_a_dim_device(
    env: Env, tiny_config: RunConfig
) -> None:
    from fedge.data import get_dataset
    from fedge.release.publish import publish_build
    from fedge.simulation import simulate

    run = env.tmp / "run"
    simulate(tiny_config.replace(student="student-cnn", release_epochs=2), out_dir=run)
    for name in ("model.onnx", "model_fp32.onnx"):  # int8 keeps the second output
        outputs = [o.name for o in describe_onnx(run / "release" / name)[1]]
        assert outputs == ["logits", FEATURES_OUTPUT], name
    signed = publish_build(env.store, run / "release", percent=100)
    assert [s.name for s in signed.manifest.outputs] == ["logits", FEATURES_OUTPUT]
    device = env.device("simulated")
    assert device.check_once().state == "installed"  # type: ignore[union-attr]
    digits = get_dataset("digits")
    data = env.tmp / "digits-dim.npz"
    np.savez(data, x=digits.x_train * DIM, y=digits.y_train)
    before = accuracy(device, data)
    settings = PersonalizeSettings(data=data, epsilon=8.0, fits=2, epochs=8)
    outcome = personalize_serving(device.state_dir, settings, public_key=device.public_key)
    assert outcome.served and outcome.method == "dp-sgd", outcome
    assert outcome.version == signed.manifest.version
    assert outcome.personal_accuracy > outcome.global_accuracy
    assert accuracy(device, data) > before
