"""Drift per input feature on a real coordinator: a table model's release carries a reference
per named feature; the device whose sensor for one feature reads 3 standard deviations high is
told apart by that feature's PSI, in ListDrift, /metrics and `fedge fleet drift`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.drift import DriftMonitor, DriftSettings
from fedge.protocol.drift import DriftReference, NoisyWindow, reference_from
from fedge.release.drift import feature_psi
from fedge.release.publish import publish_artifact
from fedge.release.testing import make_linear_model
from fedge.v1 import control_pb2 as pb

from .conftest import Fleet

WINDOW = 400
FEATURES = ["radius", "texture", "perimeter", "area", "smoothness", "compactness"]


def _table_model(tmp_path: Path) -> tuple[Path, DriftReference, np.ndarray]:
    """A linear classifier on six standardised breast-cancer features, its reference with
    the features named, and the rows devices see."""
    data = load_breast_cancer()
    x = data.data[:, : len(FEATURES)]
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    design = np.hstack([x, np.ones((len(x), 1), np.float32)])
    targets = np.eye(2, dtype=np.float32)[data.target]
    solution = np.linalg.lstsq(design, targets, rcond=None)[0]
    weights, bias = solution[:-1], solution[-1]
    model = make_linear_model(tmp_path / "table-linear.onnx", weights=(weights, bias))
    return model, reference_from(x, x @ weights + bias, features=FEATURES), x


def test_a_reference_names_its_features_and_old_ones_still_parse() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3))
    logits = rng.normal(size=(1000, 2))
    ref = reference_from(x, logits, features=["a", "b", "c"])
    assert ref.features == ("a", "b", "c") and len(ref.feature_edges) == 3
    assert all(abs(sum(s) - 1) < 1e-9 and len(s) == 5 for s in ref.feature_shares)
    again = DriftReference.from_dict(ref.to_dict())
    assert again is not None and again.to_dict() == ref.to_dict()  # the manifest's round trip
    old = {k: v for k, v in ref.to_dict().items() if not k.startswith("feature")}
    parsed = DriftReference.from_dict(old)  # a release built before features were named
    assert parsed is not None and parsed.features == ()
    # Without names, or with images, no feature reference.
    assert reference_from(x, logits).features == ()
    assert (
        reference_from(rng.normal(size=(100, 1, 4, 4)), logits[:100], features=["p"]).features == ()
    )


def test_feature_counts_are_exact_without_noise_and_noised_for_every_feature() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    ref = reference_from(x, rng.normal(size=(500, 2)), features=["a", "b", "c"])
    exact = DriftMonitor(DriftSettings(window=500, epsilon=1e12, seed=0))
    exact.reset(1, ref)
    exact.observe(x, rng.normal(size=(500, 2)), 1)
    window = exact.take()
    assert window is not None
    for counts, shares in zip(window.feature_counts, ref.feature_shares, strict=True):
        assert np.allclose(np.array(counts) / 500, shares, atol=1e-6)
    # epsilon 1 and 3 named features: Laplace noise of scale 5 on every count.
    noisy = DriftMonitor(DriftSettings(window=500, epsilon=1.0, seed=0))
    errors = []
    for _ in range(40):
        noisy.reset(1, ref)
        noisy.observe(x, rng.normal(size=(500, 2)), 1)
        closed = noisy.take()
        assert closed is not None
        errors += [c - 100 for f in closed.feature_counts for c in f]
    assert 3.5 < np.mean(np.abs(errors)) < 6.5  # the mean |Laplace(0, 5)| is 5


def test_the_shifted_feature_stands_out_on_a_real_coordinator(fleet: Fleet, tmp_path: Path) -> None:
    model, reference, rows = _table_model(tmp_path)
    store = fleet.coordinator.releases
    sha, _ = store.add_artifact(model)
    report = {"num_classes": 2, "drift": reference.to_dict()}
    signed = publish_artifact(store, sha256=sha, report=report, percent=100)
    names = ["shifted", "plain"]
    identities = [fleet.enroll(name) for name in names]
    deliveries = [
        DeviceDelivery(
            channel=fleet.channel(identity.tls()),
            state_dir=Path(identity.state_dir),
            device_id=identity.device_id,
            settings=DeliverySettings(
                interval=3600,
                inference_address=None,
                drift=DriftSettings(window=WINDOW, epsilon=4.0, seed=i),
            ),
        ).start()
        for i, identity in enumerate(identities)
    ]
    try:
        rng = np.random.default_rng(0)
        for name, delivery in zip(names, deliveries, strict=True):
            delivery.tick()
            assert delivery.serving()[0] == signed.manifest.version
            x = rows[rng.choice(len(rows), WINDOW, replace=True)].copy()
            if name == "shifted":
                x[:, 1] += 3.0  # the texture sensor reads three standard deviations high
            for start in range(0, WINDOW, 50):
                delivery.engine.predict(x[start : start + 50])
            delivery.tick()
        drift = fleet.control_stub().ListDrift(pb.ListDriftRequest(), timeout=10)
        by_name = {d.name: dict(d.psi_features) for d in drift.devices}
        shifted, plain = by_name["shifted"], by_name["plain"]
        assert set(shifted) == set(FEATURES) == set(plain)
        assert max(shifted, key=shifted.__getitem__) == "texture" and shifted["texture"] > 1.0
        assert max(plain.values()) < 0.25, plain
        text = generate_latest(fleet.coordinator.metrics.registry).decode()
        values = {
            s.labels["kind"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "fedge_drift_psi" and s.labels["device"] == identities[0].device_id
        }
        assert values["feature:texture"] == pytest.approx(shifted["texture"])
        out = CliRunner().invoke(app, ["fleet", "drift", *fleet.operator_args])
        assert out.exit_code == 0, out.output
        line = next(x for x in out.output.splitlines() if " shifted:" in x)
        assert "; features texture " in line
    finally:
        for delivery in deliveries:
            delivery.stop()


def test_feature_psi_needs_the_references_bins() -> None:
    ref = reference_from(np.eye(5) * 3, np.eye(5)[:, :2], features=list("abcde"))
    window = NoisyWindow(1, 1, 5.0, (1.0, 1.0), (1.0,) * len(ref.inputs), 1.0, ((1.0,),))
    assert feature_psi(ref, window) == {}
