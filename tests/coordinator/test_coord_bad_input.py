"""Bad input on the fleet and control services: refused with a status and a recorded reason.

Each test checks that nothing already stored is lost: the devices, the runs and a task still
awaiting its result survive every refused request.
"""

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from fedge.app.config import RunConfig
from fedge.coordinator.grid import GrpcGrid
from fedge.edge.identity import DeviceIdentity
from fedge.protocol.messages import encode_message
from fedge.protocol.payload import EncodedMessage
from fedge.runtime.local import set_server_identity
from fedge.v1 import control_pb2, fleet_pb2

from .conftest import Fleet, pull_task

FLEET_METHODS = {"Heartbeat": "uu", "PullTask": "us", "PushResult": "su"}
CONTROL_METHODS = {
    "StartRun": "uu",
    "GetRun": "uu",
    "ListRuns": "uu",
    "StopRun": "uu",
    "ListDevices": "uu",
    "RevokeDevice": "uu",
    "CreateEnrollToken": "uu",
    "GetRunResults": "uu",
    "UploadArtifact": "su",
    "PublishRelease": "uu",
    "PromoteRelease": "uu",
    "RollbackRelease": "uu",
    "ListReleases": "uu",
    "GetReleaseStatus": "uu",
    "GetReleaseKey": "uu",
}


def _raw_call(channel: grpc.Channel, path: str, kind: str, payload: bytes) -> grpc.StatusCode:
    try:
        if kind == "uu":
            channel.unary_unary(path)(payload, timeout=10)
        elif kind == "us":
            list(channel.unary_stream(path)(payload, timeout=10))
        else:
            channel.stream_unary(path)(iter([payload]), timeout=10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _snapshot(fleet: Fleet) -> tuple[Any, ...]:
    state = fleet.coordinator.state
    return (
        [(d.device_id, d.revoked, d.cert_serial) for d in state.devices()],
        [(r.id, r.config_json) for r in state.runs()],
    )


def test_random_bytes_on_every_rpc_are_refused_and_recorded(fleet: Fleet) -> None:
    identity = fleet.enroll("dev")
    fleet.coordinator.runs.shutdown()  # keep the run queued: only storage matters here
    fleet.coordinator.runs.submit(RunConfig(dataset="digits", model="mlp"))
    before = _snapshot(fleet)
    device = fleet.channel(identity.tls())
    rng = np.random.default_rng(0)
    calls = [(f"/fedge.v1.FleetService/{m}", k, device) for m, k in FLEET_METHODS.items()]
    op_channel = _operator_channel(fleet)
    calls += [(f"/fedge.v1.ControlService/{m}", k, op_channel) for m, k in CONTROL_METHODS.items()]
    for path, kind, channel in calls:
        # Random bytes, led by a tag with field number 0, which no protobuf message can have.
        payload = b"\x00" + rng.bytes(64)
        code = _raw_call(channel, path, kind, payload)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, path
        method = path.removeprefix("/fedge.v1.")
        events = fleet.coordinator.state.events()
        assert any(
            e.kind == "refused" and e.message.startswith(f"{method}: INVALID_ARGUMENT")
            for e in events
        ), method
    assert _snapshot(fleet) == before
    stub = fleet.fleet_stub(identity)
    assert stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10).interval_seconds > 0


def test_the_enrolment_port_serves_enrolment_only(fleet: Fleet) -> None:
    from fedge.protocol.pki import ENROLL_SERVER_NAME
    from fedge.protocol.transport import ClientTLS, create_channel

    pinned = ClientTLS(
        ca_pem=(fleet.root / "certs" / "enroll.pem").read_bytes(), server_name=ENROLL_SERVER_NAME
    )
    enrol = create_channel(fleet.enroll_address, tls=pinned)
    try:
        garbage = b"\x00" + bytes(16)
        assert _raw_call(enrol, "/fedge.v1.EnrollmentService/Enroll", "uu", garbage) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        for path in ("/fedge.v1.FleetService/Heartbeat", "/fedge.v1.ControlService/ListRuns"):
            assert _raw_call(enrol, path, "uu", b"") == grpc.StatusCode.UNIMPLEMENTED, path
    finally:
        enrol.close()
    identity = fleet.enroll("dev")
    main = fleet.channel(identity.tls())
    assert _raw_call(main, "/fedge.v1.EnrollmentService/Enroll", "uu", b"") == (
        grpc.StatusCode.UNIMPLEMENTED
    )


def _operator_channel(fleet: Fleet) -> grpc.Channel:
    from fedge.protocol.transport import ClientTLS

    op = fleet.root / "certs" / "operator"
    return fleet.channel(
        ClientTLS(
            ca_pem=(op / "ca.pem").read_bytes(),
            cert_pem=(op / "operator.pem").read_bytes(),
            key_pem=(op / "operator.key").read_bytes(),
        )
    )


