"""Helpers to act as the devices of an in-process coordinator (``fleet``, in the root conftest)."""

from typing import Any

from flwr.app import Message

from fedge.protocol.messages import decode_message
from fedge.protocol.payload import PayloadAssembler
from fedge.v1 import fleet_pb2

from ..conftest import Fleet, start_fleet

__all__ = ["Fleet", "pull_task", "start_fleet"]


def pull_task(stub: Any, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Any, Message]:
    """Pull one task as a device does: its header and its decoded message."""
    request = fleet_pb2.PullTaskRequest(wait_seconds=5)
    parts = list(stub.PullTask(request, timeout=10, metadata=metadata))
    header = parts[0].header
    assembler = PayloadAssembler(
        expected_bytes=header.payload_bytes,
        part_bytes=header.part_bytes,
        sha256=header.payload_sha256,
        require_sha256=False,  # as over mutual TLS; a hash that is sent is still checked
    )
    for part in parts[1:]:
        assembler.add(part.chunk.data)
    return header, decode_message(assembler.finish())
