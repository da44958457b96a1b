"""Shared fixtures: quiet Flower logs, small run configs, an in-process coordinator (``fleet``),
a TCP link that a test can cut (``LinkProxy``) and a headless Debian Chromium (``chromium``)."""

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest

from fedge.app.config import RunConfig
from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.pki import init_certs
from fedge.coordinator.server import Coordinator
from fedge.edge.agent import AgentSettings
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.device import DeviceSettings, start_device
from fedge.edge.identity import DeviceIdentity, enroll_device
from fedge.protocol.pki import fingerprint
from fedge.protocol.tokens import make_token
from fedge.protocol.transport import ClientTLS, create_channel
from fedge.v1 import control_pb2_grpc, fleet_pb2, fleet_pb2_grpc


@pytest.fixture(autouse=True)
def _quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.ERROR)


@pytest.fixture
def tiny_config() -> RunConfig:
    """A run that takes a second or two: 8x8 digits, a small CNN, 4 clients, 2 rounds."""
    return RunConfig(
        dataset="digits",
        model="cnn-small",
        clients=4,
        rounds=2,
        local_epochs=2,
        lr=0.05,
        batch_size=16,
    )


@dataclass
class Fleet:
    """A running coordinator and what tests need to reach it."""

    coordinator: Coordinator
    root: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator.ports['fleet']}"

    @property
    def enroll_address(self) -> str:
        return f"127.0.0.1:{self.coordinator.ports['enroll']}"

    def token(self) -> str:
        issued = self.coordinator.state.create_token(ttl_seconds=60)
        pem = (self.root / "certs" / "enroll.pem").read_bytes()
        return make_token(issued.secret, fingerprint(pem))

    def enroll(self, name: str = "dev") -> DeviceIdentity:
        return enroll_device(
            coordinator=self.address,
            token=self.token(),
            state_dir=self.root / name,
            name=name,
            enroll_address=self.enroll_address,
        )

    def trainer(self, name: str, dataset: str = "digits") -> DeviceIdentity:
        """An enrolled device that has said, once, that it trains on ``dataset``-shaped data."""
        from fedge.data import get_dataset
        from fedge.data.device import DataSummary
        from fedge.protocol.serde import data_summary_to_proto

        identity = self.enroll(name)
        data = get_dataset(dataset)
        summary = DataSummary(dataset, data.input_shape, data.num_classes, 100)
        request = fleet_pb2.HeartbeatRequest(can_train=True, data=data_summary_to_proto(summary))
        self.fleet_stub(identity).Heartbeat(request, timeout=10)
        return identity

    def fleet_stub(self, identity: DeviceIdentity) -> fleet_pb2_grpc.FleetServiceStub:
        channel = create_channel(self.address, tls=identity.tls())
        self._channels.append(channel)
        return fleet_pb2_grpc.FleetServiceStub(channel)

    def channel(self, tls: ClientTLS) -> grpc.Channel:
        channel = create_channel(self.address, tls=tls)
        self._channels.append(channel)
        return channel

    @property
    def operator_args(self) -> list[str]:
        """The CLI options that reach this coordinator as its operator."""
        return ["--coordinator", self.address, "--operator", str(self.root / "certs" / "operator")]

    def control_stub(self) -> control_pb2_grpc.ControlServiceStub:
        op = self.root / "certs" / "operator"
        tls = ClientTLS(
            ca_pem=(op / "ca.pem").read_bytes(),
            cert_pem=(op / "operator.pem").read_bytes(),
            key_pem=(op / "operator.key").read_bytes(),
        )
        return control_pb2_grpc.ControlServiceStub(self.channel(tls))

    def __post_init__(self) -> None:
        self._channels: list[grpc.Channel] = []

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.coordinator.stop(grace=0.5)


def start_fleet(tmp_path: Path, **overrides: Any) -> Fleet:
    """A started coordinator with TLS on ephemeral loopback ports (config ``overrides``)."""
    init_certs(tmp_path / "certs", hosts=("127.0.0.1",))
    settings: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "enroll_address": "127.0.0.1:0",
        "state_dir": tmp_path / "state",
        "certs_dir": tmp_path / "certs",
        "heartbeat_seconds": 0.5,
        "liveness_seconds": 2.0,
        "wait_for_devices_seconds": 10.0,
        "max_message_bytes": 4 * 2**20,
        "chunk_bytes": 1 * 2**20,
    }
    coordinator = Coordinator(CoordinatorConfig(**{**settings, **overrides}))
    coordinator.start()
    return Fleet(coordinator, tmp_path)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator with TLS on ephemeral loopback ports; stopped at the end."""
    with closing(start_fleet(tmp_path)) as f:
        yield f
    assert not [t for t in threading.enumerate() if t.name == "fedge-runs" and t.is_alive()]


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: A Python that takes Ctrl-C as a terminal delivers it, for a child the test interrupts: a
#: command started in the background of a non-interactive shell (a CI runner's, say) inherits
#: SIGINT ignored, and Python then never raises KeyboardInterrupt. The default disposition is set
#: before ``exec`` (it survives it), so no Python code runs between fork and exec.
PYTHON_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def heartbeat_listener(identity: DeviceIdentity, channel: grpc.Channel) -> Iterator[DeviceDelivery]:
    """A running device whose release checks come only from its heartbeats' news: its delivery
    loop waits an hour between checks, its agent heartbeats every 0.3 s."""
    settings = DeviceSettings(
        agent=AgentSettings(wait_seconds=1.0, heartbeat_seconds=0.3),
        delivery=DeliverySettings(interval=3600, inference_address=None),
    )
    device = start_device(identity, settings, channel=channel)
    assert device.delivery is not None
    thread = device.run_in_thread()
    try:
        yield device.delivery
    finally:
        device.stop()
        thread.join(timeout=30)


def running_in_ci() -> bool:
    """True under a CI service: they set ``CI`` (GitHub, GitLab, Buildkite: ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip the test saying ``reason``; under CI, fail it instead: a CI run whose browser tests
    all skipped would pass without testing the console."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI is set: this test may not be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (never a browser Playwright downloads).

    `make test` installs the `chromium` package; only where that was impossible is a browser
    test skipped, saying why, and never under CI (see :func:`skip_unless_ci`).
    """
    if not CHROMIUM.is_file():
        skip_unless_ci(f"{CHROMIUM} is missing: apt-get install chromium (make test does, as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_unless_ci("playwright is missing: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class LinkProxy:
    """A TCP link to ``target`` that a test can cut and restore (a site's cloud uplink).

    Bytes are forwarded as they are (TLS passes through). :meth:`cut` closes every open
    connection and refuses new ones, as a link that went down; :meth:`restore` accepts again.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._down = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self._down.set()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        """Accept connections again."""
        self._down.clear()

    def close(self) -> None:
        """Stop the proxy."""
        self._closed.set()
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
