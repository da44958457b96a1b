"""The simulated clock: deliveries at each device's training time, waits for offline devices,
round timeouts, and sync rounds that last as long as their slowest device."""

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedge.app import build_client_app
from fedge.app.availability import parse_availability
from fedge.app.config import RunConfig
from fedge.data import get_dataset
from fedge.models import get_model
from fedge.runtime.clock import SimulatedClockGrid
from fedge.runtime.local import LocalGrid, set_server_identity

CLIENTS = 4


def _grid(tmp_path: Path, spec: str = "always", speeds: list[float] | None = None, **kw: float):
    config = RunConfig(dataset="digits", model="cnn-small", clients=CLIENTS, local_epochs=1)
    local = LocalGrid(
        build_client_app(config, device_state_root=tmp_path), num_nodes=CLIENTS, workers=1
    )
    set_server_identity(local.run.run_id)
    availability = parse_availability(spec, devices=CLIENTS, slot_seconds=60.0, seed=0)
    rates = np.array(speeds or [1.0, 2.0, 4.0, 8.0])
    return SimulatedClockGrid(local, availability=availability, speeds=rates, local_epochs=1, **kw)


def _train_messages(nodes: list[int]) -> list[Message]:
    data = get_dataset("digits")
    model = get_model("cnn-small", input_shape=data.input_shape, num_classes=data.num_classes)
    arrays = ArrayRecord(model.state_dict())
    return [
        Message(
            RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
            dst_node_id=n,
            message_type=MessageType.TRAIN,
            group_id="1",
        )
        for n in nodes
    ]


def _examples(reply: Message) -> float:
    return float(reply.content.metric_records["metrics"]["num-examples"])


def test_async_deliveries_come_in_time_order_at_examples_over_speed(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    grid.start_training(_train_messages([1, 2, 3, 4]))
    assert grid.training == 4 and grid.now == 0.0
    seen = []
    while grid.training:
        for reply in grid.wait(math.inf):
            node = int(reply.metadata.src_node_id)
            assert grid.now == pytest.approx(_examples(reply) / [1.0, 2.0, 4.0, 8.0][node - 1])
            seen.append((grid.now, node))
    assert [n for _, n in seen] == [4, 3, 2, 1]  # the fastest delivers first
    assert grid.wait(1000.0) == [] and grid.now == 1000.0  # nothing in flight: time passes


def test_a_device_offline_when_it_finishes_delivers_when_it_is_back(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    # device 0 is online at 0-10 s and from 500 s; every other device always
    trace.write_text("device,start,end\n0,0,10\n0,500,1000\n1,0,1000\n2,0,1000\n3,0,1000\n")
    grid = _grid(tmp_path, f"trace:{trace}")
    grid.start_training(_train_messages([1]))
    [reply] = grid.wait(math.inf)
    assert _examples(reply) > 10  # it finished at > 10 s, offline
    assert grid.now == 500.0
    assert grid.reachable([1, 2]) == [1, 2]
    assert grid.next_reachable([1, 2]) == math.inf  # both online: no later change that matters


def test_a_sync_round_lasts_as_long_as_its_slowest_device(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    replies = list(grid.send_and_receive(_train_messages([1, 2, 3, 4])))
    assert len(replies) == 4
    slowest = max(
        _examples(r) / [1.0, 2.0, 4.0, 8.0][int(r.metadata.src_node_id) - 1] for r in replies
    )
    assert grid.now == pytest.approx(slowest)
    assert grid.round_facts(1)["sim_round_seconds"] == pytest.approx(slowest)


def test_a_sync_round_drops_devices_past_the_round_timeout(tmp_path: Path) -> None:
    grid = _grid(tmp_path, speeds=[0.1, 100.0, 100.0, 100.0], round_timeout=100.0)
    replies = list(grid.send_and_receive(_train_messages([1, 2, 3, 4])))
    assert sorted(int(r.metadata.src_node_id) for r in replies) == [2, 3, 4]
    assert grid.now == 100.0  # it waited the timeout out
    assert "round timeout (100 simulated s)" in grid.missing_reason(1)


def test_a_sync_round_samples_only_reachable_devices_and_waits_for_enough(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("device,start,end\n0,0,50\n1,300,400\n2,300,400\n3,0,400\n")
    grid = _grid(tmp_path, f"trace:{trace}", min_nodes=3)
    assert sorted(grid.get_node_ids()) == [2, 3, 4]  # at 300 s, when three are online
    assert grid.now == 300.0
