"""Drift on a real coordinator: devices summarise each window of predictions with noise added on
the device, and the coordinator compares them with the reference distribution the release
carries (computed from the transfer set when it was built): the one device fed inverted images
is flagged after one window, the others are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.data import get_dataset
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.drift import DriftMonitor, DriftSettings
from fedge.errors import ConfigError
from fedge.protocol.drift import DriftReference, psi, reference_from
from fedge.release.publish import publish_artifact
from fedge.release.testing import make_linear_model
from fedge.v1 import control_pb2 as pb

from .conftest import Fleet

WINDOW = 300


def _fit_digits(tmp_path: Path) -> tuple[Path, DriftReference, np.ndarray, np.ndarray]:
    """A linear classifier fitted (least squares) to the digits training split, exported to
    ONNX; its drift reference as a build computes it, on a transfer set of the same
    distribution as the devices' inputs (the training split: digits' public split has only 180
    images, too few for a steady reference); the test split, which the devices see."""
    data = get_dataset("digits")
    x = data.x_train.reshape(len(data.x_train), -1)
    design = np.hstack([x, np.ones((len(x), 1), np.float32)])
    targets = np.eye(data.num_classes, dtype=np.float32)[data.y_train]
    solution = np.linalg.lstsq(design, targets, rcond=None)[0]
    weights, bias = solution[:-1], solution[-1]
    model = make_linear_model(tmp_path / "digits-linear.onnx", weights=(weights, bias))
    reference = reference_from(x, x @ weights + bias)
    test_x = data.x_test.reshape(len(data.x_test), -1).astype(np.float32)
    accuracy = float(((test_x @ weights + bias).argmax(1) == data.y_test).mean())
    assert accuracy > 0.85, accuracy  # a real classifier, not noise
    return model, reference, test_x, data.y_test


def test_a_device_fed_inverted_images_is_flagged_within_one_window(
    fleet: Fleet, tmp_path: Path
) -> None:
    model, reference, test_x, _ = _fit_digits(tmp_path)
    store = fleet.coordinator.releases
    sha, _ = store.add_artifact(model)
    # As a build's report.json carries it: publishing puts it in the signed manifest.
    signed = publish_artifact(
        store, sha256=sha, report={"num_classes": 10, "drift": reference.to_dict()}, percent=100
    )
    assert signed.manifest.report["drift"] == reference.to_dict()
    names = ["inverted", "plain-1", "plain-2"]
    identities = [fleet.enroll(name) for name in names]
    deliveries = [
        DeviceDelivery(
            channel=fleet.channel(identity.tls()),
            state_dir=Path(identity.state_dir),
            device_id=identity.device_id,
            settings=DeliverySettings(
                interval=3600,
                inference_address=None,
                drift=DriftSettings(window=WINDOW, epsilon=1.0, seed=i),
            ),
        ).start()
        for i, identity in enumerate(identities)
    ]
    try:
        for delivery in deliveries:  # its own loop may have installed it already
            delivery.tick()
            assert delivery.serving()[0] == signed.manifest.version
        rng = np.random.default_rng(0)
        for i, delivery in enumerate(deliveries):
            picks = rng.choice(len(test_x), WINDOW, replace=True)
            x = test_x[picks]
            if names[i] == "inverted":
                x = 1.0 - x  # the camera's polarity flipped: white digits on black turn dark
            for start in range(0, WINDOW, 50):  # requests of 50 images, as a camera batches
                delivery.engine.predict(x[start : start + 50])
            delivery.tick()  # the window closed after WINDOW predictions: it goes out now

        drift = fleet.control_stub().ListDrift(pb.ListDriftRequest(), timeout=10)
        by_name = {d.name: d for d in drift.devices}
        assert set(by_name) == set(names)
        assert drift.threshold == pytest.approx(0.25)
        flagged = by_name["inverted"]
        assert flagged.drifted and flagged.version == signed.manifest.version
        assert max(flagged.psi_classes, flagged.psi_inputs) > 1.0
        for name in ("plain-1", "plain-2"):
            plain = by_name[name]
            assert not plain.drifted, plain
            assert max(plain.psi_classes, plain.psi_inputs) < 0.25
            assert abs(plain.samples - WINDOW) < 60  # a noisy count of the window's predictions

        # The same verdict in the event log, the fleet list, /metrics and `fedge fleet drift`.
        events = fleet.coordinator.state.events()
        drift_events = [e for e in events if e.kind == "drift"]
        assert [e.device_id for e in drift_events] == [flagged.device_id]
        listed = fleet.control_stub().ListDevices(pb.ListDevicesRequest(), timeout=10)
        assert {d.name: d.drifted for d in listed.devices} == {
            "inverted": True,
            "plain-1": False,
            "plain-2": False,
        }
        text = generate_latest(fleet.coordinator.metrics.registry).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("fedge_devices_drifted", ())] == 1
        key = ("fedge_drift_psi", (("device", flagged.device_id), ("kind", "inputs")))
        assert samples[key] == pytest.approx(flagged.psi_inputs)
        out = CliRunner().invoke(app, ["fleet", "drift", *fleet.operator_args])
        assert out.exit_code == 0, out.output
        lines = {line.split()[1].rstrip(":"): line for line in out.output.splitlines()}
        assert "DRIFTED" in lines["inverted"] and ": ok," in lines["plain-1"]
    finally:
        for delivery in deliveries:
            delivery.stop()


def test_windows_carry_noisy_counts_only() -> None:
    reference = DriftReference((0.5, 0.5), (0.5,), (0.5, 0.5))
    monitor = DriftMonitor(DriftSettings(window=100, epsilon=0.5, seed=3))
    monitor.reset(1, reference)
    x = np.zeros((100, 4), np.float32)
    logits = np.tile(np.array([[1.0, 0.0]], np.float32), (100, 1))
    monitor.observe(x[:60], logits[:60], 1)
    assert monitor.take() is None  # the window is not full yet
    monitor.observe(x[:60], logits[:60], 2)  # another release's predictions: not counted
    monitor.observe(x[60:], logits[60:], 1)
    window = monitor.take()
    assert window is not None and monitor.take() is None
    # Every count is the true one plus Laplace noise (scale 2/epsilon = 4), never exact.
    true_counts = (100, 0, 100, 0)
    noisy = (*window.class_counts, *window.input_counts)
    assert all(v != t for v, t in zip(noisy, true_counts, strict=True))
    assert all(abs(v - t) < 60 for v, t in zip(noisy, true_counts, strict=True))
    assert window.epsilon == 0.5 and window.version == 1 and window.window == 1
    assert psi(reference.classes, window.class_counts) > 0.25  # all one class: drifted


def test_psi_of_the_same_distribution_is_zero_and_settings_are_checked() -> None:
    assert psi((0.2, 0.3, 0.5), (20, 30, 50)) == pytest.approx(0.0)
    assert psi((0.5, 0.5), (90, 10)) > 0.25
    with pytest.raises(ConfigError, match="--drift-window"):
        DriftSettings(window=0)
    with pytest.raises(ConfigError, match="--drift-epsilon"):
        DriftSettings(epsilon=0)
    assert DriftReference.from_dict({"classes": [1.0]}) is None
