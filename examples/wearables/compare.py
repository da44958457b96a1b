"""Federated vs each wearer alone vs pooled on BasicMotions: a markdown table.

Run from anywhere: ``python examples/wearables/compare.py`` (under a minute on two cores).
Every row is the mean over the same seeds, measured on BasicMotions' 40 test recordings:

- *federated*: FedAvg over the four wearers (``--partition by:wearer``), as ``fedge simulate``
  runs it;
- *local-only*: each wearer trains the same model alone with the same schedule (rounds x
  local epochs); the row is the mean of the four, each one is listed too;
- *pooled*: one client holding every wearer's recordings.
"""

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.app.config import RunConfig
from fedge.app.training import LocalTraining, evaluate, set_seed, train
from fedge.data import get_dataset
from fedge.simulation import simulate
from fedge.tasks import load_task

__all__ = ["OPTIONS", "Row", "compare", "markdown"]

TASK = f"{Path(__file__).resolve().parent / 'task.py'}:TASK"
#: The run's options, as ``fedge simulate`` flags (the same as run.toml).
OPTIONS: dict[str, Any] = {
    "rounds": 20,
    "local_epochs": 5,
    "lr": 0.05,
    "batch_size": 8,
    "momentum": 0.9,
}
WEARERS = 4


@dataclass
class Row:
    """One line of the table: the mean test accuracy over seeds, and each seed's."""

    setting: str
    accuracy: float
    per_seed: list[float] = field(default_factory=list)


def compare(seeds: Sequence[int] = (0, 1, 2), rounds: int | None = None) -> list[Row]:
    """The table's rows: federated, local-only (mean, then each wearer), pooled."""
    options = {**OPTIONS, **({"rounds": rounds} if rounds else {})}
    with tempfile.TemporaryDirectory() as ledgers:
        root = Path(ledgers)
        federated = [_simulate(root, seed, options, clients=WEARERS) for seed in seeds]
        pooled = [_simulate(root, seed, options, clients=1) for seed in seeds]
    alone = _local_only(seeds, options)
    means = [statistics.mean(accs) for accs in zip(*alone.values(), strict=True)]
    rows = [
        Row("federated (FedAvg, 4 wearers)", statistics.mean(federated), federated),
        Row("local-only (mean of 4)", statistics.mean(means), means),
    ]
    rows += [Row(f"  local-only: {w}", statistics.mean(a), a) for w, a in alone.items()]
    rows.append(Row("pooled (1 client, all recordings)", statistics.mean(pooled), pooled))
    return rows


def markdown(rows: Sequence[Row], seeds: Sequence[int]) -> str:
    """The rows as a markdown table."""
    lines = [f"| setting | test accuracy (mean of {len(seeds)} seeds) |", "|---|---|"]
    lines += [f"| {row.setting} | {row.accuracy:.3f} |" for row in rows]
    return "\n".join(lines)


def _simulate(root: Path, seed: int, options: dict[str, Any], *, clients: int) -> float:
    values = {
        "task": TASK,
        "clients": clients,
        "partition": "by:wearer" if clients > 1 else "iid",
        "seed": seed,
        "release": False,
        **options,
    }
    return simulate(RunConfig.from_mapping(values), device_state_root=root).final_accuracy


def _local_only(seeds: Sequence[int], options: dict[str, Any]) -> dict[str, list[float]]:
    """Each wearer alone: the task's model on its own recordings, the same schedule as a
    one-client FedAvg run (a fresh optimiser every round), judged on the test recordings."""
    ref = load_task(TASK)
    dataset = get_dataset(ref.dataset)
    assert dataset.groups_train is not None
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    local = LocalTraining(
        epochs=options["local_epochs"],
        batch_size=options["batch_size"],
        lr=options["lr"],
        momentum=options["momentum"],
    )
    runs: dict[str, list[float]] = {}
    for wearer in np.unique(dataset.groups_train):
        mine = dataset.groups_train == wearer
        x, y = torch.from_numpy(dataset.x_train[mine]), torch.from_numpy(dataset.y_train[mine])
        runs[str(wearer)] = []
        for seed in seeds:
            set_seed(seed)
            model = ref.task.model(input_shape=dataset.input_shape, num_classes=dataset.num_classes)
            for round_ in range(options["rounds"]):
                train(
                    model,
                    x,
                    y,
                    local=local,
                    seed=seed * 1000 + round_,
                )
            runs[str(wearer)].append(evaluate(model, x_test, y_test).accuracy)
    return runs


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="override the rounds")
    args = parser.parse_args()
    # A 3 k-parameter CNN gains nothing from more threads; on a busy machine they only wait.
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    print(markdown(compare(seeds, args.rounds), seeds))


if __name__ == "__main__":
    main()
