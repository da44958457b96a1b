"""The coordinator's grid as an async run's clock (:class:`AsyncGrpcGrid`) over a real task hub:
a training task stays out while its device is away, a late update is still taken, a task out
longer than the round timeout is answered with why, a stop ends the wait, and a device behind a
site gateway gets a task of its own that the gateway holds beside others."""

import threading
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedge.app.async_loop import DeviceClock
from fedge.app.sites import MEAN, SiteResult
from fedge.coordinator.control import run_to_proto
from fedge.coordinator.errors import RunStoppedError
from fedge.coordinator.gateways import SiteRef
from fedge.coordinator.grid import AsyncGrpcGrid
from fedge.coordinator.plan import FleetView, resolve_plan
from fedge.coordinator.state import DeviceRow, State
from fedge.errors import ConfigError, StaleResultError
from fedge.protocol.messages import decode_message
from fedge.protocol.tasks import Task, TaskHub
from fedge.runtime.local import set_server_identity

from ..conftest import wait_for

RUN = 7


def _grid(
    hub: TaskHub, *, round_timeout: float = 60.0, stop: threading.Event | None = None
) -> AsyncGrpcGrid:
    set_server_identity(RUN)
    return AsyncGrpcGrid(
        hub, round_timeout=round_timeout, run_id=RUN, run_config={}, nodes=lambda: [1, 2], stop=stop
    )


def _train(node: int, version: int) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))}),
            "config": ConfigRecord({"server-round": version + 1}),
        }
    )
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(version))


def test_a_task_stays_out_while_its_device_is_away_and_its_late_update_is_taken() -> None:
    hub = TaskHub(liveness_seconds=0.2)
    grid = _grid(hub)
    assert isinstance(grid, DeviceClock)
    grid.start_training([_train(1, version=0)])
    task = hub.pull(1, wait_seconds=1.0)
    assert task is not None and task.server_round == 1
    wait_for(lambda: grid.reachable([1, 2]) == [], 10, "the device to go silent")
    assert grid.wait(grid.now + 0.3) == []  # nothing came: the task is still out
    assert grid.training == 1
    reply = Message(RecordDict(), reply_to=task_message(task))
    hub.complete(hub.task_for_result(task.task_id, 1), reply)
    delivered = grid.wait(grid.now + 5.0)
    assert [int(m.metadata.src_node_id) for m in delivered] == [1]
    assert delivered[0].metadata.group_id == "0"  # the version it started from
    assert grid.training == 0


def test_a_task_out_longer_than_the_round_timeout_is_answered_with_why() -> None:
    hub = TaskHub(liveness_seconds=0.2)
    grid = _grid(hub, round_timeout=0.3)
    grid.start_training([_train(2, version=4)])
    task = hub.pull(2, wait_seconds=1.0)
    assert task is not None
    replies = grid.wait(grid.now + 5.0)
    assert len(replies) == 1 and replies[0].has_error()
    assert "no update within --round-timeout" in str(replies[0].error.reason)
    assert int(replies[0].metadata.src_node_id) == 2 and replies[0].metadata.group_id == "4"
    with pytest.raises(StaleResultError):  # withdrawn: a later delivery is refused
        hub.task_for_result(task.task_id, 2)


def test_a_stop_ends_the_wait() -> None:
    stop = threading.Event()
    hub = TaskHub()
    grid = _grid(hub, stop=stop)
    grid.start_training([_train(1, version=0)])

    def stop_run() -> None:
        stop.set()
        hub.notify()

    threading.Timer(0.3, stop_run).start()
    with pytest.raises(RunStoppedError):
        grid.wait(float("inf"))
    grid.withdraw_all()
    assert grid.training == 0


