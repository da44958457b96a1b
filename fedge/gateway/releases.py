"""Releases through a site gateway: manifests relayed, artifacts fetched once, reports queued.

- Which release a device should run is the cloud's decision (rollout percentages, rollback):
  the gateway asks the cloud on the device's behalf and keeps the answer, so while the cloud
  cannot be reached a device still gets the latest answer the cloud gave for it. The gateway
  also asks for devices that have not asked lately (:meth:`SiteReleases.refresh`), so an answer
  is there before the link goes down.
- Each artifact is fetched once from the cloud (:class:`~fedge.gateway.cache.ArtifactCache`),
  as soon as a manifest names it, and served to the site from disk, with resume.
- Install reports and telemetry are queued durably and delivered to the cloud in order when
  the link is up (:meth:`SiteReleases.flush`).

The gateway checks each manifest's signature against the cloud's release key (pinned when it
enrolled) before fetching what it names; the devices verify everything again themselves, so
a gateway cannot forge or alter a model.
"""

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.errors import FedgeError, UnavailableError, VerificationError
from fedge.gateway.cache import ArtifactCache
from fedge.gateway.state import INSTALL, TELEMETRY, GatewayState
from fedge.gateway.uplink import LINK_DOWN, Uplink
from fedge.log import logger
from fedge.protocol.manifest import SignedManifest, verify_manifest
from fedge.v1 import fleet_pb2, hub_pb2

__all__ = ["SiteReleases"]


class SiteReleases:
    """The site's releases: the cloud's manifests per device, the artifact cache, the outbox."""

    def __init__(
        self,
        *,
        state: GatewayState,
        uplink: Uplink,
        cache_dir: Path,
        public_key: Ed25519PublicKey,
        stop: threading.Event,
    ) -> None:
        self._state = state
        self._uplink = uplink
        self._key = public_key
        self._stop = stop
        self.cache = ArtifactCache(cache_dir, self._fetch)
        self._prefetch: queue.Queue[str] = queue.Queue()
        self._flush_lock = threading.Lock()
        self.flush_wanted = threading.Event()

    # manifests

    def manifest_for(
        self, device_id: str, *, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """The release ``device_id`` should run: the cloud's answer, or its last one while the
        cloud cannot be reached."""
        if self._uplink.online:
            try:
                return self.refresh(device_id, profile=profile, installed_version=installed_version)
            except UnavailableError:
                pass
        known, signed, fetched = self._state.manifest(device_id)
        if not known:
            raise UnavailableError(
                "the gateway cannot reach the cloud and has no release for this device yet"
            )
        logger.info(
            "%s: the cloud's answer of %.0fs ago (link down)", device_id, time.time() - fetched
        )
        return signed

    def refresh(
        self, device_id: str, *, profile: str, installed_version: int
    ) -> SignedManifest | None:
        """Ask the cloud which release ``device_id`` should run; keep and prefetch it."""
        signed = self._uplink.relay(
            lambda: self._uplink.hub.get_manifest(
                device_id=device_id, profile=profile, installed_version=installed_version
            )
        )
        self._state.save_manifest(device_id, signed)
        if signed is not None:
            self.prefetch(signed)
        return signed

    def refresh_quiet(self, *, older_than: float) -> None:
        """:meth:`refresh` every device whose answer is older than ``older_than`` seconds (as
        far as its last heartbeat says what it runs)."""
        for device in self._state.devices():
            if device.revoked or not device.heartbeat or self._stop.is_set():
                continue
            _, _, fetched = self._state.manifest(device.device_id)
            if time.time() - fetched < older_than:
                continue
            beat = fleet_pb2.HeartbeatRequest.FromString(device.heartbeat)
            try:
                self.refresh(
                    device.device_id,
                    profile=beat.profile,
                    installed_version=beat.release_version,
                )
            except FedgeError as err:
                logger.info("cannot refresh the release of %s: %s", device.device_id, err)
                if isinstance(err, UnavailableError):
                    return

    # artifacts

    def prefetch(self, signed: SignedManifest) -> None:
        """Fetch the artifact ``signed`` names in the background (once)."""
        try:
            manifest = verify_manifest(signed, public_key=self._key)
        except VerificationError as err:  # the devices refuse it too, and report why
            logger.warning("not prefetching a manifest that fails verification: %s", err)
            return
        if not self.cache.has(manifest.sha256):
            self._prefetch.put(manifest.sha256)

    def prefetch_loop(self) -> None:
        """Fetch queued artifacts until stopped (a thread of the gateway)."""
        while not self._stop.is_set():
            try:
                sha = self._prefetch.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.artifact(sha)
            except FedgeError as err:
                logger.warning("cannot prefetch artifact %s: %s", sha[:12], err)

    def artifact(self, sha256: str) -> Path:
        """The cached artifact, fetched from the cloud first if need be."""
        if self.cache.has(sha256):
            return self.cache.path(sha256)
        if not self._uplink.online:
            raise UnavailableError(
                f"artifact {sha256[:12]} is not cached at the gateway and the cloud cannot be "
                "reached; retry later"
            )
        return self._uplink.relay(lambda: self.cache.ensure(sha256))

    def _fetch(self, sha256: str, offset: int) -> Iterator[tuple[int, bytes]]:
        return self._uplink.hub.download(
            sha256=sha256, offset=offset, device_id=self._uplink.identity.device_id
        )

    # reports

    def report_install(self, request: hub_pb2.ReportInstallStatusRequest) -> None:
        """Queue a device's install report for the cloud (durably), and send it soon."""
        self._state.queue(INSTALL, request.device_id, request.SerializeToString())
        self.flush_wanted.set()

    def report_telemetry(self, request: hub_pb2.ReportInferenceStatsRequest) -> None:
        """Keep a device's latest telemetry for the cloud, and send it soon."""
        self._state.queue(TELEMETRY, request.device_id, request.SerializeToString())
        self.flush_wanted.set()

    def flush(self) -> int:
        """Deliver owed reports in order until the cloud cannot be reached; how many went."""
        sent = 0
        with self._flush_lock:
            self.flush_wanted.clear()
            while rows := self._state.pending():
                for row in rows:
                    try:
                        self._send(row.kind, row.payload)
                    except grpc.RpcError as err:
                        if err.code() in LINK_DOWN:
                            self._uplink.mark(False)
                            return sent
                        # The cloud refused it (a device revoked since): retrying cannot help.
                        logger.warning(
                            "the cloud refused %s's %s report: %s",
                            row.device_id,
                            row.kind,
                            err.details(),
                        )
                    self._uplink.mark(True)
                    self._state.delivered(row.id)
                    sent += 1
        return sent

    def _send(self, kind: str, payload: bytes) -> None:
        stub = self._uplink.hub.stub
        timeout = self._uplink.timeout
        if kind == INSTALL:
            stub.ReportInstallStatus(
                hub_pb2.ReportInstallStatusRequest.FromString(payload), timeout=timeout
            )
        else:
            stub.ReportInferenceStats(
                hub_pb2.ReportInferenceStatsRequest.FromString(payload), timeout=timeout
            )
