"""Federated vs each machine alone vs pooled anomaly detection: a markdown table.

Run from anywhere: ``python examples/factory/compare.py`` (about a minute on two cores). Every
row is the mean over the same seeds of the flags on the same labelled test windows (the
readings after the normal training series):

- *federated*: FedAvg over the three machines (``--partition by:machine``), as ``fedge
  simulate`` runs it; the threshold is the task's rule (three standard deviations above the
  mean log error) over the machines' normal training windows;
- *local-only*: each machine trains the same autoencoder alone with the same schedule and sets
  its threshold by the same rule on its own windows; the row is the mean of the three, each
  one is listed too;
- *pooled*: one client holding every machine's windows, the same rule over them.

Each row also gives the F1 of every seed (a local-only row: its seed's mean over machines).
"""

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.app.config import RunConfig
from fedge.app.metrics import anomaly_metrics, anomaly_threshold
from fedge.app.training import LocalTraining, reconstruction_errors, set_seed, train
from fedge.data import get_dataset
from fedge.simulation import simulate
from fedge.tasks import load_task

__all__ = ["METRICS", "OPTIONS", "Row", "compare", "markdown"]

TASK = f"{Path(__file__).resolve().parent / 'task.py'}:TASK"
#: The run's options, as ``fedge simulate`` flags (the same as run.toml).
OPTIONS: dict[str, Any] = {
    "rounds": 20,
    "local_epochs": 10,
    "lr": 0.02,
    "batch_size": 16,
    "momentum": 0.9,
}
MACHINES = 3
METRICS = ("f1", "precision", "recall", "roc_auc")


@dataclass
class Row:
    """One line of the table: each metric's mean over seeds, and the F1 of each seed."""

    setting: str
    metrics: dict[str, float]
    f1_per_seed: list[float]


def compare(seeds: Sequence[int] = (0, 1, 2), rounds: int | None = None) -> list[Row]:
    """The table's rows: federated, local-only (mean, then each machine), pooled."""
    options = {**OPTIONS, **({"rounds": rounds} if rounds else {})}
    with tempfile.TemporaryDirectory() as ledgers:
        root = Path(ledgers)
        federated = [_simulate(root, seed, options, clients=MACHINES) for seed in seeds]
        pooled = [_simulate(root, seed, options, clients=1) for seed in seeds]
    alone = _local_only(seeds, options)
    per_seed = [_mean(runs) for runs in zip(*alone.values(), strict=True)]
    rows = [_row("federated (FedAvg, 3 machines)", federated)]
    rows.append(_row("local-only (mean of 3)", per_seed))
    rows += [_row(f"  local-only: {name}", runs) for name, runs in alone.items()]
    rows.append(_row("pooled (1 client, all windows)", pooled))
    return rows


def markdown(rows: Sequence[Row], seeds: Sequence[int]) -> str:
    """The rows as a markdown table."""
    lines = [
        f"| setting (mean of {len(seeds)} seeds) | F1 | precision | recall | ROC-AUC "
        f"| F1 of seeds {', '.join(map(str, seeds))} |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = " | ".join(f"{row.metrics[m]:.3f}" for m in METRICS)
        spread = ", ".join(f"{f1:.2f}" for f1 in row.f1_per_seed)
        lines.append(f"| {row.setting} | {cells} | {spread} |")
    return "\n".join(lines)


def _mean(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.mean(run[m] for run in runs) for m in METRICS}


def _row(setting: str, runs: Sequence[dict[str, float]]) -> Row:
    return Row(setting, _mean(runs), [run["f1"] for run in runs])


def _simulate(root: Path, seed: int, options: dict[str, Any], *, clients: int) -> dict[str, float]:
    values = {
        "task": TASK,
        "clients": clients,
        "partition": "by:machine" if clients > 1 else "iid",
        "seed": seed,
        "release": False,
        **options,
    }
    result = simulate(RunConfig.from_mapping(values), device_state_root=root)
    return {m: float(result.rounds[-1].extra[m]) for m in METRICS}


def _local_only(seeds: Sequence[int], options: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Each machine alone: the autoencoder trained on its own windows with the same schedule
    as a one-client FedAvg run, its threshold the task's rule over its own windows, judged on
    the shared test windows."""
    ref = load_task(TASK)
    dataset = get_dataset(ref.dataset)
    assert dataset.groups_train is not None
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    rule = ref.task.threshold_rule
    local = LocalTraining(
        epochs=options["local_epochs"],
        batch_size=options["batch_size"],
        lr=options["lr"],
        momentum=options["momentum"],
    )
    runs: dict[str, list[dict[str, float]]] = {}
    for machine in np.unique(dataset.groups_train):
        mine = dataset.groups_train == machine
        x, y = torch.from_numpy(dataset.x_train[mine]), torch.from_numpy(dataset.y_train[mine])
        runs[str(machine)] = []
        for seed in seeds:
            set_seed(seed)
            model = ref.task.model(input_shape=dataset.input_shape, num_classes=2)
            for round_ in range(options["rounds"]):
                train(
                    model,
                    x,
                    y,
                    local=local,
                    seed=seed * 1000 + round_,
                    kind="anomaly",
                )
            threshold = anomaly_threshold(model, x.numpy(), y.numpy(), rule, split="training")
            found = anomaly_metrics(reconstruction_errors(model, x_test), y_test, threshold)
            runs[str(machine)].append({m: found[m] for m in METRICS})
    return runs


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="override the rounds")
    args = parser.parse_args()
    # A 421-parameter autoencoder gains nothing from more threads; on a busy machine they wait.
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    print(markdown(compare(seeds, args.rounds), seeds))


if __name__ == "__main__":
    main()
