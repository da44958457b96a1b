"""The device updater: fetch, verify, install into the inactive slot, health-check, roll back.

Order of checks (TUF-style, cheapest and most important first): the manifest signature against
the key pinned at enrolment, then expiry, version newer than the running one (rollback and
replay protection), not refused before, fits the device profile. Only then are bytes downloaded,
resuming from what is already on disk, and checked for length and SHA-256 before they reach a
slot. Every outcome becomes an :class:`InstallReport`, kept in an on-disk outbox until the
coordinator acknowledges it, so reports survive cuts and restarts; the start of a download is
reported too ("downloading"), best effort, since the outcome report follows anyway.

The release key is the one pinned when the device enrolled (``release_key.pub``, written by
:func:`fedge.edge.identity.enroll_device` from the enrolment reply); a manifest signed by any
other key is refused. A hub at its cap of concurrent downloads answers ``RESOURCE_EXHAUSTED``
with a retry hint: the updater waits (hint plus exponential jitter) and retries, and this never
counts as a failed install.

Crash safety: a SIGKILL at any point leaves the pointer naming a committed, verified model, or a
trial model whose fallback is one; :meth:`Updater.recover` (run at start-up) reverts an
interrupted trial and re-verifies the serving slot.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.edge.health import HealthConfig, check_health
from fedge.edge.identity import PINNED_KEY_FILE
from fedge.edge.inference import InferenceStats
from fedge.edge.slots import Slots, atomic_write, fsync_dir, sha256_file
from fedge.log import logger
from fedge.net import use_zero_copy_streams
from fedge.release import (
    Manifest,
    SignedManifest,
    VerificationError,
    load_public_key,
    pin_public_key,
    verify_manifest,
)
from fedge.release.signing import key_id
from fedge.v1 import hub_pb2, hub_pb2_grpc

__all__ = [
    "PINNED_KEY_FILE",
    "DeliverySettings",
    "DeviceDelivery",
    "DeviceProfile",
    "GrpcHubClient",
    "HubClient",
    "InstallReport",
    "Updater",
    "load_pinned_key",
    "pin_release_key",
    "start_device_delivery",
]

MAX_TRIAL_ATTEMPTS = 2
# What the hub's RESOURCE_EXHAUSTED carries as its retry hint (gRPC's standard pushback key).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


@dataclass(frozen=True)
class DeviceProfile:
    """What a device can run: releases must name this profile and fit its size limit."""

    name: str = "cpu-small"
    max_model_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class InstallReport:
    """One install outcome (state is one of ``fedge.release.INSTALL_STATES``)."""

    version: int
    state: str
    reason: str
    active_version: int


class HubClient(Protocol):
    """The updater's view of ModelHubService."""

    def get_manifest(
        self, *, device_id: str, profile: str, installed_version: int
    ) -> SignedManifest | None: ...

    def download(
        self, *, sha256: str, offset: int, device_id: str
    ) -> Iterator[tuple[int, bytes]]: ...

    def report(self, *, device_id: str, report: InstallReport) -> None: ...


_STATE_TO_PROTO = {
    "offered": hub_pb2.INSTALL_STATE_OFFERED,
    "downloading": hub_pb2.INSTALL_STATE_DOWNLOADING,
    "installed": hub_pb2.INSTALL_STATE_INSTALLED,
    "refused": hub_pb2.INSTALL_STATE_REFUSED,
    "rolled_back": hub_pb2.INSTALL_STATE_ROLLED_BACK,
    "failed": hub_pb2.INSTALL_STATE_FAILED,
}


def _metadata(device_id: str) -> tuple[tuple[str, str], ...]:
    # The coordinator identifies a device by its mTLS certificate; on an --insecure test
    # network it reads this claim instead.
    from fedge.coordinator.auth import DEVICE_ID_METADATA

    return ((DEVICE_ID_METADATA, device_id),)


