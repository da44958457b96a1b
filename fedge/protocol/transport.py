"""The one place that creates gRPC servers and channels: size limits, keepalive, TLS, ports.

Every fedge process (coordinator, gateway, device agent, inference server, operator CLI) talks
gRPC through these helpers, so the message size limit, keepalive, credentials and port policy
are the same everywhere. A server never shares its port: ``SO_REUSEPORT`` is off, so a second
process asked to listen on a port in use fails with :class:`~fedge.errors.AddressInUseError`
instead of splitting the calls with the first. Services are registered with
:func:`add_service`, whose deserializers turn undecodable bytes into :class:`Malformed` so that
the interceptor can refuse them with a reason instead of gRPC's anonymous ``INTERNAL``.
"""

import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from fedge.errors import AddressInUseError, ConfigError
from fedge.log import logger
from fedge.protocol.wire import chunk_parser, serialize

__all__ = [
    "ClientTLS",
    "Malformed",
    "ServerTLS",
    "TransportOptions",
    "add_service",
    "bind",
    "cannot_listen",
    "create_channel",
    "create_server",
    "is_loopback",
    "parse_address",
    "probe",
]

MiB = 2**20


@dataclass(frozen=True)
class TransportOptions:
    """Limits shared by servers and channels."""

    max_message_bytes: int = 8 * MiB
    chunk_bytes: int = 1 * MiB
    keepalive_seconds: float = 20.0
    # A client reconnects within this of its server's return (gRPC adds its own jitter), so a
    # coordinator restart costs a fleet seconds, not gRPC's default of up to two minutes.
    max_reconnect_backoff_ms: int = 2000

    def __post_init__(self) -> None:
        if not 0 < self.chunk_bytes <= self.max_message_bytes - 64 * 1024:
            raise ValueError(
                f"chunk_bytes {self.chunk_bytes} must be positive and at least 64 KiB below "
                f"max_message_bytes {self.max_message_bytes}"
            )

    def grpc_options(self, *, server: bool) -> list[tuple[str, Any]]:
        """gRPC channel arguments for these limits."""
        keepalive_ms = int(self.keepalive_seconds * 1000)
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", max(keepalive_ms // 2, 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        if server:
            # Accept the clients' keepalive pings instead of answering them with GOAWAY, and
            # never share a port with another process (calls would go to either at random).
            options.append(("grpc.http2.min_recv_ping_interval_without_data_ms", keepalive_ms // 2))
            options.append(("grpc.so_reuseport", 0))
        else:
            options.append(("grpc.enable_retries", 0))
            backoff = self.max_reconnect_backoff_ms
            options.append(("grpc.initial_reconnect_backoff_ms", min(250, backoff)))
            options.append(("grpc.min_reconnect_backoff_ms", min(250, backoff)))
            options.append(("grpc.max_reconnect_backoff_ms", backoff))
        return options


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate and key; with ``client_ca_pem``, clients must present a cert."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None = None


@dataclass(frozen=True)
class ClientTLS:
    """The CA that signed the server, and this client's own certificate and key if any."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class Malformed:
    """A request whose bytes do not decode as the expected protobuf message."""

    method: str
    reason: str


def parse_address(address: str, *, option: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; :class:`ConfigError` naming ``option`` otherwise."""
    if not isinstance(address, str):
        raise ConfigError(option, address, "must be HOST:PORT")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(option, address, "must be HOST:PORT with a port in 0-65535")
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` listens on this machine's loopback only."""
    host = parse_address(address)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_server(
    *,
    options: TransportOptions | None = None,
    max_workers: int = 32,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> grpc.Server:
    """A gRPC server with fedge's limits (not yet bound or started)."""
    opts = options or TransportOptions()
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fedge-rpc"),
        options=opts.grpc_options(server=True),
        interceptors=list(interceptors),
        maximum_concurrent_rpcs=max_workers * 4,
    )


def bind(
    server: grpc.Server,
    address: str,
    tls: ServerTLS | None,
    *,
    option: str = "address",
    warn_plaintext: bool = True,
) -> int:
    """Listen on ``address`` with ``tls`` (``None`` = plaintext, with a warning); the port.

    :class:`~fedge.errors.AddressInUseError` when another process listens there;
    :class:`~fedge.errors.ConfigError` (naming ``option``) when it is no ``HOST:PORT``.
    """
    host, port = parse_address(address, option=option)
    # Asking the operating system first keeps gRPC's own bind failure (a C-core log line on
    # stderr) from reaching the operator; gRPC's result below still decides.
    if port and (busy := _probe_port(host, port, address, option)) is not None:
        raise busy
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key_pem, tls.cert_pem)],
                root_certificates=tls.client_ca_pem,
                require_client_auth=tls.client_ca_pem is not None,
            )
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise _probe_port(host, port, address, option) or AddressInUseError(
            f"{option}: cannot listen on {address}"
        )
    if tls is None and warn_plaintext:
        logger.warning("listening on %s WITHOUT TLS (--insecure): anyone can connect", address)
    return bound


def probe(address: str, *, option: str = "address") -> None:
    """Fail now, as :func:`bind` would, if ``address`` cannot be listened on (port 0 always can).

    For a process that must know its ports are free before it spends anything (a token, a file)
    on start-up, and binds them later.
    """
    host, port = parse_address(address, option=option)
    if port and (busy := _probe_port(host, port, address, option)) is not None:
        raise busy


def _probe_port(host: str, port: int, address: str, option: str) -> AddressInUseError | None:
    """Why ``host:port`` cannot be listened on, as the operating system says; ``None`` if it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        return cannot_listen(address, option, err)
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As gRPC does: a port whose last connections wait in TIME_WAIT is free, so a process
        # killed while its clients were connected can listen again at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as err:
            return cannot_listen(address, option, err)
    return None


def cannot_listen(address: str, option: str, err: OSError) -> AddressInUseError:
    """The one-line error for a listening socket the operating system refused, naming ``option``."""
    if err.errno == errno.EADDRINUSE:
        return AddressInUseError(
            f"{option}: cannot listen on {address}: address in use (another process listens there)"
        )
    return AddressInUseError(f"{option}: cannot listen on {address}: {err.strerror or err}")


def create_channel(
    address: str, *, tls: ClientTLS | None, options: TransportOptions | None = None
) -> grpc.Channel:
    """A channel to ``address`` (``tls=None`` = plaintext, with a warning)."""
    opts = (options or TransportOptions()).grpc_options(server=False)
    if tls is None:
        logger.warning("connecting to %s WITHOUT TLS (--insecure)", address)
        return grpc.insecure_channel(address, options=opts)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem,
        private_key=tls.key_pem,
        certificate_chain=tls.cert_pem,
    )
    return grpc.secure_channel(address, credentials, options=opts)


def add_service(server: grpc.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register ``servicer`` for ``service``, decoding requests leniently (see module doc).

    A method the servicer does not define is answered ``UNIMPLEMENTED`` by gRPC.
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name, None)
        if behaviour is None:
            continue
        request_cls = message_factory.GetMessageClass(method.input_type)
        deserializer = _lenient(method.name, chunk_parser(request_cls))
        if method.client_streaming and method.server_streaming:
            factory: Callable[..., grpc.RpcMethodHandler] = grpc.stream_stream_rpc_method_handler
        elif method.client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(
            behaviour, request_deserializer=deserializer, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _lenient(method: str, parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError) as err:
            return Malformed(method, f"request is not a valid protobuf message: {err}")

    return deserialize
