"""Chunk framing on the wire: payloads larger than one gRPC message, with as few copies as possible.

A payload travels as a stream of ``{chunk: Chunk{data}}`` messages. Protobuf would copy each
chunk's data into and out of a message; :func:`chunk_encoder` frames the data in one copy and
:func:`chunk_parser` decodes it as a view of the received bytes (:class:`ChunkView`). A flat reply
(integers and one ``bytes`` field, e.g. an artifact download) is decoded as a :class:`FlatView`.
:func:`use_zero_copy_streams` swaps a generated stub's streaming calls for these.
"""

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor

__all__ = [
    "ChunkView",
    "FlatView",
    "chunk_encoder",
    "chunk_parser",
    "serialize",
    "use_zero_copy_streams",
]


def serialize(message: Any) -> bytes:
    """A message's bytes; a message already framed (see :func:`chunk_encoder`) is sent as is."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


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
                request_serializer=serialize,
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
