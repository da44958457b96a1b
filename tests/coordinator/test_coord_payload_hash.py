"""The payload hash: left out over mutual TLS, required without TLS, checked whenever sent.

Mutual TLS authenticates every record, so a task or result over it travels without a SHA-256;
a coordinator without TLS (``--insecure``) sends one and refuses a result that lacks it. The
chunks are framed by hand (:func:`fedge.protocol.wire.chunk_encoder`); plain generated stubs
here parse them with protobuf, so the frames are also checked against protobuf's own decoder.
"""

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from fedge.app.config import RunConfig
from fedge.coordinator.grid import GrpcGrid
from fedge.coordinator.server import Coordinator
from fedge.edge.identity import enroll_device
from fedge.errors import PayloadError
from fedge.protocol.messages import encode_message
from fedge.protocol.payload import PayloadAssembler
from fedge.protocol.transport import create_channel
from fedge.protocol.wire import chunk_encoder, chunk_parser
from fedge.runtime.local import set_server_identity
from fedge.v1 import fleet_pb2, fleet_pb2_grpc

from .conftest import Fleet, pull_task, start_fleet

S = grpc.StatusCode


@pytest.mark.parametrize("cls", [fleet_pb2.PullTaskResponse, fleet_pb2.PushResultRequest])
@pytest.mark.parametrize("size", [1, 127, 128, 16_384, 2**20 + 3])
def test_framed_chunks_are_the_bytes_protobuf_writes(cls: Any, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    framed = chunk_encoder(cls)(memoryview(data))
    assert framed == cls(chunk=fleet_pb2.Chunk(data=data)).SerializeToString()
    assert bytes(chunk_parser(cls)(framed).chunk.data) == data


def test_an_empty_hash_is_refused_only_where_required() -> None:
    data = b"payload"
    sizes = [len(data)]
    with pytest.raises(PayloadError, match="no SHA-256"):
        PayloadAssembler(expected_bytes=len(data), part_bytes=sizes, sha256="")
    assembler = PayloadAssembler(
        expected_bytes=len(data), part_bytes=sizes, sha256="", require_sha256=False
    )
    assembler.add(data)
    assert assembler.finish() == [data]
    # A hash that is sent is checked even where none is required.
    wrong = PayloadAssembler(
        expected_bytes=len(data),
        part_bytes=sizes,
        sha256=hashlib.sha256(b"x").hexdigest(),
        require_sha256=False,
    )
    wrong.add(data)
    with pytest.raises(PayloadError, match="SHA-256"):
        wrong.finish()


def _round(
    coordinator: Coordinator, node_id: int
) -> tuple[threading.Thread, list[Message], np.ndarray]:
    """A training round for one device, collecting its reply in a thread."""
    set_server_identity(7)
    grid = GrpcGrid(
        coordinator.hub,
        run_id=7,
        run_config=RunConfig(dataset="digits", model="mlp").to_run_config(),
        nodes=lambda: [node_id],
    )
    w = np.random.default_rng(0).standard_normal((300, 700)).astype(np.float32)  # > 1 chunk
    msg = Message(
        RecordDict({"arrays": ArrayRecord({"w": Array(w)})}),
        node_id,
        MessageType.TRAIN,
        group_id="1",
    )
    replies: list[Message] = []
    thread = threading.Thread(
        target=lambda: replies.extend(grid.send_and_receive([msg], timeout=60))
    )
    thread.start()
    return thread, replies, w


def _push(
    stub: Any,
    header: Any,
    reply: Message,
    *,
    sha256: str,
    corrupt: bool = False,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    payload = encode_message(reply)
    frame = chunk_encoder(fleet_pb2.PushResultRequest)

    def parts() -> Iterator[fleet_pb2.PushResultRequest]:
        yield fleet_pb2.PushResultRequest(
            header=fleet_pb2.ResultHeader(
                task_id=header.task_id,
                run_id=header.run_id,
                server_round=header.server_round,
                payload_bytes=payload.total_bytes,
                payload_sha256=sha256,
                part_bytes=payload.part_bytes,
            )
        )
        for i, view in enumerate(payload.views(2**19)):
            data = bytearray(view)
            if corrupt and i == 1:  # the array's first chunk: a float's lowest bit flipped,
                data[128 + 4 * 1000] ^= 0x01  # so it still decodes and validates: only the hash
            yield fleet_pb2.PushResultRequest.FromString(frame(bytes(data)))

    try:
        stub.PushResult(parts(), timeout=30, metadata=metadata)
    except grpc.RpcError as err:
        return err.code()
    return S.OK


def _echo(task: Message, w: np.ndarray) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(w)}), "metrics": MetricRecord({"num-examples": 5})}
    )
    return Message(content, reply_to=task)


