"""The site gateway process: its identity, its two ports, its link to the cloud, its loops.

Start-up order: the configuration is checked and both ports are probed before anything else,
so a bad file or a port in use costs neither a token nor a file; an unenrolled state directory
is then enrolled with the cloud (a gateway token), the gateway's own enrolment certificate is
kept beside its identity, and only then are the ports bound and the state opened.

Three loops run beside the servers: the sync loop (the site's devices to the cloud, the cloud's
roster back, queued reports out, releases refreshed), the round loop (the cloud's site tasks)
and the prefetch loop (artifacts the cloud's manifests name). A cut cloud link costs the site
nothing it has: devices keep their connection to the gateway, their releases and their reports,
and the gateway its replies to the cloud's tasks (kept until the link returns); the cloud drops
the site from rounds it misses.
"""

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc

from fedge import __version__
from fedge.edge.identity import (
    DeviceIdentity,
    enroll_device,
    is_enrolled,
    load_identity,
    load_pinned_key,
)
from fedge.errors import ConfigError, FedgeError
from fedge.files import atomic_write
from fedge.gateway.config import GatewayConfig
from fedge.gateway.releases import SiteReleases
from fedge.gateway.rounds import SiteRounds
from fedge.gateway.services import GatewayAuth, SiteEnrollmentServicer, SiteFleet, SiteHub
from fedge.gateway.sitesync import SiteSync
from fedge.gateway.state import GatewayState, RosterEntry
from fedge.gateway.uplink import LINK_DOWN, Uplink
from fedge.log import logger
from fedge.protocol.endpoint import FleetEndpoint
from fedge.protocol.pki import fingerprint, make_enroll_certificate
from fedge.protocol.tasks import TaskHub
from fedge.protocol.tokens import parse_token
from fedge.protocol.transport import ServerTLS, parse_address, probe
from fedge.v1 import gateway_pb2

__all__ = ["Gateway"]

_FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_ENROLL_CERT, _ENROLL_KEY = "enroll.pem", "enroll.key"
#: The site's replies the cloud has not taken yet, one directory per task.
SITE_RESULTS_DIR = "site-results"


