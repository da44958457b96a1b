"""The one place that creates gRPC servers and channels: size limits, keepalive and TLS.

Every fedge process talks gRPC through these helpers, so the message size limit, keepalive
and credentials are the same everywhere. Payloads larger than one message travel in chunks
(:func:`chunk_encoder`, :func:`chunk_parser`); a single message over ``max_message_bytes``
is refused by gRPC itself with ``RESOURCE_EXHAUSTED``. Services are registered with
:func:`add_service`, whose deserializers turn undecodable bytes into :class:`Malformed` so
that servicers can refuse them with a reason instead of gRPC's anonymous ``INTERNAL``.
"""

from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from fedge.log import logger

__all__ = [
    "ChunkView",
    "ClientTLS",
    "FlatView",
    "Malformed",
    "ServerTLS",
    "TransportOptions",
    "add_service",
    "bind",
    "chunk_encoder",
    "chunk_parser",
    "create_channel",
    "create_server",
    "use_zero_copy_streams",
]

MiB = 2**20


@dataclass(frozen=True)
class TransportOptions:
    """Limits shared by servers and channels."""

    max_message_bytes: int = 8 * MiB
    chunk_bytes: int = 1 * MiB
    keepalive_seconds: float = 20.0

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
            # Accept the clients' keepalive pings instead of answering them with GOAWAY.
            options.append(("grpc.http2.min_recv_ping_interval_without_data_ms", keepalive_ms // 2))
        else:
            options.append(("grpc.enable_retries", 0))
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


def create_server(*, options: TransportOptions | None = None, max_workers: int = 32) -> grpc.Server:
    """A gRPC server with fedge's limits (not yet bound or started)."""
    opts = options or TransportOptions()
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fedge-rpc"),
        options=opts.grpc_options(server=True),
        maximum_concurrent_rpcs=max_workers * 4,
    )


def bind(server: grpc.Server, address: str, tls: ServerTLS | None) -> int:
    """Listen on ``address`` with ``tls`` (``None`` = plaintext, with a warning); the port."""
    if tls is None:
        logger.warning("listening on %s WITHOUT TLS (--insecure): anyone can connect", address)
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key_pem, tls.cert_pem)],
            root_certificates=tls.client_ca_pem,
            require_client_auth=tls.client_ca_pem is not None,
        )
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


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
    """Register ``servicer`` for ``service``, decoding requests leniently (see module doc)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        deserializer = _lenient(method.name, chunk_parser(request_cls))
        serializer = _serialize
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            factory: Callable[..., grpc.RpcMethodHandler] = grpc.stream_stream_rpc_method_handler
        elif method.client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(
            behaviour, request_deserializer=deserializer, response_serializer=serializer
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _serialize(message: Any) -> bytes:
    # A message already framed (see chunk_encoder) is sent as is.
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


def _lenient(method: str, parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError) as err:
            return Malformed(method, f"request is not a valid protobuf message: {err}")

    return deserialize


class ChunkView:
    """A ``{chunk: Chunk{data}}`` message decoded without copying ``data`` (a memoryview).

    Answers what the chunk loops ask of a parsed message: ``WhichOneof("part")`` and
    ``.chunk.data``.
    """

    __slots__ = ("_field", "data")

    def __init__(self, data: memoryview, field: str) -> None:
        self.data = data
        self._field = field

    @property
    def chunk(self) -> "ChunkView":
        """The chunk itself (``message.chunk.data`` is ``message.data``)."""
        return self

    def WhichOneof(self, group: str) -> str:  # noqa: N802 (protobuf's name)
        """The oneof member set: always the chunk."""
        return self._field


def chunk_parser(message_cls: Any) -> Callable[[bytes], Any]:
    """``message_cls.FromString``, but a chunk message is a :class:`ChunkView` over the bytes.

    Parsing a chunk with protobuf copies its data twice (into the message, then out of it);
    for a model of many megabytes those copies cost as much as the network. Any message that
    is not exactly one ``Chunk`` field in a oneof is parsed by protobuf as usual.
    """
    field = message_cls.DESCRIPTOR.fields_by_name.get("chunk")
    plain: Callable[[bytes], Any] = message_cls.FromString
    if field is None or field.containing_oneof is None or field.message_type is None:
        return plain
    data_field = field.message_type.fields_by_name.get("data")
    if data_field is None or len(field.message_type.fields) != 1:
        return plain
    outer_tag = (field.number << 3) | 2
    inner_tag = (data_field.number << 3) | 2

    def parse(data: bytes) -> Any:
        view = _chunk_data(data, outer_tag, inner_tag)
        return plain(data) if view is None else ChunkView(view, field.name)

    return parse


def chunk_encoder(message_cls: Any) -> Callable[[bytes | memoryview], bytes]:
    """The serialized ``message_cls(chunk=Chunk(data=data))``, framed around ``data`` in one copy.

    The inverse of :func:`chunk_parser`. Building the protobuf copies the data three times
    (into the chunk, into the message, out as bytes); the frame is two tags and two lengths,
    so joining them with the data gives the same bytes for one copy. A server sends the result
    as is (:func:`add_service`), as does a stub set up by :func:`use_zero_copy_streams`.
    """
    field = message_cls.DESCRIPTOR.fields_by_name["chunk"]
    data_field = field.message_type.fields_by_name["data"]
    outer_tag = _varint((field.number << 3) | 2)
    inner = _varint((data_field.number << 3) | 2)

    def encode(data: bytes | memoryview) -> bytes:
        size = len(data)
        inner_head = inner + _varint(size)
        return b"".join((outer_tag, _varint(len(inner_head) + size), inner_head, data))

    return encode


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _chunk_data(data: bytes, outer_tag: int, inner_tag: int) -> memoryview | None:
    # The serialized form is: outer tag, length, inner tag, length, bytes; anything else
    # (another field, trailing bytes, a header) is left to protobuf.
    pos = 0
    for tag in (outer_tag, inner_tag):
        value, pos = _read_varint(data, pos)
        if value != tag:
            return None
        length, pos = _read_varint(data, pos)
        if length != len(data) - pos:
            return None
    return memoryview(data)[pos:]


class FlatView:
    """A flat message (integers and one ``bytes`` field) decoded without copying the bytes."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:  # only called for a field the message lacks
        raise AttributeError(name)


