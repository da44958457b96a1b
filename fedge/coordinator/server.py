"""The coordinator process: the fleet and control services, the run manager, the database."""

import threading
from pathlib import Path

import grpc

from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.control import ControlServicer
from fedge.coordinator.fleet import FleetServicer, FleetSettings
from fedge.coordinator.pki import CertificateAuthority, PkiError, fingerprint
from fedge.coordinator.runs import RunManager
from fedge.coordinator.state import State
from fedge.coordinator.tasks import TaskHub
from fedge.log import logger
from fedge.net import ServerTLS, TransportOptions, add_service, bind, create_server
from fedge.v1 import control_pb2, fleet_pb2

__all__ = ["Coordinator"]

_TOKEN_TTL = 24 * 3600.0


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise PkiError(f"{path} does not exist: run `fedge certs init --dir {path.parent}` first")
    return path.read_bytes()


class Coordinator:
    """A running coordinator: :meth:`start`, then :meth:`stop` (or wait)."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.state = State(config.state_dir / "state.db")
        self.hub = TaskHub(liveness_seconds=config.liveness_seconds)
        self.runs = RunManager(
            state=self.state,
            hub=self.hub,
            runs_dir=config.state_dir / "runs",
            max_attempts=config.max_attempts,
            wait_for_devices=config.wait_for_devices_seconds,
            nodes=self._enrolled_nodes,
        )
        self._options = TransportOptions(
            max_message_bytes=config.max_message_bytes, chunk_bytes=config.chunk_bytes
        )
        self._servers: list[grpc.Server] = []
        self.ports: dict[str, int] = {}
        self._stopped = threading.Event()

    def _enrolled_nodes(self) -> list[int]:
        return [d.id for d in self.state.devices() if not d.revoked]

    def start(self) -> dict[str, int]:
        """Bind both ports, start serving and the run manager; the bound ports."""
        certs = self.config.certs_dir
        insecure = self.config.insecure
        ca = (
            None
            if insecure
            else CertificateAuthority(_read(certs / "ca.pem"), _read(certs / "ca.key"))
        )
        enroll_pem = b"" if insecure else _read(certs / "enroll.pem")
        # Issue 6: devices pin the release public key at enrolment (sent in the enrol reply).
        from fedge.release import RELEASE_KEY_FILE, load_or_create_release_key, public_key_pem

        release_key = load_or_create_release_key(path=self.config.state_dir / RELEASE_KEY_FILE)
        settings = FleetSettings(
            insecure=insecure,
            heartbeat_seconds=self.config.heartbeat_seconds,
            chunk_bytes=self.config.chunk_bytes,
            max_payload_bytes=self.config.max_payload_bytes,
            device_cert_days=self.config.device_cert_days,
            enroll_fingerprint=fingerprint(enroll_pem) if enroll_pem else "",
            release_key_pem=public_key_pem(release_key.public_key()),
        )
        main = create_server(options=self._options, max_workers=self.config.max_workers)

        def fleet(enroll_only: bool) -> FleetServicer:
            return FleetServicer(
                state=self.state,
                hub=self.hub,
                settings=settings,
                ca=ca,
                active_run=lambda: self.runs.active_run,
                enroll_only=enroll_only,
            )

        add_service(
            main,
            fleet_pb2.DESCRIPTOR.services_by_name["FleetService"],
            fleet(False),
        )
        add_service(
            main,
            control_pb2.DESCRIPTOR.services_by_name["ControlService"],
            ControlServicer(
                state=self.state,
                hub=self.hub,
                runs=self.runs,
                insecure=insecure,
                token_ttl=_TOKEN_TTL,
                enroll_fingerprint=settings.enroll_fingerprint,
            ),
        )
        # Issue 6: signed model releases, on the same mutually authenticated port.
        from fedge.coordinator.hub import coordinator_hub_servicer
        from fedge.v1 import hub_pb2

        add_service(
            main,
            hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"],
            coordinator_hub_servicer(
                state_dir=self.config.state_dir,
                state=self.state,
                insecure=insecure,
                max_downloads=self.config.max_concurrent_downloads,
            ),
        )
        main_tls = None
        enroll_tls = None
        if ca is not None:
            main_tls = ServerTLS(
                _read(certs / "server.pem"), _read(certs / "server.key"), ca.cert_pem
            )
            enroll_tls = ServerTLS(enroll_pem, _read(certs / "enroll.key"))
        self.ports["fleet"] = bind(main, self.config.address, main_tls)
        enroller = create_server(options=self._options, max_workers=4)
        add_service(
            enroller,
            fleet_pb2.DESCRIPTOR.services_by_name["FleetService"],
            fleet(True),
        )
        self.ports["enroll"] = bind(enroller, self.config.enroll_address, enroll_tls)
        self._servers = [main, enroller]
        for server in self._servers:
            server.start()
        self.runs.start()
        logger.info(
            "coordinator listening: fleet %s, enrolment %s",
            self.ports["fleet"],
            self.ports["enroll"],
        )
        return dict(self.ports)

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving; a run in progress resumes when the coordinator starts again."""
        self.runs.shutdown()
        for server in self._servers:
            server.stop(grace).wait(grace + 1)
        self.state.close()
        self._stopped.set()

    def wait(self) -> None:
        """Block until :meth:`stop` is called (e.g. from a signal handler)."""
        while not self._stopped.wait(1.0):
            pass
