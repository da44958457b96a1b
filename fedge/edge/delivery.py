"""Model delivery on a device: the update loop, the local inference server, telemetry.

:class:`DeviceDelivery` uses the release key pinned at enrolment (it refuses to start without
one), recovers the A/B slots, serves predictions from the committed slot, checks for releases
every ``interval`` seconds (hot-swapping the server after each install) and reports inference
telemetry. It needs no training support: it is the whole of a device that only serves
predictions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.edge.drift import DriftMonitor, DriftSettings
from fedge.edge.health import HealthConfig
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import load_pinned_key
from fedge.edge.inference import InferenceEngine, serve_inference
from fedge.edge.personalize import PersonalizeSettings, PersonalOutcome, personalize_serving
from fedge.edge.slots import SLOTS, Slots
from fedge.edge.updater import DEFAULT_PROFILE, Updater
from fedge.errors import VerificationError
from fedge.inference.profiles import DeviceProfile, get_profile
from fedge.log import logger
from fedge.protocol.drift import DriftReference
from fedge.protocol.manifest import key_id
from fedge.protocol.serde import InstallReport

if TYPE_CHECKING:
    from fedge.edge.metrics import DeviceMetrics
    from fedge.protocol.http import MetricsServer

__all__ = ["DeliverySettings", "DeviceDelivery"]


@dataclass(frozen=True)
class DeliverySettings:
    """How a device checks for releases and serves predictions."""

    interval: float = 30.0
    inference_address: str | None = "127.0.0.1:0"  # None: no local inference server
    profile: DeviceProfile = field(default_factory=lambda: get_profile(DEFAULT_PROFILE))
    health: HealthConfig = field(default_factory=HealthConfig)
    # HOST:PORT of the device's Prometheus /metrics (None: not served).
    metrics_address: str | None = None
    # Noisy windows of what the model sees and predicts, sent with the telemetry (None: off).
    drift: DriftSettings | None = field(default_factory=DriftSettings)
    # Fit a personal last layer on the device's data after each install (None: never).
    personalize: PersonalizeSettings | None = None


class DeviceDelivery:
    """What a device runs beside the training agent: model delivery and local inference.

    Uses the release key pinned at enrolment (it refuses to start without one), recovers the
    slots, serves predictions from the committed slot on loopback, checks for releases every
    ``interval`` seconds (hot-swapping the server after each install) and reports inference
    telemetry.
    """

    def __init__(
        self,
        *,
        channel: grpc.Channel,
        state_dir: Path,
        device_id: str,
        settings: DeliverySettings | None = None,
    ) -> None:
        self.client = GrpcHubClient(channel)
        self.state_dir = Path(state_dir)
        self.device_id = device_id
        self.settings = settings or DeliverySettings()
        self.engine = InferenceEngine()
        self.drift: DriftMonitor | None = None
        if self.settings.drift is not None:
            self.drift = DriftMonitor(self.settings.drift)
            self.engine.on_prediction = self.drift.observe
        self.metrics: DeviceMetrics | None = None
        self.metrics_port: int | None = None
        self._metrics_server: MetricsServer | None = None
        self.updater: Updater | None = None
        self.public_key: Ed25519PublicKey | None = None
        self.inference_port: int | None = None
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._release_state: str | None = None
        # The update loop and a caller (the CLI, a test) may tick at once: serialize whole
        # ticks, or both would see the same release as new and one would report a refusal.
        self._tick_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="fedge-delivery", daemon=True)

    def start(self) -> DeviceDelivery:
        """Start the inference server (when configured) and the update loop.

        Raises :class:`VerificationError` when no release key was pinned at enrolment.
        """
        self.public_key = load_pinned_key(self.state_dir)
        if self.settings.metrics_address is not None:
            # prometheus_client costs a device 4 MB of memory: loaded only when /metrics is served
            from fedge.edge.metrics import DeviceMetrics
            from fedge.protocol.http import serve_metrics

            self.metrics = DeviceMetrics(active_version=lambda: self.engine.version)
            self.engine.observer = self.metrics.observe
            self._metrics_server = serve_metrics(
                self.metrics.registry, self.settings.metrics_address, option="--metrics"
            )
            self.metrics_port = self._metrics_server.port
        logger.info("release key pinned at enrolment: %s", key_id(self.public_key)[:16])
        slots = Slots(self.state_dir)
        serving = slots.state().serving
        if serving is not None:  # serve the committed model at once, even before recovery
            self._serve(slots.model_path(serving), slots.version_of(serving))
        if self.settings.inference_address is not None:
            self._server, self.inference_port = serve_inference(
                self.engine, address=self.settings.inference_address
            )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop and the inference server."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._server is not None:
            self._server.stop(grace=1).wait(2)
        if self._metrics_server is not None:
            self._metrics_server.stop()

    @property
    def release_state(self) -> str | None:
        """The coordinator's release state last heard (``None`` before the first heartbeat)."""
        return self._release_state

    def release_news(self, release_state: str) -> None:
        """The coordinator's release state, from a heartbeat: check now when it changed."""
        if not release_state:
            return
        if self._release_state is not None and release_state != self._release_state:
            self._wake.set()
        self._release_state = release_state

    def serving(self) -> tuple[int, str]:
        """The release version this device serves now (0 = none) and its slot (or "")."""
        slots = Slots(self.state_dir)
        slot = slots.state().serving
        return slots.version_of(slot), slot or ""

    def _ensure_updater(self) -> Updater:
        if self.updater is None:
            self.updater = Updater(
                state_dir=self.state_dir,
                hub=self.client,
                device_id=self.device_id,
                profile=self.settings.profile,
                public_key=self.public_key or load_pinned_key(self.state_dir),
                health=self.settings.health,
                on_installed=self._serve,
                stop=self._stop,
            )
            self.updater.recover()
            model = self.updater.active_model()
            if model is not None and self.engine.version != self.updater.active_version():
                self._serve(model, self.updater.active_version())
        return self.updater

    def _serve(self, path: Path, version: int) -> None:
        """Answer predictions with ``path`` (release ``version``); count drift against its
        reference, which its manifest carries."""
        self.engine.swap(path, version)
        if self.drift is not None:
            self.drift.reset(version, self._reference(version))

    def _reference(self, version: int) -> DriftReference | None:
        slots = Slots(self.state_dir)
        for slot in SLOTS:
            signed = slots.signed_manifest(slot)
            if signed is not None and slots.version_of(slot) == version:
                try:
                    return DriftReference.from_dict(signed.manifest.report.get("drift"))
                except VerificationError:
                    return None
        return None

    def tick(self) -> InstallReport | None:
        """One round: recover if needed, check for a release, report telemetry."""
        with self._tick_lock:
            report = self._ensure_updater().check_once()
            if report is not None and self.metrics is not None:
                self.metrics.installs.labels(state=report.state).inc()
            if report is not None and report.state == "installed" and self.settings.personalize:
                self._personalize(self.settings.personalize)
            window = self.drift.take() if self.drift is not None else None
            self.client.report_inference(
                device_id=self.device_id, stats=self.engine.stats(), drift=window
            )
            if window is not None and self.metrics is not None:
                self.metrics.drift_windows.inc()
            return report

    def personalize(self, settings: PersonalizeSettings | None = None) -> PersonalOutcome:
        """Personalise the release this device serves now (``fedge edge personalize``)."""
        chosen = settings or self.settings.personalize or PersonalizeSettings()
        with self._tick_lock:
            self._ensure_updater()
            return self._personalize(chosen)

    def _personalize(self, settings: PersonalizeSettings) -> PersonalOutcome:
        outcome = personalize_serving(
            self.state_dir,
            settings,
            public_key=self.public_key or load_pinned_key(self.state_dir),
            health=self.settings.health,
            budget=self.settings.profile.budget,
        )
        slots = Slots(self.state_dir)
        serving = slots.state().serving
        if serving is not None:  # the personal slot, or the global one it fell back to
            self._serve(slots.model_path(serving), slots.version_of(serving))
        return outcome

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except grpc.RpcError as exc:
                logger.warning("release check failed (%s), retrying", exc.code().name)
            except (VerificationError, OSError) as exc:
                logger.warning("release check failed, retrying: %s", exc)
            self._wake.wait(self.settings.interval)
            self._wake.clear()
