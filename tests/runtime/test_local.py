"""The ``local`` runtime: deterministic, in-process, and robust to bad clients."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedge.app import RunResult, build_client_app, build_server_app
from fedge.app.config import RunConfig
from fedge.runtime import LocalGrid, run_local
from fedge.simulation import simulate


def _metrics(result: RunResult) -> list[tuple[float, float]]:
    return [(r.accuracy, r.loss) for r in result.rounds]


def test_same_seed_gives_identical_metrics(tiny_config: RunConfig) -> None:
    first = simulate(tiny_config)
    second = simulate(tiny_config)
    assert _metrics(first) == _metrics(second)
    assert first.final_accuracy > 0.5  # it learned something on 8x8 digits


def test_another_seed_gives_another_run(tiny_config: RunConfig) -> None:
    a = simulate(tiny_config)
    b = simulate(tiny_config.replace(seed=1))
    assert _metrics(a) != _metrics(b)


def test_fraction_samples_a_subset_of_clients(tiny_config: RunConfig) -> None:
    result = simulate(tiny_config.replace(clients=8, fraction=0.25))
    assert [r.sampled for r in result.rounds] == [2, 2]


def _poisoning_client(honest: ClientApp, poison: str) -> ClientApp:
    """Node 1 sends a poisoned update; the others are honest."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        if context.node_config["partition-id"] != 0:
            return reply
        if poison == "raise":
            raise RuntimeError("sensor offline")
        arrays = reply.content.array_records["arrays"]
        first = next(iter(arrays))
        values = arrays[first].numpy().copy()
        if poison == "nan":
            values[...] = np.nan
        elif poison == "shape":
            values = values.reshape(-1)[:-1]
        arrays[first] = Array(values)
        return reply

    return app


@pytest.mark.parametrize(
    ("poison", "reason"),
    [("nan", "NaN or Inf"), ("shape", "has shape"), ("raise", "sensor offline")],
)
def test_a_bad_client_is_dropped_and_the_round_goes_on(
    tiny_config: RunConfig, poison: str, reason: str
) -> None:
    results: list[RunResult] = []
    server = build_server_app(tiny_config, results=results)
    client = _poisoning_client(build_client_app(tiny_config), poison)
    run_local(server, client, num_nodes=tiny_config.clients)
    (result,) = results
    for record in result.rounds:
        assert record.aggregated == tiny_config.clients - 1
        assert len(record.dropped) == 1
        assert record.dropped[0]["node_id"] == 1
        assert reason in record.dropped[0]["reason"]
        assert np.isfinite(record.loss)
    assert result.final_accuracy > 0.5
    assert result.to_dict()["dropped"][0]["round"] == 1


def test_grid_lists_nodes_and_refuses_unknown_destinations(tiny_config: RunConfig) -> None:
    grid = LocalGrid(build_client_app(tiny_config), num_nodes=3)
    assert list(grid.get_node_ids()) == [1, 2, 3]
    msg = grid.create_message(RecordDict({"arrays": ArrayRecord()}), "train", 9, "1")
    with pytest.raises(ValueError, match="unknown node 9"):
        grid.push_messages([msg])