class GrpcHubClient:
    """:class:`HubClient` over a gRPC channel (the edge agent's TLS channel in production)."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 30.0, chunk_size: int = 0):
        self.stub = hub_pb2_grpc.ModelHubServiceStub(channel)
        # Downloads decode without copying each chunk's data twice (fedge.net).
        use_zero_copy_streams(
            self.stub, channel, hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"]
        )
        self.timeout = timeout
        self.chunk_size = chunk_size

    def get_manifest(
        self, *, device_id: str, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """The signed manifest the coordinator targets at this device."""
        reply = self.stub.GetManifest(
            hub_pb2.GetManifestRequest(
                device_id=device_id, profile=profile, installed_version=installed_version
            ),
            timeout=self.timeout,
            metadata=_metadata(device_id),
        )
        if not reply.available:
            return None
        m = reply.manifest
        return SignedManifest(m.manifest_json, m.signature, m.key_id)

    def download(self, *, sha256: str, offset: int, device_id: str) -> Iterator[tuple[int, bytes]]:
        """Stream ``(offset, chunk)`` from ``offset``."""
        request = hub_pb2.DownloadArtifactRequest(
            sha256=sha256, offset=offset, chunk_size=self.chunk_size, device_id=device_id
        )
        stream = self.stub.DownloadArtifact(
            request, timeout=self.timeout * 10, metadata=_metadata(device_id)
        )
        for chunk in stream:
            yield chunk.offset, chunk.data

    def report(self, *, device_id: str, report: InstallReport) -> None:
        """Send one install report."""
        self.stub.ReportInstallStatus(
            hub_pb2.ReportInstallStatusRequest(
                device_id=device_id,
                version=report.version,
                state=_STATE_TO_PROTO[report.state],
                reason=report.reason,
                active_version=report.active_version,
            ),
            timeout=self.timeout,
            metadata=_metadata(device_id),
        )

    def report_inference(self, *, device_id: str, stats: InferenceStats) -> None:
        """Send the local inference server's telemetry (counts and latencies only)."""
        self.stub.ReportInferenceStats(
            hub_pb2.ReportInferenceStatsRequest(
                device_id=device_id,
                active_version=stats.active_version,
                requests=stats.requests,
                errors=stats.errors,
                latency_p50_ms=stats.latency_p50_ms,
                latency_p99_ms=stats.latency_p99_ms,
                swaps=stats.swaps,
            ),
            timeout=self.timeout,
            metadata=_metadata(device_id),
        )


def pin_release_key(state_dir: Path, pem: bytes) -> Ed25519PublicKey:
    """Pin the coordinator's release key in a device state directory (at enrolment)."""
    return pin_public_key(path=Path(state_dir) / PINNED_KEY_FILE, pem=pem)


def load_pinned_key(state_dir: Path) -> Ed25519PublicKey:
    """The release key pinned at enrolment; :class:`VerificationError` if there is none."""
    path = Path(state_dir) / PINNED_KEY_FILE
    if not path.is_file():
        raise VerificationError(
            "key",
            f"no release key pinned at {path}: this state directory was not enrolled with a "
            "release key; enrol it again (`fedge edge enroll` with a new token)",
        )
    return load_public_key(pem=path.read_bytes())


def _retry_hint(exc: grpc.RpcError, default: float) -> float:
    """Seconds the hub asked us to wait (its pushback trailing metadata), else ``default``."""
    trailing = getattr(exc, "trailing_metadata", lambda: None)() or ()
    for key, value in trailing:
        if key == RETRY_PUSHBACK_KEY:
            try:
                return max(int(value), 0) / 1000.0
            except (TypeError, ValueError):
                break
    return default


class _HubBusyError(Exception):
    """Internal: the hub stayed at its download cap for the whole retry budget."""


