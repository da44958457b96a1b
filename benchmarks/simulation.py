"""Simulation throughput: fedge ``local`` and ``ray`` against a plain Flower app, same workload.

The plain Flower app is written the way Flower's PyTorch quickstart writes it: flwr-datasets
partitions, torchvision transforms, a ``DataLoader``, a new model per message, ``Strategy.start``
with a central ``evaluate_fn``, run by ``run_simulation`` on Ray. All three train the same model
on the same data, partition, rounds, local epochs, batch size and learning rate. fedge ``local``
runs three times: in full precision, with ``precision="bf16"`` (bfloat16 autocast, fp32 weights)
and with its clients trained together (``batch_clients="on"``, :mod:`fedge.app.batched`).
Libraries are imported before any timing starts, for every peer alike.

It also runs 1,000 clients (fraction 0.1, 5 rounds) on ``local`` in a subprocess and reports
its peak memory against the 4 GiB limit. Exits 1 when a bar is missed: fedge ``local`` (fp32
or bf16) >= 3x plain Flower within 1 accuracy point, fedge ``ray`` >= 0.9x, memory <= 4 GiB.

    python benchmarks/simulation.py [--rounds 5] [--clients 10]
"""

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

# Imported up front so that no peer's timed region pays a library's first import.
import datasets
import flwr_datasets.partitioner  # noqa: F401
import numpy as np
import torch

from fedge.app.config import RunConfig
from fedge.simulation import simulate

MEMORY_LIMIT_GIB = 4.0
# fedge local (fp32 or bf16) at least this many times plain Flower, within this many points.
BAR_LOCAL_X = 3.0
BAR_ACCURACY_POINTS = 1.0
# fedge ray no more than 10% slower than plain Flower (it runs on the same engine).
BAR_RAY_X = 0.9


def run_fedge(config: RunConfig) -> tuple[float, float]:
    """Wall time and final accuracy of a fedge simulation."""
    started = time.perf_counter()
    result = simulate(config)
    return time.perf_counter() - started, result.final_accuracy


def run_plain_flower(
    config: RunConfig, evaluated_at: list[float] | None = None
) -> tuple[float, float]:
    """Wall time and final accuracy of the same workload as a plain Flower app.

    ``evaluated_at`` gets the ``perf_counter`` time of each central evaluation (round 0 first).
    """
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    from flwr_datasets.partitioner import IidPartitioner
    from torch.utils.data import DataLoader, TensorDataset
    from torchvision.transforms import Compose, Normalize, ToTensor

    from fedge.data import get_dataset
    from fedge.models import get_model

    ds = get_dataset(config.dataset)
    # Raw 0..255 images, as a Flower app reads them from a hub dataset.
    raw = np.clip(np.round((ds.x_train[:, 0] * 0.3081 + 0.1307) * 255), 0, 255).astype(np.uint8)
    table = datasets.Dataset.from_dict({"image": list(raw), "label": ds.y_train.tolist()})
    # Shuffled with the run's seed before the IID split, as FederatedDataset does by default
    # and as fedge's iid partition does: each partition id then holds the same samples.
    table = table.shuffle(seed=config.seed)
    transform = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])

    def apply_transforms(batch: dict[str, Any]) -> dict[str, Any]:
        batch["image"] = [transform(np.asarray(img, dtype=np.uint8)) for img in batch["image"]]
        return batch

    def new_model() -> torch.nn.Module:
        return get_model(config.model, input_shape=ds.input_shape, num_classes=ds.num_classes)

    client_app = ClientApp()
    partitioners: dict[int, IidPartitioner] = {}

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        num = int(context.node_config["num-partitions"])
        if num not in partitioners:
            partitioners[num] = IidPartitioner(num_partitions=num)
            partitioners[num].dataset = table
        part = partitioners[num].load_partition(int(context.node_config["partition-id"]))
        # Seeded shuffles, so its accuracy is as repeatable as fedge's (same seed formula).
        server_round = msg.content.config_records["config"]["server-round"]
        assert isinstance(server_round, int)
        partition_id = int(context.node_config["partition-id"])
        seed = (config.seed * 1_000_003 + server_round * 10_007 + partition_id) % 2**63
        loader = DataLoader(
            part.with_transform(apply_transforms),
            batch_size=config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        model = new_model()
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        model.train()
        for _ in range(config.local_epochs):
            for batch in loader:
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
                loss.backward()
                optimizer.step()
        metrics = MetricRecord({"num-examples": len(part)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    test_loader = DataLoader(
        TensorDataset(torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)), batch_size=500
    )
    accuracies: list[float] = []

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = new_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x).argmax(1) == y).sum())
        accuracies.append(correct / len(ds.y_test))
        if evaluated_at is not None:
            evaluated_at.append(time.perf_counter())
        return MetricRecord({"accuracy": accuracies[-1]})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(config.seed)
        strategy = FedAvg(fraction_train=config.fraction, fraction_evaluate=0.0)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(new_model().state_dict()),
            num_rounds=config.rounds,
            train_config=ConfigRecord({"lr": config.lr}),
            evaluate_fn=central_evaluate,
        )

    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=config.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        },
    )
    return time.perf_counter() - started, accuracies[-1]


