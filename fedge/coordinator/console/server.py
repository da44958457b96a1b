"""The console's HTTP server: uvicorn in a thread of the coordinator, on a socket bound first.

The coordinator binds every port before it opens its state, so :meth:`ConsoleServer.bind` only
takes the socket (an :class:`~fedge.errors.AddressInUseError` names ``console.address``);
:meth:`ConsoleServer.start` serves the app on it once the control service exists. On a
non-loopback address it serves TLS with the coordinator's server certificate.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from fedge.errors import FedgeError
from fedge.log import logger
from fedge.protocol.http import listen_socket
from fedge.protocol.transport import is_loopback, parse_address

__all__ = ["ConsoleServer", "ConsoleTLS"]


@dataclass(frozen=True)
class ConsoleTLS:
    """The certificate and key files the console serves HTTPS with."""

    certfile: Path
    keyfile: Path


class ConsoleServer:
    """The console listener: :meth:`bind`, then :meth:`start` with the app, then :meth:`stop`."""

    def __init__(self, address: str, *, tls: ConsoleTLS | None, public_url: str = "") -> None:
        self.address = address
        self.tls = tls
        self.login_required = not is_loopback(address)
        self._public_url = public_url
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def bind(self) -> int:
        """Take the console's port; the port."""
        self._socket = listen_socket(self.address, option="console.address")
        self.port = int(self._socket.getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        """Where operators open the console."""
        if self._public_url:
            return self._public_url.rstrip("/")
        host = parse_address(self.address)[0]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self, app: Starlette) -> None:
        """Serve ``app`` on the bound socket (in a daemon thread)."""
        if self._socket is None:
            raise FedgeError("the console socket is not bound")
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(self.tls.certfile) if self.tls else None,
            ssl_keyfile=str(self.tls.keyfile) if self.tls else None,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": sockets}, name="fedge-console", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        logger.info("console on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