def test_over_mutual_tls_payloads_travel_without_a_hash(fleet: Fleet) -> None:
    identity = fleet.enroll("dev")
    stub = fleet.fleet_stub(identity)  # generated stub: protobuf parses the framed chunks
    stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)
    thread, replies, w = _round(fleet.coordinator, identity.node_id)
    header, task = pull_task(stub)
    assert header.payload_sha256 == ""
    np.testing.assert_array_equal(task.content.array_records["arrays"]["w"].numpy(), w)
    reply = _echo(task, w * 2)
    # A hash that is sent is checked: a corrupted chunk under the true hash is refused.
    true_hash = encode_message(reply).sha256
    assert _push(stub, header, reply, sha256=true_hash, corrupt=True) == S.INVALID_ARGUMENT
    assert _push(stub, header, reply, sha256="") == S.OK
    thread.join(60)
    (got,) = replies
    np.testing.assert_array_equal(got.content.array_records["arrays"]["w"].numpy(), w * 2)


def test_without_tls_the_hash_is_sent_and_required(tmp_path: Path) -> None:
    fleet = start_fleet(tmp_path, insecure=True)
    coordinator, ports = fleet.coordinator, fleet.coordinator.ports
    channel = None
    try:
        identity = enroll_device(
            coordinator=f"127.0.0.1:{ports['fleet']}",
            enroll_address=f"127.0.0.1:{ports['enroll']}",
            token=coordinator.state.create_token(ttl_seconds=60).secret,
            state_dir=tmp_path / "dev",
            insecure=True,
        )
        channel = create_channel(identity.coordinator, tls=None)
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        meta = (("fedge-device-id", identity.device_id),)
        stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10, metadata=meta)
        thread, replies, w = _round(coordinator, identity.node_id)
        header, task = pull_task(stub, meta)
        assert len(header.payload_sha256) == 64
        reply = _echo(task, w + 1)
        assert _push(stub, header, reply, sha256="", metadata=meta) == S.INVALID_ARGUMENT
        true_hash = encode_message(reply).sha256
        assert (
            _push(stub, header, reply, sha256=true_hash, corrupt=True, metadata=meta)
            == S.INVALID_ARGUMENT
        )
        assert _push(stub, header, reply, sha256=true_hash, metadata=meta) == S.OK
        thread.join(60)
        (got,) = replies
        np.testing.assert_array_equal(got.content.array_records["arrays"]["w"].numpy(), w + 1)
    finally:
        if channel is not None:
            channel.close()
        fleet.close()


def test_an_update_of_the_wrong_shape_is_refused_and_the_task_stays_open(fleet: Fleet) -> None:
    identity = fleet.enroll("dev")
    stub = fleet.fleet_stub(identity)
    stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)
    thread, replies, w = _round(fleet.coordinator, identity.node_id)
    header, task = pull_task(stub)
    assert _push(stub, header, _echo(task, w[:-1]), sha256="") == S.INVALID_ARGUMENT
    assert _push(stub, header, _echo(task, w * 3), sha256="") == S.OK
    thread.join(60)
    (got,) = replies
    np.testing.assert_array_equal(got.content.array_records["arrays"]["w"].numpy(), w * 3)