def peak_memory_1000_clients() -> tuple[float, float]:
    """Peak RSS (GiB) and final accuracy of 1,000 clients on ``local``, in a fresh process."""
    code = (
        "import json, logging, sys\n"
        "from fedge.app.config import RunConfig\n"
        "from fedge.simulation import simulate\n"
        "r = simulate(RunConfig(clients=1000, fraction=0.1, rounds=5))\n"
        "print(json.dumps({'accuracy': r.final_accuracy}))\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800
    )
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:
        raise RuntimeError("could not measure the child's peak memory")
    accuracy = json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"]
    return peak_kib / 2**20, accuracy


def main() -> int:
    """Run every peer, print the table and the summary; exit 1 when a bar is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    config = RunConfig(rounds=args.rounds, clients=args.clients)
    client_rounds = config.clients * config.rounds
    rows = {
        "fedge local": run_fedge(config),
        "fedge local bf16": run_fedge(config.replace(precision="bf16")),
        "fedge local batched": run_fedge(config.replace(batch_clients="on")),
        "fedge ray": run_fedge(config.replace(runtime="ray")),
        "plain Flower": run_plain_flower(config),
    }
    flower_s, flower_acc = rows["plain Flower"]
    print(f"{'runtime':<18}{'seconds':>9}{'client-rounds/s':>17}{'accuracy':>10}")
    for name, (seconds, accuracy) in rows.items():
        print(f"{name:<18}{seconds:>9.1f}{client_rounds / seconds:>17.2f}{accuracy:>10.4f}")

    def speedup(name: str) -> float:
        return flower_s / rows[name][0]

    def gap_points(name: str) -> float:
        return abs(rows[name][1] - flower_acc) * 100

    def versus_flower(name: str) -> str:
        return f"{name} {speedup(name):.2f}x plain Flower (accuracy gap {gap_points(name):.1f} pts)"

    local_ok = any(
        speedup(name) >= BAR_LOCAL_X and gap_points(name) <= BAR_ACCURACY_POINTS
        for name in ("fedge local", "fedge local bf16")
    )
    meets = local_ok and speedup("fedge ray") >= BAR_RAY_X
    summary = (
        f"simulation: {versus_flower('fedge local bf16')}, {versus_flower('fedge local')}, "
        f"{versus_flower('fedge local batched')} "
        f"(bar: either >= {BAR_LOCAL_X:g}x at <= {BAR_ACCURACY_POINTS:g} pt); fedge ray "
        f"{speedup('fedge ray'):.2f}x (bar >= {BAR_RAY_X:g}x)"
    )
    if not args.skip_memory:
        peak_gib, accuracy = peak_memory_1000_clients()
        meets &= peak_gib <= MEMORY_LIMIT_GIB
        summary += (
            f"; 1000 clients peak {peak_gib:.2f} GiB (limit {MEMORY_LIMIT_GIB:.0f} GiB, "
            f"{peak_gib / MEMORY_LIMIT_GIB:.2f} of it), accuracy {accuracy:.4f}"
        )
    print(f"{summary}: {'MEETS' if meets else 'MISSES'} the bar")
    return 0 if meets else 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
