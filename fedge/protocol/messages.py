"""Flower ``Message`` ⇄ payload parts: the serde of tasks and results on the fleet protocol.

A payload is a Flower ``Message`` in parts: first the message as a ``flwr.proto.Message``
(Flower's own serde) with every array's data left out, then each array's data as is, in the
message's order. Arrays are thus never re-encoded or copied into a protobuf. Only a device that
trains (``fedge[train]``) and the coordinator import this module; it needs Flower.
"""

from collections.abc import Iterator, Sequence

from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.common.serde import (
    error_to_proto,
    message_from_proto,
    metadata_to_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Message as ProtoMessage
from google.protobuf.message import DecodeError

from fedge.errors import PayloadError
from fedge.protocol.payload import EncodedMessage

__all__ = ["decode_message", "encode_message"]


def _arrays(content: RecordDict) -> Iterator[tuple[ArrayRecord, str, Array]]:
    for record in content.array_records.values():
        for key, array in record.items():
            yield record, key, array


def encode_message(message: Message) -> EncodedMessage:
    """``message`` as payload parts (see the module docstring)."""
    blobs: list[bytes] = []
    proto = ProtoMessage(metadata=metadata_to_proto(message.metadata))
    if message.has_content():
        content = RecordDict()
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                stripped = ArrayRecord()
                for key, array in record.items():
                    stripped[key] = Array(array.dtype, array.shape, array.stype, b"")
                    blobs.append(array.data)
                content[name] = stripped
            else:
                content[name] = record
        proto.content.CopyFrom(recorddict_to_proto(content))
    if message.has_error():
        proto.error.CopyFrom(error_to_proto(message.error))
    return EncodedMessage([bytes(proto.SerializeToString()), *blobs])


def decode_message(parts: Sequence[bytes]) -> Message:
    """The Flower ``Message`` in payload ``parts``; :class:`PayloadError` if it is not one."""
    if not parts:
        raise PayloadError("a payload has at least its message part")
    head, *blobs = parts
    proto = ProtoMessage()
    try:
        proto.ParseFromString(head)
        message = message_from_proto(proto)
    except (DecodeError, ValueError, TypeError, KeyError) as err:
        raise PayloadError(f"payload is not a Flower message: {err}") from err
    arrays = list(_arrays(message.content)) if message.has_content() else []
    if len(arrays) != len(blobs):
        raise PayloadError(f"payload has {len(blobs)} array parts for {len(arrays)} arrays")
    for (_, _, array), blob in zip(arrays, blobs, strict=True):
        if array.data:
            raise PayloadError("array data must travel as a separate part")
        array.data = blob
    return message