def test_a_message_over_the_limit_is_resource_exhausted(fleet: Fleet) -> None:
    identity = fleet.enroll("dev")
    channel = fleet.channel(identity.tls())
    too_big = fleet_pb2.HeartbeatRequest(version="x" * (5 * 2**20)).SerializeToString()
    code = _raw_call(channel, "/fedge.v1.FleetService/Heartbeat", "uu", too_big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    stub = fleet.fleet_stub(identity)
    assert stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10).interval_seconds > 0


# Results: wrong run or round, duplicates, NaN and wrong-shape updates, broken framing.


def _train_task(fleet: Fleet, identity: DeviceIdentity) -> tuple[GrpcGrid, Message]:
    set_server_identity(7)
    grid = GrpcGrid(
        fleet.coordinator.hub,
        run_id=7,
        run_config=RunConfig(dataset="digits", model="mlp").to_run_config(),
        nodes=lambda: [identity.node_id],
    )
    arrays = ArrayRecord({"w": Array(np.ones((3, 2), dtype=np.float32))})
    msg = Message(RecordDict({"arrays": arrays}), identity.node_id, MessageType.TRAIN, group_id="1")
    return grid, msg


def _reply(task: Message, w: np.ndarray) -> EncodedMessage:
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(w)}), "metrics": MetricRecord({"num-examples": 5})}
    )
    return encode_message(Message(content, reply_to=task))


def _garbage() -> EncodedMessage:
    import hashlib

    data = b"\x00garbage"
    return EncodedMessage([data], hashlib.sha256(data).hexdigest())


def _push(stub: Any, header: Any, payload: EncodedMessage, **changes: Any) -> grpc.StatusCode:
    fields = {
        "task_id": header.task_id,
        "run_id": header.run_id,
        "server_round": header.server_round,
        "payload_bytes": payload.total_bytes,
        "payload_sha256": payload.sha256,
        "part_bytes": payload.part_bytes,
        **changes,
    }

    def parts() -> Iterator[fleet_pb2.PushResultRequest]:
        yield fleet_pb2.PushResultRequest(header=fleet_pb2.ResultHeader(**fields))
        for data in payload.views(16):
            yield fleet_pb2.PushResultRequest(chunk=fleet_pb2.Chunk(data=bytes(data)))

    try:
        stub.PushResult(parts(), timeout=10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_bad_results_are_refused_and_the_good_one_still_counts(fleet: Fleet) -> None:
    identity = fleet.enroll("dev")
    stub = fleet.fleet_stub(identity)
    stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)  # online: the grid waits for it
    grid, msg = _train_task(fleet, identity)
    replies: list[Message] = []
    round_thread = threading.Thread(
        target=lambda: replies.extend(grid.send_and_receive([msg], timeout=60))
    )
    round_thread.start()
    header, task = pull_task(stub)
    good = _reply(task, np.full((3, 2), 2.0, dtype=np.float32))
    S = grpc.StatusCode  # noqa: N806
    cases = {
        "wrong round": (_push(stub, header, good, server_round=99), S.FAILED_PRECONDITION),
        "wrong run": (_push(stub, header, good, run_id=8), S.FAILED_PRECONDITION),
        "unknown task": (_push(stub, header, good, task_id="nope"), S.FAILED_PRECONDITION),
        "NaN": (
            _push(stub, header, _reply(task, np.full((3, 2), np.nan, np.float32))),
            S.INVALID_ARGUMENT,
        ),
        "shape": (
            _push(stub, header, _reply(task, np.ones((2, 3), np.float32))),
            S.INVALID_ARGUMENT,
        ),
        "hash": (_push(stub, header, good, payload_sha256="0" * 64), S.INVALID_ARGUMENT),
        "size": (_push(stub, header, good, payload_bytes=3), S.INVALID_ARGUMENT),
        "garbage": (_push(stub, header, _garbage()), S.INVALID_ARGUMENT),
        "parts": (_push(stub, header, good, part_bytes=[1, 2]), S.INVALID_ARGUMENT),
        "good": (_push(stub, header, good), S.OK),
        "duplicate": (_push(stub, header, good), S.ALREADY_EXISTS),
    }
    round_thread.join(30)
    assert {k: v[0] for k, v in cases.items()} == {k: v[1] for k, v in cases.items()}
    assert len(replies) == 1
    np.testing.assert_array_equal(replies[0].content.array_records["arrays"]["w"].numpy(), 2.0)
    reasons = [e.message for e in fleet.coordinator.state.events() if e.kind == "refused"]
    assert any("NaN or Inf" in r for r in reasons)
    assert any("shape (2, 3), expected (3, 2)" in r for r in reasons)
    assert any("already has a result" in r for r in reasons)
    late = _push(stub, header, good)
    assert late in (S.ALREADY_EXISTS, S.FAILED_PRECONDITION)


@pytest.mark.parametrize("config_json", ['{"dataset": "nope"}', "[1, 2]", "{"])
def test_bad_run_configs_are_invalid_argument(fleet: Fleet, config_json: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fleet.control_stub().StartRun(
            control_pb2.StartRunRequest(config_json=config_json), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fleet.coordinator.state.runs() == []
