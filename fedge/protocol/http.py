"""The plain HTTP side of fedge's processes: Prometheus ``/metrics`` and listening sockets.

gRPC servers come from :mod:`fedge.protocol.transport`; the two HTTP listeners (a ``/metrics``
endpoint on the coordinator and on each device, and the coordinator's web console) bind here,
with the same port policy: a port another process listens on is an
:class:`~fedge.errors.AddressInUseError` naming the option, never a silent second listener.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from fedge.log import logger
from fedge.protocol.transport import cannot_listen, is_loopback, parse_address

__all__ = ["MetricsServer", "listen_socket", "serve_metrics"]


def listen_socket(address: str, *, option: str) -> socket.socket:
    """A TCP socket bound to ``HOST:PORT`` and listening (for a server to adopt)."""
    host, port = parse_address(address, option=option)
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[
            0
        ]
    except OSError as err:
        raise cannot_listen(address, option, err) from err
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise cannot_listen(address, option, err) from err
    return sock


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint: its port; :meth:`stop` ends it."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(registry: CollectorRegistry, address: str, *, option: str) -> MetricsServer:
    """Serve ``registry`` in the Prometheus text format on ``http://HOST:PORT/metrics``."""
    host, port = parse_address(address, option=option)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise cannot_listen(address, option, err) from err
    if not is_loopback(address):
        logger.warning("serving /metrics on %s: readable by anyone who can reach it", address)
    return MetricsServer(int(server.server_port), server, thread)
