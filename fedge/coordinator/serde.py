"""Flower ``Message`` ⇄ bytes ⇄ fleet-protocol chunks: the one serde module of the coordinator.

A task or a result is a Flower ``Message`` serialized with Flower's own protobuf serde
(``flwr.common.serde``), then cut into chunks under the gRPC message limit. The receiver
reassembles with :class:`PayloadAssembler`, which checks the announced size and SHA-256
before anything is decoded.
"""

import hashlib
import json
from typing import Any

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from google.protobuf.message import DecodeError

from fedge.coordinator.errors import PayloadError, PayloadTooLargeError

__all__ = [
    "PayloadAssembler",
    "config_from_json",
    "message_from_bytes",
    "message_to_bytes",
    "sha256_hex",
]

DEFAULT_MAX_PAYLOAD = 2**31


def message_to_bytes(message: Message) -> bytes:
    """``message`` as the bytes of a ``flwr.proto.Message``."""
    return bytes(message_to_proto(message).SerializeToString())


def message_from_bytes(payload: bytes) -> Message:
    """The Flower ``Message`` in ``payload``; :class:`PayloadError` if it is not one."""
    proto = ProtoMessage()
    try:
        proto.ParseFromString(payload)
        return message_from_proto(proto)
    except (DecodeError, ValueError, TypeError, KeyError) as err:
        raise PayloadError(f"payload is not a Flower message: {err}") from err


def sha256_hex(payload: bytes) -> str:
    """Hex SHA-256 of ``payload``."""
    return hashlib.sha256(payload).hexdigest()


def config_from_json(text: str) -> dict[str, Any]:
    """A JSON object of run options; :class:`PayloadError` otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise PayloadError(f"run config is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise PayloadError("run config must be a JSON object")
    return value


class PayloadAssembler:
    """Collects a payload's chunks and checks them against the header's size and hash."""

    def __init__(self, *, expected_bytes: int, sha256: str, max_bytes: int = DEFAULT_MAX_PAYLOAD):
        if expected_bytes < 0:
            raise PayloadError(f"payload size {expected_bytes} is negative")
        if expected_bytes > max_bytes:
            raise PayloadTooLargeError(
                f"payload of {expected_bytes} bytes is over the limit of {max_bytes}"
            )
        self._expected = expected_bytes
        self._sha256 = sha256
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> None:
        """Append one chunk."""
        self._size += len(data)
        if self._size > self._expected:
            raise PayloadError(f"payload is longer than the announced {self._expected} bytes")
        self._parts.append(data)

    def finish(self) -> bytes:
        """The whole payload, after checking its size and hash."""
        if self._size != self._expected:
            raise PayloadError(f"payload has {self._size} bytes, announced {self._expected}")
        payload = b"".join(self._parts)
        self._parts.clear()
        if sha256_hex(payload) != self._sha256:
            raise PayloadError("payload SHA-256 does not match its header")
        return payload
