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

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.edge.health import HealthConfig, HealthResult, check_health
from fedge.edge.hub_client import HubClient
from fedge.edge.identity import load_pinned_key
from fedge.edge.outbox import ReportOutbox
from fedge.edge.slots import SLOTS, Slots
from fedge.errors import VerificationError
from fedge.files import file_sha256, fsync_dir
from fedge.inference.profiles import DeviceProfile, get_profile
from fedge.inference.runners import ENGINE_PACKAGES, engine_available
from fedge.log import logger
from fedge.protocol.manifest import Manifest, SignedManifest, verify_manifest
from fedge.protocol.metadata import retry_hint
from fedge.protocol.serde import InstallReport

__all__ = ["DEFAULT_PROFILE", "MAX_TRIAL_ATTEMPTS", "Updater"]

MAX_TRIAL_ATTEMPTS = 2


DEFAULT_PROFILE = "cpu-small"


class _HubBusyError(Exception):
    """Internal: the hub stayed at its download cap for the whole retry budget."""


class _RefusedError(Exception):
    """Internal: an install step refused the release (carries the report state, and what the
    device measured if it got that far)."""

    def __init__(self, state: str, reason: str, measured: dict[str, float] | None = None) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.measured = measured or {}


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
        self.outbox = ReportOutbox(self.state_dir)
        self.hub = hub
        self.device_id = device_id
        self.profile = profile or get_profile(DEFAULT_PROFILE)
        self.public_key = public_key or load_pinned_key(self.state_dir)
        self.health = health or HealthConfig()
        self.on_phase = on_phase or (lambda _phase: None)
        self.on_installed = on_installed
        # A hub at its download cap: retry for up to busy_budget seconds per install attempt.
        self.busy_budget = busy_budget
        self.busy_backoff_max = busy_backoff_max
        self.stop = stop or threading.Event()
        self._rng = random.Random()
        self._lock = threading.Lock()

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
            logger.info("cannot report %s yet: %s", state, exc.code().name)
        return report

    def _report(
        self, version: int, state: str, reason: str, measured: dict[str, float] | None = None
    ) -> InstallReport:
        report = InstallReport(version, state, reason, self.active_version(), **(measured or {}))
        log = logger.info if state == "installed" else logger.warning
        log("release %d: %s %s", version, state, reason)
        self.outbox.add(report)
        self.flush_reports()
        return report

    def flush_reports(self) -> int:
        """Send queued reports; keep those that could not be sent. Returns how many were sent."""
        return self.outbox.flush(lambda r: self.hub.report(device_id=self.device_id, report=r))

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> list[InstallReport]:
        """Start-up recovery after a crash or power cut; returns the reports it made."""
        with self._lock:
            reports = []
            # Temp files of our own atomic writes (the device state dir is shared with the agent).
            stale = [*self.state_dir.glob(".slots.json.*tmp"), *self.state_dir.glob(".outbox*.tmp")]
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
        other = next(s for s in SLOTS if s != bad)
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
            logger.warning("cannot reach the model hub: %s", exc.code().name)
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
                return self._report(version, exc.state, exc.reason, exc.measured)
            except _HubBusyError as exc:  # not a failure: the download resumes next check
                return self._report_progress(version, "downloading", str(exc))
            except grpc.RpcError as exc:
                reason = f"download interrupted ({exc.code().name}); will resume"
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
        limit = self.profile.budget.max_model_bytes
        if manifest.length > limit:
            raise VerificationError(
                "profile",
                f"model of {manifest.length} bytes exceeds the {self.profile.name} limit {limit}",
            )
        engine = manifest.engine
        if engine not in self.profile.engines or not engine_available(engine):
            raise VerificationError(
                "runtime",
                f"the model is for {engine}, which this device does not run (profile "
                f"{self.profile.name}: {', '.join(self.profile.engines)}; installed: "
                f"{', '.join(r for r in ENGINE_PACKAGES if engine_available(r)) or 'none'})",
            )
        return manifest

    def _local_copy(self, manifest: Manifest, part: Path) -> bool:
        """Reuse identical bytes already in a slot (a rollback release re-uses an artifact)."""
        for slot in SLOTS:
            path = self.slots.model_path(slot)
            same = path.is_file() and path.stat().st_size == manifest.length
            if same and file_sha256(path) == manifest.sha256:
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
        if file_sha256(part) != manifest.sha256:
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
                hint = retry_hint(exc, default=0.5)
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
        result = check_health(
            self.slots.model_path(slot), manifest, config=self.health, budget=self.profile.budget
        )
        self.on_phase("health_checked")
        measured = _figures(result)
        if not result.ok:
            reason = f"health check failed: {result.reason}"
            self.slots.revert(reject=(manifest.version, reason))
            self.on_phase("reverted")
            raise _RefusedError("rolled_back", reason, measured)
        self.slots.commit()
        self.on_phase("committed")
        if self.on_installed is not None:
            self.on_installed(self.slots.model_path(slot), manifest.version)
        detail = f"p50 {result.latency_p50_ms:.3f} ms, p99 {result.latency_p99_ms:.3f} ms"
        if result.accuracy is not None:
            detail = f"accuracy {result.accuracy:.3f}, {detail}"
        return self._report(manifest.version, "installed", detail, measured)


def _figures(result: HealthResult) -> dict[str, float]:
    return {
        "latency_p50_ms": result.latency_p50_ms,
        "latency_p99_ms": result.latency_p99_ms,
        "peak_memory_mb": result.peak_memory_mb,
    }


def _version_hint(signed: SignedManifest) -> int:
    """The claimed version of a manifest that failed verification (for the report only)."""
    try:
        return signed.manifest.version
    except VerificationError:
        return 0
