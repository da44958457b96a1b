"""The coordinator process: its servers, services, run manager, state and release store.

Two gRPC ports, the one fleet endpoint a site gateway serves too
(:mod:`fedge.protocol.endpoint`): the main port (mutual TLS) serves the fleet and model hub
services over the cloud's backends, and the gateway and control services; the enrolment port
(TLS with a certificate pinned by enrolment tokens) serves enrolment only. Two optional
HTTP ports: the web console (``[console]``) and Prometheus ``/metrics`` (``[metrics]``). No port
is shared with another process, and every one is bound before the state is opened.
"""

import threading
from pathlib import Path

from fedge.coordinator.auth import CoordinatorAuth, Operator
from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.console import ConsoleServer, ConsoleSessions
from fedge.coordinator.console.server import ConsoleTLS
from fedge.coordinator.control import ControlService, ControlServicer
from fedge.coordinator.fleet import CloudFleet, EnrollmentServicer, FleetSettings
from fedge.coordinator.gateways import GatewayServicer, Sites, may_speak_for
from fedge.coordinator.hub import CloudHub
from fedge.coordinator.metrics import CoordinatorMetrics
from fedge.coordinator.pki import CertificateAuthority
from fedge.coordinator.runs import RunManager
from fedge.coordinator.state import KIND_DEVICE, DeviceRow, State
from fedge.errors import FedgeError, PkiError
from fedge.log import logger
from fedge.protocol.endpoint import FleetEndpoint
from fedge.protocol.http import MetricsServer, serve_metrics
from fedge.protocol.interceptor import Refusal
from fedge.protocol.manifest import public_key_pem
from fedge.protocol.pki import fingerprint
from fedge.protocol.tasks import TaskHub
from fedge.protocol.transport import ServerTLS, is_loopback
from fedge.release.drift import DeviceDrift
from fedge.release.gate import RolloutController
from fedge.release.signing import load_or_create_release_key
from fedge.release.store import RELEASE_KEY_FILE, open_release_store
from fedge.v1 import control_pb2, gateway_pb2

__all__ = ["Coordinator"]

_TOKEN_TTL = 24 * 3600.0
GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
CONTROL_SERVICE = control_pb2.DESCRIPTOR.services_by_name["ControlService"]


class ConsoleDisabledError(FedgeError):
    """A console login was asked of a coordinator that serves no console."""


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise PkiError(f"{path} does not exist: run `fedge certs init --dir {path.parent}` first")
    return path.read_bytes()