_FieldDescriptor = Any
_UNSIGNED = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_BOOL}
_SIGNED = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32}


def _flat_parser(message_cls: Any) -> Callable[[bytes], Any] | None:
    # A download reply (offset, data, length) is such a message: its data is a view into the
    # received bytes. Any other shape of message is left to protobuf.
    fields = list(message_cls.DESCRIPTOR.fields)
    blobs = [f for f in fields if f.type == FieldDescriptor.TYPE_BYTES]
    plain: Callable[[bytes], Any] = message_cls.FromString
    if len(blobs) != 1 or any(
        _is_repeated(f)
        or f.containing_oneof is not None
        or (f.type not in _UNSIGNED | _SIGNED and f is not blobs[0])
        for f in fields
    ):
        return None
    by_number = {f.number: f for f in fields}
    empty = {f.name: (memoryview(b"") if f is blobs[0] else 0) for f in fields}

    def parse(data: bytes) -> Any:
        values = dict(empty)
        pos = 0
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            field = by_number.get(key >> 3) if key > 0 else None
            if field is None:
                return plain(data)
            if field is blobs[0] and key & 7 == 2:
                length, pos = _read_varint(data, pos)
                if length < 0 or pos + length > len(data):
                    return plain(data)
                values[field.name] = memoryview(data)[pos : pos + length]
                pos += length
            elif field is not blobs[0] and key & 7 == 0:
                value, pos = _read_varint(data, pos)
                if value < 0:
                    return plain(data)
                if field.type in _SIGNED and value >= 2**63:
                    value -= 2**64
                values[field.name] = bool(value) if field.type == _BOOL else value
            else:
                return plain(data)
        return FlatView(**values)

    return parse


_BOOL = FieldDescriptor.TYPE_BOOL


def _is_repeated(field: _FieldDescriptor) -> bool:
    return bool(getattr(field, "is_repeated", field.label == FieldDescriptor.LABEL_REPEATED))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return -1, pos


def use_zero_copy_streams(stub: Any, channel: grpc.Channel, service: ServiceDescriptor) -> None:
    """Make ``stub``'s streaming calls move their data without extra copies.

    Generated stubs parse every response with protobuf, which copies the data twice; this
    swaps each server-streaming method of ``service`` for the same call on ``channel`` whose
    responses are a :class:`ChunkView` (a chunk oneof) or a :class:`FlatView` (integers and
    one ``bytes`` field, e.g. an artifact download), their data a view of the received bytes.
    Each client-streaming method is swapped for one that also sends requests already framed
    as bytes (:func:`chunk_encoder`) as they are.
    """
    for method in service.methods:
        if method.client_streaming and not method.server_streaming:
            response = message_factory.GetMessageClass(method.output_type)
            upload = channel.stream_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=_serialize,
                response_deserializer=response.FromString,
            )
            setattr(stub, method.name, upload)
            continue
        if not method.server_streaming or method.client_streaming:
            continue
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_stream(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=_flat_parser(response_cls) or chunk_parser(response_cls),
        )
        setattr(stub, method.name, call)