class Gateway:
    """A running site gateway: :meth:`start`, then :meth:`wait` (or :meth:`stop`)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ports: dict[str, int] = {}
        self.fatal: str | None = None
        self.identity: DeviceIdentity | None = None
        self._site_sync = SiteSync()
        # The cloud's release state as of the last sync, passed on in device heartbeats.
        self._release_state = ""

    # start-up

    def start(
        self,
        *,
        coordinator: str | None = None,
        token: str | None = None,
        name: str = "",
        enroll_address: str | None = None,
    ) -> dict[str, int]:
        """Enrol when needed, bind both ports, open the state and start serving; the ports.

        ``enroll_address``: the cloud's enrolment port (default: the config's, else PORT+1).
        """
        config = self.config
        state_dir = config.state_dir
        upstream = coordinator or config.coordinator or None
        if upstream is not None:
            parse_address(upstream, option="--coordinator")
        enrol = not is_enrolled(state_dir)
        if enrol:
            if token is None or upstream is None:
                raise ConfigError(
                    "state-dir",
                    str(state_dir),
                    "holds no gateway identity: give --coordinator HOST:PORT and --token (a "
                    "gateway token: `fedge fleet token create --gateway --site NAME`)",
                )
            parse_token(token)
        elif token is not None:
            logger.warning("%s is already enrolled; --token is not used", state_dir)
        for address, option in ((config.address, "address"), (config.enroll, "enroll-address")):
            probe(address, option=option)
        if enrol:
            assert token is not None and upstream is not None
            self._enroll(upstream, token, name, enroll_address or config.coordinator_enroll_address)
        identity = load_identity(state_dir)
        if not identity.site:
            raise ConfigError(
                "state-dir", str(state_dir), "holds a device's identity, not a site gateway's"
            )
        if upstream is not None and upstream != identity.coordinator:
            identity = replace(identity, coordinator=upstream)  # this run only
        self.identity = identity
        self._serve(identity)
        return dict(self.ports)

    def _enroll(self, coordinator: str, token: str, name: str, enroll_address: str) -> None:
        cert, key = make_enroll_certificate()
        identity = enroll_device(
            coordinator=coordinator,
            token=token,
            state_dir=self.config.state_dir,
            name=name,
            enroll_address=enroll_address or None,
            version=__version__,
            hosts=self.config.server_names,
            enroll_fingerprint=fingerprint(cert),
        )
        atomic_write(self.config.state_dir / _ENROLL_CERT, cert)
        atomic_write(self.config.state_dir / _ENROLL_KEY, key, mode=0o600)
        logger.info("enrolled as %s, the gateway of site %s", identity.device_id, identity.site)

    def _serve(self, identity: DeviceIdentity) -> None:
        root = Path(identity.state_dir)
        if not (root / _ENROLL_CERT).is_file() or not (root / _ENROLL_KEY).is_file():
            # Lost (or a crash right after enrolment): a new one; the next sync tells the
            # cloud, and tokens made from now on pin it.
            logger.warning("no enrolment certificate in %s: making a new one", root)
            cert, key = make_enroll_certificate()
            atomic_write(root / _ENROLL_CERT, cert)
            atomic_write(root / _ENROLL_KEY, key, mode=0o600)
        enroll_pem = (root / _ENROLL_CERT).read_bytes()
        main_tls = ServerTLS(
            (root / "device.pem").read_bytes(),
            (root / "device.key").read_bytes(),
            client_ca_pem=(root / "ca.pem").read_bytes(),
        )
        enroll_tls = ServerTLS(enroll_pem, (root / _ENROLL_KEY).read_bytes())
        self.state = GatewayState(root / "gateway.db")
        self.endpoint = FleetEndpoint(self.config, authenticate=GatewayAuth(self.state))
        self.ports.update(self.endpoint.bind(tls=main_tls, enroll_tls=enroll_tls))
        self.hub = TaskHub(liveness_seconds=self.config.liveness_seconds)
        self.uplink = Uplink(identity, options=self.config.transport_options())
        self.releases = SiteReleases(
            state=self.state,
            uplink=self.uplink,
            cache_dir=root / "artifacts",
            public_key=load_pinned_key(root),
            stop=self._stop,
        )
        self.rounds = SiteRounds(
            uplink=self.uplink,
            hub=self.hub,
            margin_seconds=self.config.round_margin_seconds,
            chunk_bytes=self.config.chunk_bytes,
            stop=self._stop,
            results_dir=root / SITE_RESULTS_DIR,
        )
        self._enroll_fingerprint = fingerprint(enroll_pem)
        self.endpoint.serve(
            fleet=SiteFleet(
                state=self.state, hub=self.hub, release_state=lambda: self._release_state
            ),
            hub=SiteHub(self.releases),
            enrollment=SiteEnrollmentServicer(uplink=self.uplink, state=self.state),
        )
        self.endpoint.start()
        for target, name in (
            (self._sync_loop, "fedge-gw-sync"),
            (self._round_loop, "fedge-gw-rounds"),
            (self._prefetch_loop, "fedge-gw-prefetch"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    # loops

    def sync(self) -> None:
        """Tell the cloud what changed at the site; take its roster; raises ``RpcError``."""
        draft = self._site_sync.draft(
            self.state.devices(), online=lambda row: self.hub.alive(row.node_id)
        )
        request = gateway_pb2.SyncSiteRequest(
            devices=draft.devices, queued_reports=self.state.owed()
        )
        if draft.full:  # who this gateway is: the cloud keeps it, a full sync repeats it
            request.enroll_fingerprint = self._enroll_fingerprint
            request.version = __version__
        response = self.uplink.gateway.SyncSite(request, timeout=self.uplink.timeout)
        self.uplink.mark(True)
        self._site_sync.taken(draft)
        self._release_state = response.release_state
        revoked = self.state.update_roster(
            [
                RosterEntry(e.device_id, int(e.node_id), e.name, e.cert_serial, e.revoked)
                for e in response.roster
            ]
        )
        for device_id in revoked:
            gone = self.state.device(device_id)
            if gone is not None:
                self.hub.forget(gone.node_id)
            logger.warning("device %s was revoked by the cloud: refused from now on", device_id)
        if response.interval_seconds > 0:
            self._interval = min(self.config.sync_seconds, response.interval_seconds)

    def _sync_loop(self) -> None:
        self._interval = self.config.sync_seconds
        with self._until_closed():
            self._sync_forever()

    def _sync_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
                self.releases.flush()
                self.releases.refresh_quiet(older_than=self.config.release_interval)
            except grpc.RpcError as err:
                if self._refused(err):
                    return
                logger.info("sync with the cloud failed: %s", err.code().name)
            except FedgeError as err:
                logger.warning("sync with the cloud failed: %s", err)
            self._pause()

    def _refused(self, err: grpc.RpcError) -> bool:
        """Take an uplink call's error: ``True`` when the cloud refused this gateway (stop)."""
        if err.code() in _FATAL:
            self._fail(f"the cloud refused this gateway: {err.code().name}: {err.details()}")
            return True
        if err.code() in LINK_DOWN:
            self.uplink.mark(False)
        return False

    def _pause(self) -> None:
        """Wait for the next sync; deliver a device's report at once when the link is up."""
        deadline = time.monotonic() + self._interval
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.releases.flush_wanted.wait(remaining):
                self.releases.flush_wanted.clear()
                if self.uplink.online:
                    self.releases.flush()

    def _round_loop(self) -> None:
        with self._until_closed():
            self._rounds_forever()

    def _rounds_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.rounds.serve_one(wait_seconds=10.0)
            except grpc.RpcError as err:
                if self._refused(err):
                    return
                # The channel reconnects by itself; come back a little later, not in lockstep.
                self._stop.wait(1.0 + random.uniform(0, 1.0))
            except FedgeError as err:
                logger.warning("a site task failed: %s", err)

    def _prefetch_loop(self) -> None:
        with self._until_closed():
            self.releases.prefetch_loop()

    @contextlib.contextmanager
    def _until_closed(self) -> Iterator[None]:
        """End a loop quietly when :meth:`stop` closed the uplink under a call of it."""
        try:
            yield
        except ValueError:  # grpc: "Cannot invoke RPC on closed channel"
            if not self._stop.is_set():
                raise

    def _fail(self, message: str) -> None:
        logger.error("%s", message)
        self.fatal = message
        self._stop.set()

    # shutdown

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving and close the state."""
        self._stop.set()
        self.hub.notify()
        self.releases.flush_wanted.set()  # wakes the sync loop
        self.endpoint.stop(grace)
        self.uplink.close()  # cancels a waiting PullTask, so the loops end now
        for thread in self._threads:
            thread.join(timeout=15)
        self.state.close()

    def wait(self) -> str | None:
        """Block until stopped; the reason when the cloud refused this gateway."""
        while not self._stop.wait(1.0):
            pass
        return self.fatal