class Coordinator:
    """A running coordinator: :meth:`start`, then :meth:`stop` (or wait)."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self._serving = False
        self.ports: dict[str, int] = {}
        self._stopped = threading.Event()
        self.metrics = CoordinatorMetrics()
        self._metrics_server: MetricsServer | None = None
        self.console: ConsoleServer | None = None
        self.console_sessions = ConsoleSessions()

    def _on_refused(self, refusal: Refusal) -> None:
        who = refusal.caller
        device = who.device_id if isinstance(who, DeviceRow) else ""
        name = who.name if isinstance(who, Operator) else device or "?"
        message = f"{refusal.method}: {refusal.code.name}: {refusal.error}"
        run_id = getattr(refusal.error, "run_id", None) or self.runs.active_run
        self.state.add_event("refused", message, run_id=run_id, device_id=device)
        self.metrics.refused(refusal.method, refusal.code.name)
        logger.warning("refused %s from %s: %s", refusal.method, name, refusal.error)

    def _on_drift(self, drift: DeviceDrift) -> None:
        self.state.add_event(
            "drift",
            f"{drift.device_id} drifted from release {drift.version}'s reference: PSI classes "
            f"{drift.psi_classes:.2f}, inputs {drift.psi_inputs:.2f} (window {drift.window})",
            device_id=drift.device_id,
        )
        logger.warning("device %s drifted (release %d)", drift.device_id, drift.version)

    def start(self) -> dict[str, int]:
        """Bind both ports, then open the state and start serving; the bound ports.

        The ports are bound before anything is written: a coordinator that cannot listen
        (address in use, a bad address, missing certificates) leaves no state behind.
        """
        certs = self.config.certs_dir
        insecure = self.config.insecure
        ca = (
            None
            if insecure
            else CertificateAuthority(_read(certs / "ca.pem"), _read(certs / "ca.key"))
        )
        enroll_pem = b"" if insecure else _read(certs / "enroll.pem")
        main_tls = enroll_tls = None
        if ca is not None:
            main_tls = ServerTLS(
                _read(certs / "server.pem"), _read(certs / "server.key"), ca.cert_pem
            )
            enroll_tls = ServerTLS(enroll_pem, _read(certs / "enroll.key"))
        self.endpoint = FleetEndpoint(
            self.config,
            authenticate=lambda method, context: self._auth(method, context),
            on_refused=self._on_refused,
        )
        self.ports.update(self.endpoint.bind(tls=main_tls, enroll_tls=enroll_tls))
        self._bind_http()
        self._open_state()
        settings = FleetSettings(
            insecure=insecure,
            heartbeat_seconds=self.config.heartbeat_seconds,
            device_cert_days=self.config.device_cert_days,
            enroll_fingerprint=fingerprint(enroll_pem) if enroll_pem else "",
            release_key_pem=self.release_key_pem,
        )
        self._serve(settings, ca)
        self.endpoint.start()
        self._serving = True
        self.runs.start()
        self.rollouts.start()
        if self.console is not None:
            self._start_console()
        logger.info(
            "coordinator listening: fleet %s, enrolment %s",
            self.ports["fleet"],
            self.ports["enroll"],
        )
        return dict(self.ports)

    def _bind_http(self) -> None:
        config = self.config
        try:
            if config.console_address:
                tls = None
                if not is_loopback(config.console_address):  # loopback: plain, no login
                    tls = ConsoleTLS(
                        config.certs_dir / "server.pem", config.certs_dir / "server.key"
                    )
                self.console = ConsoleServer(
                    config.console_address, tls=tls, public_url=config.console_public_url
                )
                self.ports["console"] = self.console.bind()
            if config.metrics_address:
                self._metrics_server = serve_metrics(
                    self.metrics.registry, config.metrics_address, option="metrics.address"
                )
                self.ports["metrics"] = self._metrics_server.port
        except Exception:
            self._close_http()  # nothing half-made: free what was bound before the failure
            raise

    def _close_http(self) -> None:
        if self.console is not None:
            self.console.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    def _start_console(self) -> None:
        from fedge.coordinator.console.app import create_app

        assert self.console is not None
        app = create_app(
            control=self.control,
            state=self.state,
            sessions=self.console_sessions,
            login_required=self.console.login_required,
            secure_cookie=self.console.tls is not None,
        )
        self.console.start(app)
        logger.info("web console: %s", self.console.url)

    def console_login(self, operator: str) -> tuple[str, float]:
        """A one-time console login URL for ``operator`` and when it expires."""
        if self.console is None:
            raise ConsoleDisabledError(
                "this coordinator serves no console: add a [console] table with an address "
                "to its coordinator.toml"
            )
        token, expires = self.console_sessions.create_login(operator)
        return f"{self.console.url}/login?token={token}", expires

    def _open_state(self) -> None:
        config = self.config
        self.state = State(config.state_dir / "state.db")
        self.hub = TaskHub(liveness_seconds=config.liveness_seconds)
        self.sites = Sites(self.state, self.hub)
        self.runs = RunManager(
            state=self.state,
            hub=self.hub,
            runs_dir=config.state_dir / "runs",
            max_attempts=config.max_attempts,
            wait_for_devices=config.wait_for_devices_seconds,
            on_round=lambda row: self.metrics.round_done(row.seconds),
            sites=self.sites,
        )
        self._auth = CoordinatorAuth(self.state, insecure=config.insecure)
        # The coordinator owns its release key (made on its first start); devices pin it from
        # the enrolment reply, and no operator command ever makes one.
        key = load_or_create_release_key(path=config.state_dir / RELEASE_KEY_FILE)
        self.release_key_pem = public_key_pem(key.public_key())
        self.releases = open_release_store(
            state_dir=config.state_dir, key=key, fleet=self._fleet_ids
        )
        self.rollouts = RolloutController(
            self.releases,
            on_event=lambda kind, message: self.state.add_event(kind, message),
            interval=config.rollout_check_seconds,
        )

    def _serve(self, settings: FleetSettings, ca: CertificateAuthority | None) -> None:
        self.control = ControlService(
            state=self.state,
            hub=self.hub,
            sites=self.sites,
            runs=self.runs,
            releases=self.releases,
            release_key_pem=self.release_key_pem,
            token_ttl=_TOKEN_TTL,
            enroll_fingerprint=settings.enroll_fingerprint,
            max_upload_bytes=self.config.max_payload_bytes,
            console_login=self.console_login,
            rollouts=self.rollouts,
        )
        gateways = GatewayServicer(
            state=self.state,
            hub=self.hub,
            settings=settings,
            ca=ca,
            release_state=self.releases.targeting,
        )
        model_hub = self.endpoint.serve(
            fleet=CloudFleet(state=self.state, hub=self.hub, release_state=self.releases.targeting),
            hub=CloudHub(
                self.releases, on_drift=self._on_drift, delegate=may_speak_for(self.state)
            ),
            enrollment=EnrollmentServicer(state=self.state, settings=settings, ca=ca),
            insecure=settings.insecure,
            more=[(GATEWAY_SERVICE, gateways), (CONTROL_SERVICE, ControlServicer(self.control))],
        )
        self.metrics.attach(
            state=self.state,
            sites=self.sites,
            releases=self.releases,
            downloads=lambda: model_hub.downloads.active,
        )

    def _fleet_ids(self) -> list[str]:
        # Rollout percentages are of the enrolled, unrevoked devices, wherever they are
        # (a gateway runs no model).
        return [
            d.device_id for d in self.state.devices() if not d.revoked and d.kind == KIND_DEVICE
        ]

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving; a run in progress resumes when the coordinator starts again."""
        self.runs.shutdown()
        self.rollouts.stop()
        self._close_http()
        if self._serving:
            self.endpoint.stop(grace)
        self.releases.close()
        self.state.close()
        self._stopped.set()

    def wait(self) -> None:
        """Block until :meth:`stop` is called (e.g. from a signal handler)."""
        while not self._stopped.wait(1.0):
            pass
