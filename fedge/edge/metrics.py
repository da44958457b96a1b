"""A device's Prometheus metrics: its inference server and its model releases.

``fedge edge start --metrics HOST:PORT`` serves them on ``/metrics`` (off by default; loopback
is the usual choice, for a node agent or a local Prometheus to scrape). Counts, latencies and
versions only: never an input or a prediction.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS", "DeviceMetrics"]

#: Seconds: on-device int8 models answer in well under a millisecond to tens of milliseconds.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class DeviceMetrics:
    """The device's registry: inference requests, errors, latency, the release it serves."""

    def __init__(self, *, active_version: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedge_inference_requests",
            "Prediction requests the device's inference server answered or failed.",
            registry=self.registry,
        )
        self.errors = Counter(
            "fedge_inference_errors",
            "Prediction requests that failed (no model, a bad input, a runtime error).",
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedge_inference_latency_seconds",
            "Time to answer one prediction request (a batch), successful ones only.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.active_release = Gauge(
            "fedge_device_active_release",
            "The release version this device serves (0: none).",
            registry=self.registry,
        )
        self.active_release.set_function(lambda: float(active_version()))
        self.installs = Counter(
            "fedge_device_install_reports",
            "Install outcomes this device reported, by state.",
            ["state"],
            registry=self.registry,
        )
        self.drift_windows = Counter(
            "fedge_device_drift_windows",
            "Windows of noisy prediction statistics the device reported.",
            registry=self.registry,
        )

    def observe(self, seconds: float, ok: bool) -> None:
        """Record one prediction request."""
        self.requests.inc()
        if ok:
            self.latency.observe(seconds)
        else:
            self.errors.inc()
