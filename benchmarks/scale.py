"""Cross-device scale: 100,000 devices in 4 GiB, and many clients per kernel against Flower.

(a) Synthetic(1,1) with 100,000 devices, 100 sampled per round, 20 rounds, on ``local``: peak
RSS of the whole run (a fresh process; bar <= 4 GiB) and the accuracy curve of the batched path
against the sequential path for the same seed (bar: every round within 0.5 points).

(b) 100 devices, 10% sampled, the small CNN on MNIST-5k: client-rounds per second of fedge
(batched, ``--batch-clients on``) and of fedge sequential against a plain Flower app on Flower's
Ray engine (benchmarks/simulation.py's), in the same run (bar: fedge >= 10x Flower, at no lower
accuracy than Flower's minus 1 point).

Prints one summary line and exits 1 when a bar is missed.

    python benchmarks/scale.py [--rounds 20] [--flower-rounds 5] [--skip-flower]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks.simulation import run_fedge, run_plain_flower
from fedge.app.config import RunConfig

MEMORY_BAR_GIB = 4.0
CURVE_BAR_POINTS = 0.5
SPEED_BAR = 10.0

_CHILD = """
import json, sys, time
from fedge.app.config import RunConfig
from fedge.simulation import simulate
config = RunConfig.from_mapping(json.loads(sys.argv[1]))
started = time.perf_counter()
result = simulate(config)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "accuracy": [r.accuracy for r in result.rounds],
                  "sampled": [r.sampled for r in result.rounds],
                  "training": result.notes["client_training"]}))
"""


def population_run(options: dict[str, object]) -> tuple[dict[str, object], float]:
    """A run in a fresh process: its report and its peak RSS in GiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(options)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:  # ru_maxrss of children is the largest child so far
        print("note: this child's peak was below an earlier child's", file=sys.stderr)
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, peak_kib / 2**20


def part_a(rounds: int) -> tuple[str, bool]:
    """100,000 Synthetic(1,1) devices: peak memory and batched-vs-sequential curves."""
    options: dict[str, object] = {
        "dataset": "synthetic:1,1",
        "clients": 100_000,
        "fraction": 0.001,
        "rounds": rounds,
        "lr": 0.01,
        "release": False,
    }
    batched, peak = population_run({**options, "batch_clients": "on"})
    sequential, peak_sequential = population_run({**options, "batch_clients": "off"})
    curve_b, curve_s = batched["accuracy"], sequential["accuracy"]
    assert isinstance(curve_b, list) and isinstance(curve_s, list)
    gap = max(abs(a - b) for a, b in zip(curve_b, curve_s, strict=True)) * 100
    peak = max(peak, peak_sequential)
    for name, report in (("batched", batched), ("sequential", sequential)):
        accuracy = report["accuracy"]
        assert isinstance(accuracy, list)
        print(f"100k {name:<10} {report['seconds']:7.1f}s  accuracy by round:", end="")
        print(" ".join(f"{a:.4f}" for a in accuracy))
    ok = peak <= MEMORY_BAR_GIB and gap <= CURVE_BAR_POINTS
    line = (
        f"100k devices x {rounds} rounds: peak RSS {peak:.2f} GiB (bar {MEMORY_BAR_GIB:.0f}), "
        f"batched vs sequential curve gap {gap:.2f} pts (bar {CURVE_BAR_POINTS}), "
        f"{batched['seconds']:.0f}s batched, {sequential['seconds']:.0f}s sequential"
    )
    return line, ok


def part_b(rounds: int, skip_flower: bool) -> tuple[str, bool]:
    """100 devices, 10% sampled, cnn-small on MNIST-5k: fedge against plain Flower on Ray."""
    config = RunConfig(
        dataset="mnist-5k",
        model="cnn-small",
        clients=100,
        fraction=0.1,
        rounds=rounds,
        release=False,
    )
    client_rounds = 10 * rounds
    rows = {
        "fedge batched": run_fedge(config.replace(batch_clients="on")),
        "fedge sequential": run_fedge(config.replace(batch_clients="off")),
    }
    if not skip_flower:
        rows["plain Flower (Ray)"] = run_plain_flower(config)
    print(f"{'100 devices, 10%':<20}{'seconds':>9}{'client-rounds/s':>17}{'accuracy':>10}")
    for name, (seconds, accuracy) in rows.items():
        print(f"{name:<20}{seconds:>9.1f}{client_rounds / seconds:>17.2f}{accuracy:>10.4f}")
    batched_s, batched_acc = rows["fedge batched"]
    sequential_s, _ = rows["fedge sequential"]
    line = f"batched {sequential_s / batched_s:.2f}x sequential"
    if skip_flower:
        return line, True
    flower_s, flower_acc = rows["plain Flower (Ray)"]
    speedup = flower_s / batched_s
    ok = speedup >= SPEED_BAR and batched_acc >= flower_acc - 0.01
    line = (
        f"fedge batched {speedup:.2f}x plain Flower on Ray (bar {SPEED_BAR:.0f}x; accuracy "
        f"{batched_acc:.4f} vs {flower_acc:.4f}), fedge sequential "
        f"{flower_s / sequential_s:.2f}x, {line}"
    )
    return line, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--flower-rounds", type=int, default=5)
    parser.add_argument("--skip-flower", action="store_true")
    parser.add_argument("--skip-population", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    lines, ok = [], True
    if not args.skip_population:
        line, passed = part_a(args.rounds)
        lines.append(line)
        ok &= passed
    line, passed = part_b(args.flower_rounds, args.skip_flower)
    lines.append(line)
    ok &= passed
    verdict = "PASS" if ok else "BELOW A BAR"
    print(f"scale ({time.perf_counter() - started:.0f}s): {'; '.join(lines)} -> {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
