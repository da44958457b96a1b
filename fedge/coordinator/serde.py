"""Flower ``Message`` ⇄ fleet-protocol payloads: the one serde module of the coordinator.

A payload is a Flower ``Message`` in parts: first the message as a ``flwr.proto.Message``
(Flower's own serde) with every array's data left out, then each array's data as is, in the
message's order. Arrays are thus never re-encoded or copied into a protobuf; the parts are
streamed in chunks under the gRPC message limit. The receiver reassembles the parts with
:class:`PayloadAssembler`, which checks the announced sizes and SHA-256 before anything is
decoded, and :func:`decode_message` puts the arrays back.

The SHA-256 guards the payload where the connection does not: a sender on a mutual-TLS
connection leaves it out (each TLS record is authenticated, so the bytes that arrive are the
bytes sent) and computes it only on demand (:attr:`EncodedMessage.sha256`); a receiver without
TLS (``--insecure``) requires it, and a hash that is sent is always checked.

Copies and fresh memory are what a transfer costs in Python, so each byte is copied as few
times as possible: the assembler writes every chunk straight into its part's final ``bytes``
as it arrives (no growing buffer, no join once the transfer is over), and
:func:`fedge.app.arrays.array_values` checks an array without Flower's ``np.load`` copy. The
payload is hashed once on each side, and only where the connection does not authenticate it.
"""

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.common.serde import (
    error_to_proto,
    message_from_proto,
    metadata_to_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Message as ProtoMessage
from google.protobuf.message import DecodeError

from fedge.buffers import BytesBuilder
from fedge.coordinator.errors import PayloadError, PayloadTooLargeError

__all__ = [
    "EncodedMessage",
    "PayloadAssembler",
    "config_from_json",
    "decode_message",
    "encode_message",
]

DEFAULT_MAX_PAYLOAD = 2**31


class EncodedMessage:
    """A message as payload parts, with their sizes and (computed on demand) SHA-256."""

    def __init__(self, parts: list[bytes], sha256: str | None = None) -> None:
        self.parts = parts
        self._sha256 = sha256

    @property
    def sha256(self) -> str:
        """The payload's hex SHA-256, computed on first use (not needed over mutual TLS)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for part in self.parts:
                digest.update(part)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def part_bytes(self) -> list[int]:
        """The size of each part."""
        return [len(p) for p in self.parts]

    @property
    def total_bytes(self) -> int:
        """The payload's size."""
        return sum(self.part_bytes)

    def views(self, chunk_bytes: int) -> Iterator[memoryview]:
        """The payload in pieces of at most ``chunk_bytes`` (a piece never spans two parts),
        as views of the parts, not copies: a sender frames the chunk's message around each in
        one copy (:func:`fedge.net.chunk_encoder`)."""
        for part in self.parts:
            view = memoryview(part)
            for start in range(0, len(part), chunk_bytes):
                yield view[start : start + chunk_bytes]


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
    """Writes a payload's chunks into its parts as they arrive, and checks the header's sizes
    and hash.

    Each part is one ``bytes`` filled in place (:class:`~fedge.buffers.BytesBuilder`), so the
    chunks are neither kept nor joined afterwards. A part is allocated when its first byte
    arrives, not from the (untrusted) announced sizes alone. An empty ``sha256`` means the
    sender left the hash out (mutual TLS); with ``require_sha256`` (a connection without TLS)
    that is refused.
    """

    def __init__(
        self,
        *,
        expected_bytes: int,
        part_bytes: Sequence[int],
        sha256: str,
        max_bytes: int = DEFAULT_MAX_PAYLOAD,
        require_sha256: bool = True,
    ) -> None:
        if not sha256 and require_sha256:
            raise PayloadError("payload has no SHA-256, which a connection without TLS needs")
        if expected_bytes < 0:
            raise PayloadError(f"payload size {expected_bytes} is negative")
        if expected_bytes > max_bytes:
            raise PayloadTooLargeError(
                f"payload of {expected_bytes} bytes is over the limit of {max_bytes}"
            )
        self._sizes = list(part_bytes)
        if not self._sizes or min(self._sizes) < 0 or sum(self._sizes) != expected_bytes:
            raise PayloadError(
                f"part sizes {self._sizes[:8]} do not add up to {expected_bytes} bytes"
            )
        self._parts: list[bytes] = []
        self._part: BytesBuilder | None = None
        self._received = 0
        self._expected = expected_bytes
        self._sha256 = sha256
        self._digest = hashlib.sha256() if sha256 else None

    def add(self, data: bytes | memoryview) -> None:
        """Write one chunk (a chunk may end one part and start the next)."""
        view = memoryview(data).cast("B")
        if self._received + len(view) > self._expected:
            raise PayloadError(f"payload is longer than the announced {self._expected} bytes")
        self._received += len(view)
        if self._digest is not None:
            self._digest.update(view)
        while view:
            part = self._open_part()
            take = min(len(view), part.remaining)
            part.write(view[:take])
            view = view[take:]

    def _open_part(self) -> BytesBuilder:
        # The part being written. Full ones (empty parts too) are closed first; one with room
        # exists, since add() never takes more than the announced total.
        while self._part is None or not self._part.remaining:
            if self._part is not None:
                self._parts.append(self._part.build())
            self._part = BytesBuilder(self._sizes[len(self._parts)])
        return self._part

    def finish(self) -> list[bytes]:
        """The payload's parts, after checking their sizes and hash."""
        if self._received != self._expected:
            raise PayloadError(f"payload has {self._received} bytes, announced {self._expected}")
        if self._digest is not None and self._digest.hexdigest() != self._sha256:
            raise PayloadError("payload SHA-256 does not match its header")
        if self._part is not None:
            self._parts.append(self._part.build())
            self._part = None
        self._parts.extend(b"" for _ in self._sizes[len(self._parts) :])
        return self._parts
