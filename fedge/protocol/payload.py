"""Payloads in parts, streamed in chunks: the sender's :class:`EncodedMessage` and the
receiver's :class:`PayloadAssembler`.

A payload is a list of parts (for a Flower message: the message without array data, then each
array's data, see :mod:`fedge.protocol.messages`), streamed in chunks under the gRPC message limit.
The SHA-256 guards the payload where the connection does not: a sender on a mutual-TLS
connection leaves it out (each TLS record is authenticated, so the bytes that arrive are the
bytes sent) and computes it only on demand (:attr:`EncodedMessage.sha256`); a receiver without
TLS (``--insecure``) requires it, and a hash that is sent is always checked.

Copies and fresh memory are what a transfer costs in Python, so the assembler writes every
chunk straight into its part's final ``bytes`` as it arrives (no growing buffer, no join once
the transfer is over).
"""

import hashlib
from collections.abc import Iterator, Sequence

from fedge.errors import PayloadError, PayloadTooLargeError
from fedge.protocol.buffers import BytesBuilder

__all__ = ["DEFAULT_MAX_PAYLOAD", "EncodedMessage", "PayloadAssembler"]

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
        one copy (:func:`fedge.protocol.wire.chunk_encoder`)."""
        for part in self.parts:
            view = memoryview(part)
            for start in range(0, len(part), chunk_bytes):
                yield view[start : start + chunk_bytes]


class PayloadAssembler:
    """Writes a payload's chunks into its parts as they arrive, and checks the header's sizes
    and hash.

    Each part is one ``bytes`` filled in place (:class:`~fedge.protocol.buffers.BytesBuilder`),
    so the chunks are neither kept nor joined afterwards. A part is allocated when its first byte
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
