"""What watching costs: a device's per-request overhead of /metrics and drift counting, and the
time to scrape a coordinator's /metrics with a large fleet, each against a limit in one run.

1. Device: the same ONNX model (784 -> 10 linear, an MNIST-sized input) answers batch-1
   requests through :class:`~fedge.edge.inference.InferenceEngine` bare and with the device's
   Prometheus metrics and drift monitor attached; runs are interleaved (bare, observed, bare,
   ...) so background load hits both alike. Limit: at most 100 us added per request.
2. Coordinator: a state database with 2,000 devices, 20 runs of 50 rounds and 20 releases with
   an install row per device; ``/metrics`` is scraped over HTTP. Limit: under 2 s, well inside
   Prometheus's default 10 s scrape timeout.

    python benchmarks/observability.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from fedge.coordinator.gateways import Sites
from fedge.coordinator.metrics import CoordinatorMetrics
from fedge.coordinator.state import DeviceRow, RoundRow, State
from fedge.edge.drift import DriftMonitor, DriftSettings
from fedge.edge.inference import InferenceEngine
from fedge.edge.metrics import DeviceMetrics
from fedge.protocol.drift import reference_from
from fedge.protocol.http import serve_metrics
from fedge.protocol.tasks import TaskHub
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import linear_weights, make_linear_model, publish_linear

LIMIT_OVERHEAD_US = 100.0
LIMIT_SCRAPE_S = 2.0
REQUESTS = 2000
REPEATS = 5


def _per_request_us(engine: InferenceEngine, xs: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for x in xs:
        engine.predict(x)
    return (time.perf_counter() - started) / len(xs) * 1e6


def device_overhead(work: Path) -> tuple[float, float]:
    """Median per-request time (us) bare and observed."""
    weights, bias = linear_weights(features=784, classes=10, seed=0)
    model = make_linear_model(work / "mnist-linear.onnx", weights=(weights, bias))
    rng = np.random.default_rng(0)
    xs = [rng.random((1, 784), dtype=np.float32) for _ in range(REQUESTS)]
    bare = InferenceEngine()
    bare.swap(model, 1)
    observed = InferenceEngine()
    observed.swap(model, 1)
    metrics = DeviceMetrics(active_version=lambda: observed.version)
    drift = DriftMonitor(DriftSettings(window=200, seed=0))
    sample = np.concatenate(xs[:500])
    drift.reset(1, reference_from(sample, sample @ weights + bias))
    observed.observer = metrics.observe
    observed.on_prediction = drift.observe
    for engine in (bare, observed):  # warm up
        _per_request_us(engine, xs[:200])
    times: dict[str, list[float]] = {"bare": [], "observed": []}
    for _ in range(REPEATS):
        times["bare"].append(_per_request_us(bare, xs))
        times["observed"].append(_per_request_us(observed, xs))
    return statistics.median(times["bare"]), statistics.median(times["observed"])


def coordinator_scrape(work: Path) -> tuple[float, int]:
    """Seconds for one /metrics scrape of a large coordinator, and the number of samples."""
    state = State(work / "state.db")
    with state.session() as s:
        for i in range(2000):
            s.add(
                DeviceRow(device_id=f"dev-{i:05d}", name=f"cam-{i}", cert_serial="", enrolled_at=0)
            )
    for _ in range(20):
        run = state.create_run(config_json="{}", rounds_total=50)
        for r in range(1, 51):
            state.add_round(
                run.id,
                RoundRow(
                    server_round=r,
                    accuracy=0.9,
                    loss=0.1,
                    sampled=10,
                    aggregated=10,
                    dropped=0,
                    seconds=1.0,
                    epsilon=0.1 * r,
                ),
            )
    store = ReleaseStore(root=work / "releases", key=generate_release_key(path=work / "key.pem"))
    for seed in range(20):
        version = publish_linear(store, work, seed=seed, percent=100).manifest.version
        # The newest release reached every device (one in ten rolled it back); older ones 100.
        for i in range(2000 if seed == 19 else 100):
            outcome = "rolled_back" if i % 10 == 0 else "installed"
            store.record_status(device_id=f"dev-{i:05d}", version=version, state=outcome)
    metrics = CoordinatorMetrics()
    metrics.attach(state=state, sites=Sites(state, TaskHub()), releases=store, downloads=lambda: 0)
    server = serve_metrics(metrics.registry, "127.0.0.1:0", option="benchmark")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        urllib.request.urlopen(url, timeout=30).read()  # warm up
        timings = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=30).read().decode()
            timings.append(time.perf_counter() - started)
    finally:
        server.stop()
        store.close()
        state.close()
    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return statistics.median(timings), samples


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bare, observed = device_overhead(work)
        scrape, samples = coordinator_scrape(work)
    overhead = observed - bare
    print(
        f"device inference, batch 1: bare {bare:.1f} us, with /metrics + drift {observed:.1f} us "
        f"per request ({observed / bare:.2f}x, +{overhead:.1f} us; "
        f"limit +{LIMIT_OVERHEAD_US:.0f} us)"
    )
    meets = overhead <= LIMIT_OVERHEAD_US and scrape <= LIMIT_SCRAPE_S
    print(
        f"observability: +{overhead:.1f} us per prediction; coordinator /metrics with 2000 "
        f"devices, 20 runs, 20 releases: {samples} samples in {scrape * 1000:.0f} ms (limit "
        f"{LIMIT_SCRAPE_S:.0f} s): {'MEETS' if meets else 'MISSES'} the limits"
    )
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
