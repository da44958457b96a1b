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

Copies are what a transfer costs in Python, so each byte is copied as few times as possible:
the assembler keeps the received chunks as they are (no growing buffer), each array's data is
joined from its chunks once, and :func:`fedge.app.arrays.array_values` checks an array
without Flower's ``np.load`` copy. The payload is hashed once on each side.
"""

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

from fedge.coordinator.errors import PayloadError, PayloadTooLargeError

__all__ = [
    "EncodedMessage",
    "Payload",
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

    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        """The payload in pieces of at most ``chunk_bytes`` (a piece never spans two parts)."""
        return (bytes(view) for view in self.views(chunk_bytes))

    def views(self, chunk_bytes: int) -> Iterator[memoryview]:
        """As :meth:`chunks`, but views of the parts, not copies: a sender frames the chunk's
        message around each in one copy (:func:`fedge.net.chunk_encoder`)."""
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


@dataclass(frozen=True)
class Payload:
    """A received payload as the chunks it arrived in (not joined: see the module docstring)."""

    chunks: list[bytes | memoryview]

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    def split(self, sizes: Sequence[int]) -> list[bytes]:
        """The payload cut into parts of ``sizes`` (which must add up to its length).

        A part that is exactly one chunk is that chunk, not a copy; any other is joined once.
        """
        parts: list[bytes] = []
        chunks = iter(self.chunks)
        current: bytes | memoryview = b""
        pos = 0
        for size in sizes:
            pieces: list[bytes | memoryview] = []
            need = size
            while need > 0:
                if pos == len(current):
                    current, pos = next(chunks), 0
                    continue
                take = min(len(current) - pos, need)
                whole = pos == 0 and take == len(current)
                pieces.append(current if whole else memoryview(current)[pos : pos + take])
                pos += take
                need -= take
            only = pieces[0] if len(pieces) == 1 else None
            parts.append(only if isinstance(only, bytes) else b"".join(pieces))
        return parts


def decode_message(payload: Payload | memoryview | bytes, part_bytes: list[int]) -> Message:
    """The Flower ``Message`` in ``payload``; :class:`PayloadError` if it is not one."""
    if not isinstance(payload, Payload):
        payload = Payload([bytes(payload)])
    total = len(payload)
    if not part_bytes or any(n < 0 for n in part_bytes) or sum(part_bytes) != total:
        raise PayloadError(f"part sizes {list(part_bytes)[:8]} do not add up to {total} bytes")
    head, *blobs = payload.split(part_bytes)
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
    """Collects a payload's chunks and checks them against the header's size and hash.

    An empty ``sha256`` means the sender left the hash out (mutual TLS); with
    ``require_sha256`` (a connection without TLS) that is refused.
    """

    def __init__(
        self,
        *,
        expected_bytes: int,
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
        # Kept as they arrive, not allocated from the (untrusted) announced size.
        self._chunks: list[bytes | memoryview] = []
        self._received = 0
        self._expected = expected_bytes
        self._sha256 = sha256
        self._digest = hashlib.sha256() if sha256 else None

    def add(self, data: bytes | memoryview) -> None:
        """Append one chunk."""
        if self._received + len(data) > self._expected:
            raise PayloadError(f"payload is longer than the announced {self._expected} bytes")
        self._chunks.append(data)
        self._received += len(data)
        if self._digest is not None:
            self._digest.update(data)

    def finish(self) -> Payload:
        """The whole payload, after checking its size and hash."""
        if self._received != self._expected:
            raise PayloadError(f"payload has {self._received} bytes, announced {self._expected}")
        if self._digest is not None and self._digest.hexdigest() != self._sha256:
            raise PayloadError("payload SHA-256 does not match its header")
        return Payload(self._chunks)
