"""Helpers for the privacy tests: a real in-process grid whose clients return chosen updates."""

from collections.abc import Callable

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedge.privacy.central import CentralDP
from fedge.runtime.local import LocalGrid, set_server_identity

UpdateFn = Callable[[int, np.ndarray], np.ndarray]


def update_grid(num_nodes: int, update: UpdateFn) -> LocalGrid:
    """A LocalGrid whose node ``i`` answers a train message with ``global + update(i, w)``."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: object) -> Message:
        arrays = msg.content.array_records["arrays"].to_torch_state_dict()
        pid = int(context.node_config["partition-id"])  # type: ignore[attr-defined]
        new = {
            k: v + torch.from_numpy(update(pid, v.numpy()).astype(np.float32))
            for k, v in arrays.items()
        }
        metrics = MetricRecord({"num-examples": 1})
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)

    grid = LocalGrid(app, num_nodes=num_nodes)
    set_server_identity(grid.run.run_id)
    return grid


def central(**kwargs: object) -> CentralDP:
    """A CentralDP around FedAvg, with test defaults."""
    params: dict[str, object] = {
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "sample_rate": 1.0,
        "population": 10,
        "delta": 1e-5,
        "seed": 0,
    }
    params.update(kwargs)
    inner = FedAvg(
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1
    )
    return CentralDP(inner, **params)  # type: ignore[arg-type]


def one_round(
    strategy: CentralDP, grid: LocalGrid, arrays: ArrayRecord, server_round: int = 1
) -> tuple[ArrayRecord, int]:
    """Run one round; return the new arrays and how many clients were sampled."""
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    new, _ = strategy.aggregate_train(server_round, replies)
    assert new is not None
    return new, len(messages)


def delta_of(new: ArrayRecord, old: ArrayRecord) -> np.ndarray:
    """The flattened change from ``old`` to ``new``."""
    return np.concatenate([(new[k].numpy() - old[k].numpy()).ravel() for k in old])


class DPTools:
    """The helpers above, handed to tests as a fixture (tests cannot import conftest)."""

    update_grid = staticmethod(update_grid)
    central = staticmethod(central)
    one_round = staticmethod(one_round)
    delta_of = staticmethod(delta_of)


@pytest.fixture
def dp() -> DPTools:
    """Helpers to drive CentralDP over a real LocalGrid."""
    return DPTools()


@pytest.fixture
def weights() -> ArrayRecord:
    """A 10,000-parameter model: enough draws per round for tight noise statistics."""
    return ArrayRecord({"w": torch.zeros(100, 100), "b": torch.ones(10)})