def test_devices_behind_a_gateway_get_a_concurrent_task_each_and_their_own_replies() -> None:
    hub = TaskHub()
    site = SiteRef("factory-a", gateway_node=9, gateway_id="gw-1")
    set_server_identity(RUN)
    grid = AsyncGrpcGrid(
        hub,
        round_timeout=60.0,
        run_id=RUN,
        run_config={},
        nodes=lambda: [1, 2],
        sites=lambda node_ids: dict.fromkeys(node_ids, site),
    )
    grid.start_training([_train(1, version=3), _train(2, version=3)])
    first, second = hub.pull(9, wait_seconds=1.0), hub.pull(9, wait_seconds=1.0)
    assert first is not None and second is not None
    assert {first.site_nodes, second.site_nodes} == {(1,), (2,)}
    assert first.concurrent and second.concurrent
    assert hub.pull(9, wait_seconds=0.0) is None  # pulling again gave neither back
    trained = ArrayRecord({"w": Array(np.ones(3, dtype=np.float32))})
    answers = {
        1: SiteResult(MEAN, arrays=trained, metrics={1: MetricRecord({"num-examples": 10})}),
        2: SiteResult(MEAN, dropped={2: "not connected to its site gateway"}),
    }
    for task in (first, second):
        message = task_message(task)
        assert message.metadata.group_id == "3"  # the version the device starts from
        reply = Message(answers[task.site_nodes[0]].to_content(), reply_to=message)
        hub.complete(hub.task_for_result(task.task_id, 9), reply)
    replies: list[Message] = []

    def both_delivered() -> bool:
        replies.extend(grid.wait(grid.now + 1.0))
        return len(replies) == 2

    wait_for(both_delivered, 10, "both devices' replies")
    by_node = {int(m.metadata.src_node_id): m for m in replies}
    assert by_node[1].metadata.group_id == "3" and not by_node[1].has_error()
    assert by_node[1].content.array_records["arrays"]["w"].numpy().tolist() == [1.0, 1.0, 1.0]
    assert by_node[2].has_error()
    assert by_node[2].error.reason == "not connected to its site gateway (site factory-a)"
    assert grid.training == 0


def task_message(task: Task) -> Message:
    """The message a task carries, as the device decodes it."""
    return decode_message(task.payload.parts)


def _fleet(*sites: str) -> FleetView:
    rows = tuple(
        DeviceRow(id=i + 1, device_id=f"d{i}", name=f"d{i}", state="idle", can_train=True, site=s)
        for i, s in enumerate(sites)
    )
    return FleetView(rows, frozenset(r.id for r in rows))


ASYNC = {"dataset": "mnist-5k", "model": "cnn-small", "clients": 3, "mode": "async", "buffer": 2}


def test_an_async_plan_runs_on_the_coordinators_wall_clock() -> None:
    config = resolve_plan(ASYNC, fleet=_fleet("", "", ""))
    assert (config.runtime, config.mode, config.buffer) == ("grpc", "async", 2)
    # devices behind a site gateway too: the site forwards each device's update
    config = resolve_plan(ASYNC, fleet=_fleet("", "a", "a"))
    assert (config.runtime, config.mode) == ("grpc", "async")


@pytest.mark.parametrize(
    ("options", "sites", "message"),
    [
        ({"buffer": 4}, ("", "", ""), "--buffer: 4 is larger than the fleet (--clients 3)"),
        (
            {"site-rounds": 2},
            ("", "a", "a"),
            "--site-rounds: 2 does not apply under --mode async: a site forwards each device's",
        ),
        (
            {"availability": "random:0.5"},
            ("", "", ""),
            "runs on the local runtime's simulated clock",
        ),
    ],
)
def test_async_plans_that_cannot_run_are_refused_at_start(
    options: dict[str, object], sites: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_plan({**ASYNC, **options}, fleet=_fleet(*sites))
    assert message in str(refused.value)


def test_an_async_runs_status_is_kept_in_the_store_and_shown(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    run = state.create_run(config_json="{}", rounds_total=30)
    refusal = {"device_id": "d4", "node_id": 5, "reason": "stale: 9 versions old > 8"}
    status = {
        "version": 12,
        "in_buffer": 1,
        "buffer": 2,
        "training": 4,
        "updates_received": 30,
        "updates_applied": 24,
        "updates_refused": 1,
        "refused_by_reason": {"stale": 1},
        "last_refusals": [refusal],
        "staleness_histogram": {"0": 20, "9": 1},
    }
    state.set_run_async(run.id, status)
    shown = run_to_proto(State(tmp_path / "state.db").run(run.id), []).async_status
    assert (shown.version, shown.in_buffer, shown.training, shown.updates_refused) == (12, 1, 4, 1)
    assert dict(shown.refused_by_reason) == {"stale": 1}
    assert [(d.device_id, d.reason) for d in shown.last_refusals] == [("d4", refusal["reason"])]
    assert dict(shown.staleness_histogram) == {0: 20, 9: 1}
    sync = state.create_run(config_json="{}", rounds_total=3)
    assert not run_to_proto(state.run(sync.id), []).HasField("async_status")
