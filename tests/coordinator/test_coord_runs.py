"""Runs through the control service: queued, stopped by the operator, listed."""

import json
import time

import grpc
import pytest

from fedge.v1 import control_pb2

from .conftest import Fleet


def _wait_state(fleet: Fleet, run_id: int, state: int) -> control_pb2.GetRunResponse:
    stub = fleet.control_stub()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = stub.GetRun(control_pb2.GetRunRequest(run_id=run_id), timeout=10)
        if reply.run.state == state:
            return reply
        time.sleep(0.2)
    pytest.fail(f"run {run_id} never reached state {state}")


def test_operator_stops_a_run_waiting_for_devices(fleet: Fleet) -> None:
    for name in ("a", "b"):  # two devices that can train, gone quiet after one heartbeat
        fleet.trainer(name)
    stub = fleet.control_stub()
    config = {"dataset": "digits", "model": "mlp", "clients": 2, "rounds": 2}
    started = stub.StartRun(control_pb2.StartRunRequest(config_json=json.dumps(config)), timeout=10)
    run_id = started.run.run_id
    _wait_state(fleet, run_id, control_pb2.RUN_STATE_RUNNING)  # no device: waits
    stub.StopRun(control_pb2.StopRunRequest(run_id=run_id), timeout=10)
    reply = _wait_state(fleet, run_id, control_pb2.RUN_STATE_STOPPED)
    assert [e.kind for e in reply.events][:1] == ["queued"]
    assert any(e.kind == "stop" for e in reply.events)
    runs = stub.ListRuns(control_pb2.ListRunsRequest(), timeout=10).runs
    assert [(r.run_id, r.state) for r in runs] == [(run_id, control_pb2.RUN_STATE_STOPPED)]
    assert json.loads(runs[0].config_json)["runtime"] == "grpc"


def test_unknown_runs_and_devices_are_not_found(fleet: Fleet) -> None:
    stub = fleet.control_stub()
    for call in (
        lambda: stub.GetRun(control_pb2.GetRunRequest(run_id=0), timeout=10),
        lambda: stub.StopRun(control_pb2.StopRunRequest(run_id=5), timeout=10),
        lambda: stub.RevokeDevice(control_pb2.RevokeDeviceRequest(device_id="x"), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
