"""Resuming a run from a checkpoint continues it exactly as if it had not been interrupted.

A run is "killed" after round 2 (its round callback raises, after the checkpoint is written),
then resumed from that checkpoint on a fresh grid, as the coordinator does after a restart. The
resumed run must end with the same weights and per-round metrics as an uninterrupted run of the
same seed, and its ``results.json`` must hold every round.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedge.app import RunResult, build_client_app
from fedge.app.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedge.app.config import RunConfig
from fedge.app.results import RoundRecord
from fedge.app.resume import StrategyStateError, capture_strategy, restore_strategy
from fedge.app.server import run_federation
from fedge.app.strategies import build_strategy
from fedge.runtime.local import LocalGrid, set_server_identity

ROUNDS = 4
KILLED_AFTER = 2


class _KilledError(Exception):
    """Stands for the process dying right after a round's checkpoint was written."""


def _run(
    config: RunConfig, out: Path, *, start_from: Checkpoint | None = None, kill_after: int = 0
) -> RunResult:
    grid = LocalGrid(build_client_app(config), num_nodes=config.clients, workers=1)
    set_server_identity(grid.run.run_id)

    def on_round(record: RoundRecord) -> None:
        if record.round == kill_after:
            raise _KilledError

    return run_federation(grid, config, out_dir=out, on_round=on_round, start_from=start_from)


def _killed_run(config: RunConfig, out: Path) -> Checkpoint:
    with pytest.raises(_KilledError):
        _run(config, out, kill_after=KILLED_AFTER)
    assert not (out / "results.json").exists()
    return load_checkpoint(out / "checkpoints" / f"round-{KILLED_AFTER:04d}.pt")


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "model.pt").state_dict


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _metrics(rounds: list[dict[str, Any]]) -> list[float]:
    keys = ("round", "accuracy", "loss", "train_loss", "sampled", "aggregated", "epsilon")
    return [float(v) for r in rounds for v in (r.get(k, -1.0) for k in keys) if v is not None]


CONFIGS = {
    # FedAdam's moments (m_t, v_t) live in the strategy; half the clients are sampled each
    # round with Python's random, so the sampler's state matters too.
    "fedadam": {"strategy": "fedadam", "server_lr": 0.05, "fraction": 0.5, "min_clients": 2},
    # Central DP around FedAdam: the accountant's history, the Poisson sampler and the noise
    # generator must all continue, or ε would restart from zero after a resume.
    "fedadam-central-dp": {
        "strategy": "fedadam",
        "server_lr": 0.05,
        "fraction": 0.75,
        "dp_noise": 0.5,
        "dp_clip": 5.0,
        "dp_seed": 7,
    },
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest, tiny_config: RunConfig) -> RunConfig:
    return tiny_config.replace(rounds=ROUNDS, **CONFIGS[request.param])


def test_resumed_run_equals_the_uninterrupted_run(config: RunConfig, tmp_path: Path) -> None:
    full = _run(config, tmp_path / "full")
    checkpoint = _killed_run(config, tmp_path / "resumed")
    resumed = _run(config, tmp_path / "resumed", start_from=checkpoint)

    assert _max_difference(_weights(tmp_path / "full"), _weights(tmp_path / "resumed")) < 1e-5
    full_rounds = [r.to_dict() for r in full.rounds]
    resumed_rounds = [r.to_dict() for r in resumed.rounds]
    assert _metrics(resumed_rounds) == pytest.approx(_metrics(full_rounds))
    # results.json holds every round of the run, those before the restart too.
    written = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert [r["round"] for r in written["rounds"]] == list(range(1, ROUNDS + 1))
    assert _metrics(written["rounds"]) == pytest.approx(_metrics(full_rounds))
    assert written["final"]["rounds_completed"] == ROUNDS
    assert written["timing"]["total_s"] >= checkpoint.elapsed_seconds > 0


def test_without_the_strategy_state_the_resume_diverges(
    tmp_path: Path, tiny_config: RunConfig
) -> None:
    # The counterpart of the test above: a model-only checkpoint (format 1) restarts FedAdam's
    # moments from zero, and the run ends elsewhere. So the state above is what makes it exact.
    config = tiny_config.replace(rounds=ROUNDS, **CONFIGS["fedadam"])
    _run(config, tmp_path / "full")
    checkpoint = _killed_run(config, tmp_path / "resumed")
    model_only = dataclasses.replace(checkpoint, strategy_state=None)
    _run(config, tmp_path / "resumed", start_from=model_only)
    assert _max_difference(_weights(tmp_path / "full"), _weights(tmp_path / "resumed")) > 1e-3


def test_checkpoint_round_trips_the_strategy_state(tmp_path: Path, tiny_config: RunConfig) -> None:
    config = tiny_config.replace(strategy="fedadam")
    strategy = build_strategy(config)
    rng = np.random.default_rng(0)
    moments = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    strategy.m_t = moments  # type: ignore[attr-defined]
    strategy.v_t = {k: v**2 for k, v in moments.items()}  # type: ignore[attr-defined]
    checkpoint = Checkpoint(
        model=config.model,
        input_shape=(1, 8, 8),
        num_classes=10,
        dataset=config.dataset,
        server_round=3,
        state_dict={"w": torch.zeros(2)},
        config=config.to_dict(),
        strategy_state=capture_strategy(strategy),
    )
    save_checkpoint(tmp_path / "c.pt", checkpoint)
    fresh = build_strategy(config)
    restore_strategy(fresh, load_checkpoint(tmp_path / "c.pt").strategy_state or {})
    for key, value in moments.items():
        np.testing.assert_array_equal(fresh.m_t[key], value)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(fresh.v_t[key], value**2)  # type: ignore[attr-defined]


def test_state_of_another_strategy_is_refused(tiny_config: RunConfig) -> None:
    state = capture_strategy(build_strategy(tiny_config.replace(strategy="fedadam")))
    with pytest.raises(StrategyStateError, match=r"FedAdam.*FedAvg"):
        restore_strategy(build_strategy(tiny_config), state)


def test_a_model_only_checkpoint_still_loads(tmp_path: Path) -> None:
    # Checkpoints written before the strategy state was saved (format version 1).
    payload = {
        "format": "fedge-checkpoint",
        "format_version": 1,
        "model": "mlp",
        "input_shape": [64],
        "num_classes": 10,
        "dataset": "digits",
        "server_round": 2,
        "state_dict": {"w": torch.ones(2)},
        "config": {"seed": 0},
    }
    torch.save(payload, tmp_path / "old.pt")
    checkpoint = load_checkpoint(tmp_path / "old.pt")
    assert checkpoint.server_round == 2 and checkpoint.strategy_state is None
    assert checkpoint.rounds == [] and checkpoint.elapsed_seconds == 0.0
