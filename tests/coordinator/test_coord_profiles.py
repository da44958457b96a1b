"""Releases per device profile, measured on the device: each profile's devices get their own
artifact and never another's; a model that breaks the budget on the device rolls back, and the
operator sees the measured figures and the reason."""

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from typer.testing import CliRunner

from fedge.builder.artifact import ARTIFACT_FORMAT as PROFILE_ARTIFACT_FORMAT
from fedge.cli.main import app
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.identity import DeviceIdentity
from fedge.files import file_sha256
from fedge.inference.profiles import get_profile, register_profile
from fedge.release.testing import make_linear_model, publish_linear

from .conftest import Fleet

runner = CliRunner()


def _device(fleet: Fleet, identity: DeviceIdentity, profile: str) -> DeviceDelivery:
    settings = DeliverySettings(interval=3600, inference_address=None, profile=get_profile(profile))
    return DeviceDelivery(
        channel=fleet.channel(identity.tls()),
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=settings,
    ).start()


def _wait(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _profile_build(root: Path, profiles: dict[str, int]) -> Path:
    """A per-profile build directory as `release build --profile` writes it (ONNX artifacts)."""
    for name, seed in profiles.items():
        folder = root / "profiles" / name
        model = make_linear_model(folder / "model.onnx", seed=seed)
        document = {
            "format": PROFILE_ARTIFACT_FORMAT,
            "format_version": 1,
            "profile": get_profile(name).to_dict(),
            "runtime": "onnxruntime",
            "precision": "fp32",
            "file": "model.onnx",
            "sha256": file_sha256(model),
            "length": model.stat().st_size,
            "architecture": "linear",
            "dataset": "synthetic",
            "num_classes": 4,
            "input": {"shape": ["batch", 16], "dtype": "float32"},
            "output": {"shape": ["batch", 4], "dtype": "float32"},
            "figures": {"accuracy": 0.9, "latency_p99_ms": 0.01},
        }
        (folder / "artifact.json").write_text(json.dumps(document))
    return root


def test_each_profile_gets_its_own_artifact_and_never_another(fleet: Fleet, tmp_path: Path) -> None:
    build = _profile_build(tmp_path / "build", {"cpu-small": 1, "gateway": 2})
    published = runner.invoke(
        app, ["release", "publish", str(build), "--percent", "100", *fleet.operator_args]
    )
    assert published.exit_code == 0, published.output
    assert "published (onnxruntime) release 1" in published.output
    assert "published (onnxruntime) release 2" in published.output
    small, gateway = fleet.enroll("camera"), fleet.enroll("gateway")
    devices = {
        "cpu-small": _device(fleet, small, "cpu-small"),
        "gateway": _device(fleet, gateway, "gateway"),
    }
    store = fleet.coordinator.releases
    try:  # each device checks for releases as it starts
        _wait(lambda: all(store.status(r.version)["installed"] == 1 for r in store.list_releases()))
        for profile, delivery in devices.items():
            version = next(r.version for r in store.list_releases() if r.profile == profile)
            assert delivery.serving()[0] == version
            slot_model = Path(delivery.state_dir) / "slots" / delivery.serving()[1] / "model.onnx"
            assert file_sha256(slot_model) == file_sha256(
                build / "profiles" / profile / "model.onnx"
            )
        for release in store.list_releases():  # one device reported on each, none on the other
            (report,) = store.device_reports(release.version)
            owner = small if release.profile == "cpu-small" else gateway
            assert report.device_id == owner.device_id and report.state == "installed"
            assert report.measured.latency_p99_ms > 0  # measured on the device, at install
        listing = runner.invoke(app, ["release", "ls", *fleet.operator_args])
        assert "[gateway, onnxruntime]" in listing.output and "on 1 device," in listing.output
    finally:
        for delivery in devices.values():
            delivery.stop()


def test_a_model_over_its_latency_budget_on_the_device_rolls_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    base = get_profile("cpu-small")
    strict = replace(base, name="strict-test", budget=replace(base.budget, p99_ms=1e-6))
    register_profile(strict, replace=True)
    identity = fleet.enroll("watch")
    store = fleet.coordinator.releases
    version = publish_linear(store, tmp_path, seed=3, profile="strict-test").manifest.version
    delivery = _device(fleet, identity, "strict-test")
    try:
        _wait(lambda: store.status(version)["rolled_back"] == 1)
        (report,) = store.device_reports(version)
        assert "breaks its budget on this device: p99 by" in report.reason
        assert report.measured.latency_p99_ms > 1e-6 and delivery.serving() == (0, "")
        status = runner.invoke(
            app, ["release", "status", str(version), "--devices", *fleet.operator_args]
        )
        assert status.exit_code == 0, status.output
        assert "rolled_back 1" in status.output
        line = next(x for x in status.output.splitlines() if identity.device_id in x)
        assert "rolled_back health check failed: breaks its budget" in line
        assert "measured p50" in line and "p99" in line
    finally:
        delivery.stop()