class _RefusedError(Exception):
    """Internal: an install step refused the release (carries the report state)."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


class Updater:
    """Installs releases into A/B slots of ``state_dir``; one install at a time."""

    def __init__(
        self,
        *,
        state_dir: Path,
        hub: HubClient,
        device_id: str,
        profile: DeviceProfile | None = None,
        public_key: Ed25519PublicKey | None = None,
        health: HealthConfig | None = None,
        on_phase: Callable[[str], None] | None = None,
        on_installed: Callable[[Path, int], None] | None = None,
        busy_budget: float = 300.0,
        busy_backoff_max: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.slots = Slots(self.state_dir)
        self.downloads = self.state_dir / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.outbox = self.state_dir / "outbox.jsonl"
        self.hub = hub
        self.device_id = device_id
        self.profile = profile or DeviceProfile()
        self.public_key = public_key or self._pinned_key()
        self.health = health or HealthConfig()
        self.on_phase = on_phase or (lambda _phase: None)
        self.on_installed = on_installed
        # A hub at its download cap: retry for up to busy_budget seconds per install attempt.
        self.busy_budget = busy_budget
        self.busy_backoff_max = busy_backoff_max
        self.stop = stop or threading.Event()
        self._rng = random.Random()
        self._lock = threading.Lock()

    def _pinned_key(self) -> Ed25519PublicKey:
        return load_pinned_key(self.state_dir)

    # -- state -----------------------------------------------------------------------------

    def active_version(self) -> int:
        """Version of the committed, serving model (0 = none)."""
        return self.slots.version_of(self.slots.state().serving)

    def active_model(self) -> Path | None:
        """Path of the committed, serving model, if any."""
        slot = self.slots.state().serving
        return None if slot is None else self.slots.model_path(slot)

    # -- reports ---------------------------------------------------------------------------

    def _report_progress(self, version: int, state: str, reason: str = "") -> InstallReport:
        """Tell the hub where an install stands now; best effort, never queued (the outcome
        report that follows is what must arrive)."""
        report = InstallReport(version, state, reason, self.active_version())
        logger.info("release %d: %s %s", version, state, reason)
        try:
            self.hub.report(device_id=self.device_id, report=report)
        except grpc.RpcError as exc:
            logger.info("cannot report %s yet: %s", state, exc.code())
        return report

    def _report(self, version: int, state: str, reason: str) -> InstallReport:
        report = InstallReport(version, state, reason, self.active_version())
        log = logger.info if state == "installed" else logger.warning
        log("release %d: %s %s", version, state, reason)
        with open(self.outbox, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(report)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.flush_reports()
        return report

    def flush_reports(self) -> int:
        """Send queued reports; keep those that could not be sent. Returns how many were sent."""
        try:
            lines = self.outbox.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return 0
        sent = 0
        for line in lines:
            try:
                self.hub.report(device_id=self.device_id, report=InstallReport(**json.loads(line)))
            except grpc.RpcError as exc:
                logger.warning("cannot send install report yet: %s", exc.code())
                break
            except (ValueError, TypeError):
                pass  # a torn last line from a crash: drop it
            sent += 1
        atomic_write(self.outbox, "".join(x + "\n" for x in lines[sent:]).encode())
        return sent

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> list[InstallReport]:
        """Start-up recovery after a crash or power cut; returns the reports it made."""
        with self._lock:
            reports = []
            # Temp files of our own atomic writes (the device state dir is shared with the agent).
            stale = [*self.state_dir.glob(".slots.json.tmp"), *self.state_dir.glob(".outbox*.tmp")]
            for path in [*stale, *(self.state_dir / "slots").glob("*/.*.tmp")]:
                path.unlink(missing_ok=True)
            state = self.slots.state()
            if state.trial:
                version = self.slots.version_of(state.active)
                tries = state.attempts.get(version, 0)
                reason = f"install interrupted before its health check finished (try {tries})"
                reject = (version, reason) if tries >= MAX_TRIAL_ATTEMPTS else None
                self.slots.revert(reject=reject)
                reports.append(self._report(version, "rolled_back", reason))
            reports.extend(self._ensure_serving_verified())
            return reports

    def _ensure_serving_verified(self) -> list[InstallReport]:
        state = self.slots.state()
        if state.serving is None:
            return []
        try:
            self.slots.verify_slot(state.serving, public_key=self.public_key)
            return []
        except VerificationError as exc:
            bad = state.serving
            reason = f"serving slot {bad} failed verification at start-up: {exc}"
        other = next(s for s in ("a", "b") if s != bad)
        try:
            self.slots.verify_slot(other, public_key=self.public_key)
            self.slots.write_state(type(state)(active=other, rejected=state.rejected))
        except VerificationError:
            self.slots.write_state(type(state)(rejected=state.rejected))
        return [self._report(self.slots.version_of(bad), "failed", reason)]

    # -- install ---------------------------------------------------------------------------

    def check_once(self) -> InstallReport | None:
        """Ask the hub for this device's release and install it if it is new."""
        self.flush_reports()
        installed = self.active_version()
        try:
            signed = self.hub.get_manifest(
                device_id=self.device_id, profile=self.profile.name, installed_version=installed
            )
        except grpc.RpcError as exc:
            logger.warning("cannot reach the model hub: %s", exc.code())
            return None
        if signed is None:
            return None
        try:
            version = verify_manifest(signed, public_key=self.public_key).version
            if version == installed or version in self.slots.state().rejected:
                return None  # nothing new, or a failure already reported
        except VerificationError:
            pass  # install() refuses it and reports why
        return self.install(signed)

    def install(self, signed: SignedManifest) -> InstallReport:
        """Verify, download, write, switch, health-check, commit or roll back; report."""
        with self._lock:
            version = 0
            try:
                manifest = self._verify_manifest(signed)
                version = manifest.version
                part = self._fetch(manifest)
                return self._switch(manifest, signed, part)
            except VerificationError as exc:
                return self._report(version or _version_hint(signed), "refused", str(exc))
            except _RefusedError as exc:
                return self._report(version, exc.state, exc.reason)
            except _HubBusyError as exc:  # not a failure: the download resumes next check
                return self._report_progress(version, "downloading", str(exc))
            except grpc.RpcError as exc:
                reason = f"download interrupted ({exc.code()}); will resume"
                return self._report(version, "failed", reason)
            except OSError as exc:
                return self._report(version, "failed", f"disk error: {exc}")

    def _verify_manifest(self, signed: SignedManifest) -> Manifest:
        manifest = verify_manifest(signed, public_key=self.public_key)
        if manifest.is_expired():
            raise VerificationError(
                "expired", f"release {manifest.version} expired {manifest.expires}"
            )
        installed = self.active_version()
        if manifest.version <= installed:
            raise VerificationError(
                "not-newer", f"release {manifest.version} is not newer than installed {installed}"
            )
        state = self.slots.state()
        if manifest.version in state.rejected:
            raise VerificationError(
                "rejected",
                f"release {manifest.version} failed before: {state.rejected[manifest.version]}",
            )
        if manifest.profile != self.profile.name:
            raise VerificationError(
                "profile",
                f"release is for profile {manifest.profile!r}, device is {self.profile.name!r}",
            )
        if manifest.length > self.profile.max_model_bytes:
            raise VerificationError(
                "profile",
                f"model of {manifest.length} bytes exceeds the device limit "
                f"{self.profile.max_model_bytes}",
            )
        return manifest

    def _local_copy(self, manifest: Manifest, part: Path) -> bool:
        """Reuse identical bytes already in a slot (a rollback release re-uses an artifact)."""
        for slot in ("a", "b"):
            path = self.slots.model_path(slot)
            same = path.is_file() and path.stat().st_size == manifest.length
            if same and sha256_file(path) == manifest.sha256:
                tmp = part.with_name(part.name + ".copy")
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                    dst.flush()
                    os.fsync(dst.fileno())
                os.replace(tmp, part)
                return True
        return False

    def _fetch(self, manifest: Manifest) -> Path:
        """Download (resuming) into ``downloads/<sha>.part`` and check length and SHA-256."""
        part = self.downloads / f"{manifest.sha256}.part"
        for other in self.downloads.iterdir():
            if other != part:
                other.unlink(missing_ok=True)  # a stale download of another release
        complete = part.exists() and part.stat().st_size == manifest.length
        if not complete and not self._local_copy(manifest, part):
            self._report_progress(manifest.version, "downloading")
            self.on_phase("downloading")
            self._download_when_free(manifest, part)
        self.on_phase("downloaded")
        if part.stat().st_size != manifest.length:
            part.unlink()
            raise VerificationError("length", "downloaded artifact length differs from manifest")
        if sha256_file(part) != manifest.sha256:
            part.unlink()  # start over next time: we cannot tell which chunk was bad
            raise VerificationError("sha256", "downloaded artifact hash differs from manifest")
        self.on_phase("verified")
        return part

    def _download_when_free(self, manifest: Manifest, part: Path) -> None:
        """:meth:`_download`, retried while the hub is at its download cap: wait its hint plus a
        random share of an exponentially growing spread (so a fleet does not come back in
        lockstep), for up to ``busy_budget`` seconds."""
        waited, attempt = 0.0, 0
        while True:
            try:
                self._download(manifest, part)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                hint = _retry_hint(exc, default=0.5)
            spread = min(self.busy_backoff_max, max(hint, 0.05) * 2**attempt)
            delay = hint + self._rng.uniform(0, spread)
            if waited + delay > self.busy_budget:
                raise _HubBusyError(
                    f"the hub is at its download cap after {attempt + 1} tries; "
                    "the download resumes at the next check"
                )
            self.on_phase("busy")
            logger.info("hub busy (download cap); retrying in %.2fs", delay)
            if self.stop.wait(delay):
                raise _HubBusyError("stopped while waiting for the hub's download cap")
            waited += delay
            attempt += 1

    def _download(self, manifest: Manifest, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > manifest.length:
            part.unlink()
            offset = 0
        with open(part, "ab") as out:
            for chunk_offset, data in self.hub.download(
                sha256=manifest.sha256, offset=offset, device_id=self.device_id
            ):
                if chunk_offset != offset or offset + len(data) > manifest.length:
                    raise VerificationError("length", f"unexpected chunk at offset {chunk_offset}")
                out.write(data)
                offset += len(data)
                self.on_phase("chunk")
            out.flush()
            os.fsync(out.fileno())
        if offset != manifest.length:
            raise _RefusedError("failed", f"download ended at {offset} of {manifest.length} bytes")

    def _switch(self, manifest: Manifest, signed: SignedManifest, part: Path) -> InstallReport:
        slot = self.slots.writable_slot()
        self.slots.write_slot(slot, model=part, signed=signed)
        fsync_dir(self.downloads)
        self.slots.verify_slot(slot, public_key=self.public_key)
        self.on_phase("slot_written")
        self.slots.begin_trial(slot, version=manifest.version)
        self.on_phase("switched")
        result = check_health(self.slots.model_path(slot), manifest, config=self.health)
        self.on_phase("health_checked")
        if not result.ok:
            reason = f"health check failed: {result.reason}"
            self.slots.revert(reject=(manifest.version, reason))
            self.on_phase("reverted")
            raise _RefusedError("rolled_back", reason)
        self.slots.commit()
        self.on_phase("committed")
        if self.on_installed is not None:
            self.on_installed(self.slots.model_path(slot), manifest.version)
        detail = "" if result.accuracy is None else f"accuracy {result.accuracy:.3f}"
        return self._report(manifest.version, "installed", detail)

    def run(self, *, interval: float, stop: threading.Event) -> None:
        """Check for updates every ``interval`` seconds until ``stop`` is set."""
        self.recover()
        while not stop.is_set():
            self.check_once()
            stop.wait(interval)


@dataclass(frozen=True)
class DeliverySettings:
    """How a device checks for releases and serves predictions."""

    interval: float = 30.0
    inference_address: str | None = "127.0.0.1:0"  # None: no local inference server
    profile: DeviceProfile = field(default_factory=DeviceProfile)
    health: HealthConfig = field(default_factory=HealthConfig)


class DeviceDelivery:
    """Everything issue 6 runs on a device beside the training agent, on the agent's channel.

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
        from fedge.edge.inference import InferenceEngine

        self.client = GrpcHubClient(channel)
        self.state_dir = Path(state_dir)
        self.device_id = device_id
        self.settings = settings or DeliverySettings()
        self.engine = InferenceEngine()
        self.updater: Updater | None = None
        self.public_key: Ed25519PublicKey | None = None
        self.inference_port: int | None = None
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        # The update loop and a caller (the CLI, a test) may tick at once: serialize whole
        # ticks, or both would see the same release as new and one would report a refusal.
        self._tick_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="fedge-delivery", daemon=True)

    def start(self) -> DeviceDelivery:
        """Start the inference server (when configured) and the update loop.

        Raises :class:`VerificationError` when no release key was pinned at enrolment.
        """
        from fedge.edge.inference import serve_inference

        self.public_key = load_pinned_key(self.state_dir)
        logger.info("release key pinned at enrolment: %s", key_id(self.public_key)[:16])
        slots = Slots(self.state_dir)
        serving = slots.state().serving
        if serving is not None:  # serve the committed model at once, even before recovery
            self.engine.swap(slots.model_path(serving), slots.version_of(serving))
        if self.settings.inference_address is not None:
            self._server, self.inference_port = serve_inference(
                self.engine, address=self.settings.inference_address
            )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop and the inference server."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._server is not None:
            self._server.stop(grace=1).wait(2)

    def _ensure_updater(self) -> Updater:
        if self.updater is None:
            self.updater = Updater(
                state_dir=self.state_dir,
                hub=self.client,
                device_id=self.device_id,
                profile=self.settings.profile,
                public_key=self.public_key or load_pinned_key(self.state_dir),
                health=self.settings.health,
                on_installed=lambda path, version: self.engine.swap(path, version),
                stop=self._stop,
            )
            self.updater.recover()
            model = self.updater.active_model()
            if model is not None and self.engine.version != self.updater.active_version():
                self.engine.swap(model, self.updater.active_version())
        return self.updater

    def tick(self) -> InstallReport | None:
        """One round: recover if needed, check for a release, report telemetry."""
        with self._tick_lock:
            report = self._ensure_updater().check_once()
            self.client.report_inference(device_id=self.device_id, stats=self.engine.stats())
            return report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except (grpc.RpcError, VerificationError, OSError) as exc:
                logger.warning("release check failed, retrying: %s", exc)
            self._stop.wait(self.settings.interval)


def start_device_delivery(
    identity: Any,
    *,
    interval: float = 30.0,
    inference_address: str | None = "127.0.0.1:0",
    health: HealthConfig | None = None,
) -> DeviceDelivery:
    """Start :class:`DeviceDelivery` for an enrolled device (a ``DeviceIdentity``) on its own
    channel to the coordinator (mutual TLS unless the device was enrolled ``--insecure``).

    ``health`` adds to the default checks, e.g. an accuracy floor on the device's labelled data.
    """
    from fedge.net import create_channel

    channel = create_channel(identity.coordinator, tls=identity.tls())
    settings = DeliverySettings(
        interval=interval, inference_address=inference_address, health=health or HealthConfig()
    )
    return DeviceDelivery(
        channel=channel,
        state_dir=Path(identity.state_dir),
        device_id=identity.device_id,
        settings=settings,
    ).start()


def _version_hint(signed: SignedManifest) -> int:
    """The claimed version of a manifest that failed verification (for the report only)."""
    try:
        return signed.manifest.version
    except VerificationError:
        return 0


def artifact_digest(data: bytes) -> str:
    """Hex SHA-256 of bytes (helper for tools)."""
    return hashlib.sha256(data).hexdigest()
