"""Helpers to act as the devices of an in-process coordinator (``fleet``, in the root conftest)."""

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message

from fedge.protocol.fleet import read_task
from fedge.v1 import fleet_pb2

from ..conftest import Fleet, start_fleet

__all__ = ["Fleet", "observed", "pull_task", "start_fleet"]


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator serving /metrics on an ephemeral loopback port."""
    with closing(start_fleet(tmp_path, metrics_address="127.0.0.1:0")) as f:
        yield f


def pull_task(stub: Any, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Any, Message]:
    """Pull one task as a device does: its header and its decoded message."""
    request = fleet_pb2.PullTaskRequest(wait_seconds=5)
    stream = stub.PullTask(request, timeout=10, metadata=metadata)
    # require_sha256=False as over mutual TLS; a hash that is sent is still checked
    pulled = read_task(stream, require_sha256=False)
    assert pulled is not None, "no task came within 5 s"
    return pulled
