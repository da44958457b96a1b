"""A device's health check measures a model's memory and latency in a fresh process: the same
figure for the same model however long the agent has run, and a model over the memory budget
is refused."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedge.edge.health import HealthConfig, check_health
from fedge.errors import FedgeError
from fedge.inference.measure import measure_session
from fedge.inference.profiles import get_profile
from fedge.protocol.manifest import Manifest
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import make_linear_model, publish_linear

#: A linear model of 2048 x 4096 float32 weights: 32 MiB that its session must hold.
FEATURES, CLASSES = 2048, 4096
WEIGHTS_MB = FEATURES * CLASSES * 4 / 2**20


@pytest.fixture
def big_release(tmp_path: Path) -> tuple[Path, Manifest]:
    store = ReleaseStore(root=tmp_path / "store", key=generate_release_key(path=tmp_path / "k"))
    try:
        signed = publish_linear(store, tmp_path, seed=1, features=FEATURES, classes=CLASSES)
    finally:
        store.close()
    return tmp_path / f"linear-1-None-{FEATURES}.onnx", signed.manifest


def test_the_same_model_measures_the_same_memory_the_second_time(
    big_release: tuple[Path, Manifest],
) -> None:
    path, manifest = big_release
    config = HealthConfig(bench_runs=20)
    first = check_health(path, manifest, config=config)
    second = check_health(path, manifest, config=config)  # the agent's process already ran one
    assert first.ok and second.ok, (first.reason, second.reason)
    for result in (first, second):  # the weights, and not the engine library, are the session
        assert WEIGHTS_MB * 0.9 <= result.peak_memory_mb <= WEIGHTS_MB * 3, result
    assert second.peak_memory_mb == pytest.approx(first.peak_memory_mb, rel=0.25)


def test_a_model_over_the_memory_budget_is_refused_with_the_figure(
    big_release: tuple[Path, Manifest],
) -> None:
    path, manifest = big_release
    base = get_profile("cpu-small")
    budget = replace(base.budget, peak_memory_mb=8, max_model_bytes=2**30, p99_ms=1e3)
    result = check_health(path, manifest, config=HealthConfig(bench_runs=20), budget=budget)
    assert not result.ok
    assert result.reason.startswith("breaks its budget on this device: peak memory")
    assert result.peak_memory_mb >= WEIGHTS_MB * 0.9


def test_a_session_that_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(FedgeError, match="INVALID_PROTOBUF"):
        measure_session("onnxruntime", broken, np.zeros(4, np.float32), runs=2)
    model = make_linear_model(tmp_path / "ok.onnx", features=4, classes=2)
    figures = measure_session("onnxruntime", model, np.zeros(4, np.float32), runs=5)
    assert 0 < figures.latency_p50_ms <= figures.latency_p99_ms
