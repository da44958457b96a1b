"""Models travel in chunks: a 100 MB model goes to a device and back over mutual TLS."""

import threading
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedge.app.config import RunConfig
from fedge.coordinator.grid import GrpcGrid
from fedge.edge.agent import AgentSettings, EdgeAgent
from fedge.runtime.local import set_server_identity

from .conftest import Fleet


def _echo_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def echo(msg: Message, context: Context) -> Message:
        content = RecordDict(
            {
                "arrays": msg.content.array_records["arrays"],
                "metrics": MetricRecord({"num-examples": 1}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def test_a_100mb_model_round_trips(fleet: Fleet, tmp_path: Path) -> None:
    identity = fleet.enroll("big")
    agent = EdgeAgent(
        identity,
        data_dir=tmp_path,
        settings=AgentSettings(wait_seconds=1, heartbeat_seconds=0.5, max_tasks=1),
        client_app=_echo_app(),
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        set_server_identity(3)
        grid = GrpcGrid(
            fleet.coordinator.hub,
            run_id=3,
            run_config=RunConfig(dataset="digits", model="mlp").to_run_config(),
            nodes=lambda: [identity.node_id],
        )
        assert list(grid.get_node_ids()) == [identity.node_id]
        weights = np.random.default_rng(0).standard_normal(25 * 2**20, dtype=np.float32)
        assert weights.nbytes == 100 * 2**20  # 25 messages' worth at the 4 MiB limit
        msg = Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(weights)})}),
            identity.node_id,
            MessageType.TRAIN,
            group_id="1",
        )
        replies = list(grid.send_and_receive([msg], timeout=300))
    finally:
        agent.stop()
        thread.join(60)
    assert len(replies) == 1 and not replies[0].has_error()
    echoed = replies[0].content.array_records["arrays"]["w"].numpy()
    np.testing.assert_array_equal(echoed, weights)
