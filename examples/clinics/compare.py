"""Federated vs each hospital alone vs pooled, and federated under central DP: a markdown table.

Run from anywhere: ``python examples/clinics/compare.py`` (about a minute on two cores). Every
row is the mean over the same seeds, measured on the same held-out test rows (20 % of each
hospital's patients, never trained on):

- *federated*: FedAvg over the four hospitals (``--partition by:dataset``), as ``fedge
  simulate`` runs it;
- *local-only*: each hospital trains the same model alone with the same schedule (rounds x
  local epochs); the row is the mean of the four, each one is listed too;
- *pooled*: one client holding every hospital's training rows (what a central data lake gives);
- *federated + central DP*: client-level central DP (clip each hospital's update, add Gaussian
  noise once; every hospital takes part in every round, sampling rate q = 1), with its epsilon.
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
from fedge.app.metrics import roc_auc
from fedge.app.training import LocalTraining, evaluate, set_seed, train
from fedge.data import get_dataset
from fedge.simulation import simulate
from fedge.tasks import load_task

__all__ = ["DP_LEVELS", "OPTIONS", "Row", "compare", "markdown"]

TASK = f"{Path(__file__).resolve().parent / 'task.py'}:TASK"
#: The run's options, as ``fedge simulate`` flags (see README.md).
OPTIONS: dict[str, Any] = {
    "rounds": 10,
    "local_epochs": 5,
    "lr": 0.05,
    "batch_size": 32,
    "momentum": 0.9,
}
#: Central DP settings compared: (noise multiplier z, clip norm C).
DP_LEVELS = ((1.0, 0.3), (2.0, 0.3))
HOSPITALS = 4
#: One run's test accuracy, ROC-AUC and epsilon (None without DP).
Run = tuple[float, float, float | None]


@dataclass
class Row:
    """One line of the table: mean accuracy and ROC-AUC over seeds, and the run's epsilon."""

    setting: str
    accuracy: float
    roc_auc: float
    epsilon: float | None = None
    detail: str = ""
    per_seed: list[float] = field(default_factory=list)


def compare(seeds: Sequence[int] = (0, 1, 2), rounds: int | None = None) -> list[Row]:
    """The table's rows: federated, local-only (mean, then each hospital), pooled, DP."""
    options = {**OPTIONS, **({"rounds": rounds} if rounds else {})}
    with tempfile.TemporaryDirectory() as ledgers:
        root = Path(ledgers)
        federated = [_simulate(root, seed, options, clients=HOSPITALS) for seed in seeds]
        pooled = [_simulate(root, seed, options, clients=1) for seed in seeds]
        private = {
            level: [_simulate(root, s, options, clients=HOSPITALS, dp=level) for s in seeds]
            for level in DP_LEVELS
        }
    alone = _local_only(seeds, options)
    rows = [_row("federated (FedAvg, 4 hospitals)", federated)]
    per_seed = list(zip(*alone.values(), strict=True))  # each seed: the 4 hospitals' runs
    means = [statistics.mean(acc for acc, _, _ in runs) for runs in per_seed]
    aucs = [statistics.mean(auc for _, auc, _ in runs) for runs in per_seed]
    rows.append(
        Row("local-only (mean of 4)", statistics.mean(means), statistics.mean(aucs), per_seed=means)
    )
    for hospital, runs in alone.items():
        rows.append(_row(f"  local-only: {hospital}", runs))
    rows.append(_row("pooled (1 client, all rows)", pooled))
    for (noise, clip), runs in private.items():
        rows.append(_row(f"federated + central DP (z={noise}, C={clip})", runs))
    return rows


def markdown(rows: Sequence[Row], seeds: Sequence[int]) -> str:
    """The rows as a markdown table."""
    lines = [
        f"| setting | accuracy (mean of {len(seeds)} seeds) | ROC-AUC | epsilon (delta 1e-5) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        eps = f"{row.epsilon:.1f}" if row.epsilon is not None else "-"
        lines.append(f"| {row.setting} | {row.accuracy:.3f} | {row.roc_auc:.3f} | {eps} |")
    return "\n".join(lines)


def _simulate(
    root: Path,
    seed: int,
    options: dict[str, Any],
    *,
    clients: int,
    dp: tuple[float, float] | None = None,
) -> Run:
    partition = "by:dataset" if clients > 1 else "iid"
    values = {
        "task": TASK,
        "clients": clients,
        "partition": partition,
        "seed": seed,
        "release": False,
        **options,
    }
    if dp is not None:
        # Seeded noise makes the table reproducible; a real run leaves --dp-seed unset.
        values.update({"dp_noise": dp[0], "dp_clip": dp[1], "dp_seed": seed})
    result = simulate(RunConfig.from_mapping(values), device_state_root=root)
    extra = result.rounds[-1].extra
    return result.final_accuracy, float(extra["roc_auc"]), extra.get("epsilon")


def _local_only(seeds: Sequence[int], options: dict[str, Any]) -> dict[str, list[Run]]:
    """Each hospital alone: the task's model on its own training rows, the same schedule as a
    one-client FedAvg run (a fresh optimiser every round), judged on the shared test rows."""
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
    runs: dict[str, list[Run]] = {}
    for hospital in np.unique(dataset.groups_train):
        mine = dataset.groups_train == hospital
        x, y = torch.from_numpy(dataset.x_train[mine]), torch.from_numpy(dataset.y_train[mine])
        runs[str(hospital)] = []
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
                )
            accuracy = evaluate(model, x_test, y_test).accuracy
            runs[str(hospital)].append((accuracy, roc_auc(model, x_test, y_test), None))
    return runs


def _aucs(runs: Sequence[Run]) -> list[float]:
    return [auc for _, auc, _ in runs]


def _row(setting: str, runs: Sequence[Run]) -> Row:
    eps = runs[0][2]
    return Row(
        setting,
        statistics.mean(acc for acc, _, _ in runs),
        statistics.mean(_aucs(runs)),
        epsilon=float(eps) if eps is not None else None,
        per_seed=[acc for acc, _, _ in runs],
    )


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="override the rounds")
    args = parser.parse_args()
    # A logistic regression gains nothing from more threads; on a busy machine they only wait.
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    print(markdown(compare(seeds, args.rounds), seeds))


if __name__ == "__main__":
    main()
