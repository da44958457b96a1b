"""Privacy-utility table on mnist-5k, and fedge's ε against Flower's unamplified ε.

Rows: non-private baselines; central client-level DP with 1,000 clients at ε ≤ 1, 3, 8
(δ = 1e-5, Poisson sampling, z computed from the target); local record-level DP-SGD with 10
clients at ε ≤ 3 and 8 per device. Bars (issue 3): central ε ≤ 8 reaches ≥ 80% test accuracy,
local ε ≤ 8 reaches ≥ 88%, and for the central ε ≤ 3 schedule the ε fedge reports is at most a
third of what Flower's accountant reports for the same noise without amplification by sampling.

Run: ``.venv/bin/python benchmarks/privacy.py`` (several minutes on 2 cores).
"""

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fedge.app.config import RunConfig
from fedge.app.results import RoundRecord
from fedge.privacy.config import PrivacyConfig as DpConfig
from fedge.simulation import DEFAULT_DEVICE_STATE_ROOT, simulate

DELTA = 1e-5
CENTRAL_BAR = 0.80
LOCAL_BAR = 0.88
FLOWER_RATIO_BAR = 1 / 3


@dataclass
class Row:
    """One line of the table."""

    name: str
    clients: int
    epsilon: float | None
    noise: float | None
    accuracy: float
    rounds: int
    seconds: float


def _run(name: str, config: RunConfig, epsilon_key: str | None, root: Path | None = None) -> Row:
    started = time.perf_counter()
    result = simulate(
        config,
        on_round=_progress if VERBOSE else None,
        device_state_root=root or DEFAULT_DEVICE_STATE_ROOT,
    )
    last = result.rounds[-1].extra if result.rounds else {}
    epsilon = float(last[epsilon_key]) if epsilon_key and epsilon_key in last else None
    noise = None
    if config.privacy.dp_target_epsilon is not None:
        noise = config.privacy.noise_multiplier(fraction=config.fraction, rounds=config.rounds)
    row = Row(
        name,
        config.clients,
        epsilon,
        noise,
        result.final_accuracy,
        len(result.rounds),
        time.perf_counter() - started,
    )
    print(
        f"  {row.name:<24} clients {row.clients:>5}  eps {_fmt(row.epsilon):>7}  "
        f"z {_fmt(row.noise):>6}  acc {row.accuracy:.4f}  rounds {row.rounds}  "
        f"{row.seconds:6.1f}s",
        flush=True,
    )
    return row


VERBOSE = "--verbose" in sys.argv


def _progress(record: RoundRecord) -> None:
    print(f"    round {record.round}: acc {record.accuracy:.4f} {record.extra}", flush=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def central_config(args: argparse.Namespace, epsilon: float | None) -> RunConfig:
    """1,000 clients, Poisson rate q, z from the target ε (None: non-private, same schedule)."""
    return RunConfig(
        dataset="mnist-5k",
        model=args.central_model,
        clients=args.central_clients,
        rounds=args.central_rounds,
        fraction=args.q,
        local_epochs=args.central_epochs,
        batch_size=8,
        lr=args.central_lr,
        momentum=0.0,
        strategy="fedavg",
        privacy=DpConfig(
            dp_target_epsilon=epsilon,
            dp_clip=args.clip,
            dp_adaptive_clip=args.adaptive and epsilon is not None,
            dp_delta=DELTA,
            dp_seed=args.seed,
        ),
        seed=args.seed,
    )


def local_config(args: argparse.Namespace, epsilon: float | None) -> RunConfig:
    """10 clients, every client every round; each device spends at most ``epsilon``."""
    return RunConfig(
        dataset="mnist-5k",
        model=args.local_model,
        clients=10,
        rounds=args.local_rounds,
        local_epochs=args.local_epochs if epsilon is not None else 1,
        # The non-private baseline uses fedge's default SGD settings.
        batch_size=args.local_batch if epsilon is not None else 32,
        lr=args.local_lr if epsilon is not None else 0.05,
        momentum=args.local_momentum if epsilon is not None else 0.9,
        privacy=DpConfig(
            local_dp_epsilon=epsilon,
            local_dp_clip=args.local_clip,
            dp_accountant=args.local_accountant,
            dp_delta=DELTA,
            dp_seed=args.seed,
        ),
        seed=args.seed,
    )


def flower_epsilon(*, noise: float, sample_rate: float, population: int, rounds: int) -> float:
    """ε of Flower's own accountant for the same releases, without amplification."""
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=DELTA,
            population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    sample = max(1, round(sample_rate * population))
    accountant.compose(GaussianPrivacyEvent(noise, sample, population), count=rounds)
    return float(accountant.get_epsilon(DELTA))


def main() -> int:
    """Run the table; exit 1 when a bar is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["central", "local", "all"], default="all")
    parser.add_argument("--central-model", default="mlp")
    parser.add_argument("--central-clients", type=int, default=1000)
    parser.add_argument("--central-rounds", type=int, default=50)
    parser.add_argument("--central-epochs", type=int, default=5)
    parser.add_argument("--central-lr", type=float, default=0.1)
    parser.add_argument("--q", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--adaptive", action="store_true")
    parser.add_argument("--local-model", default="dp-cnn")
    parser.add_argument("--local-rounds", type=int, default=25)
    parser.add_argument("--local-batch", type=int, default=64)
    parser.add_argument("--local-lr", type=float, default=1.0)
    parser.add_argument("--local-clip", type=float, default=0.25)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--local-momentum", type=float, default=0.9)
    parser.add_argument("--local-epsilons", default="3,8")
    parser.add_argument("--local-accountant", choices=["rdp", "prv"], default="prv")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="Print every round.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilons", default="1,3,8")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    # Many tiny client steps: one thread avoids oversubscribing a small, shared machine.
    torch.set_num_threads(args.threads)
    logging.getLogger("fedge").setLevel(logging.ERROR)
    rows: dict[str, Row] = {}
    summary: list[str] = []
    ok = True
    print("fedge privacy benchmark: mnist-5k, delta = 1e-5")
    if args.only in ("central", "all"):
        base = central_config(args, None)
        print(
            f"central DP: {base.model}, {base.clients} clients, q = {base.fraction}, "
            f"{base.rounds} rounds, clip {base.privacy.dp_clip}"
            + (" (adaptive)" if args.adaptive else "")
        )
        rows["central-none"] = _run("non-private", base, None)
        for eps in [float(e) for e in args.epsilons.split(",")]:
            cfg = central_config(args, eps)
            rows[f"central-{eps:g}"] = _run(f"central eps<={eps:g}", cfg, "epsilon")
        central = rows.get("central-8")
        if central is not None:
            passed = central.accuracy >= CENTRAL_BAR
            ok &= passed
            summary.append(f"central eps<=8 acc {central.accuracy:.4f} (bar {CENTRAL_BAR})")
        ok &= _flower_comparison(args, rows, summary)
    if args.only in ("local", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            base = local_config(args, None)
            print(
                f"local DP-SGD (Opacus): {base.model}, 10 clients, {base.rounds} rounds, "
                f"batch {args.local_batch}, lr {args.local_lr}, {args.local_epochs} epoch(s), "
                f"clip {base.privacy.local_dp_clip}"
            )
            if not args.no_baseline:
                rows["local-none"] = _run("non-private", base, None)
            for eps in [float(e) for e in args.local_epsilons.split(",")]:
                cfg = local_config(args, eps)
                rows[f"local-{eps:g}"] = _run(
                    f"local eps<={eps:g}/device",
                    cfg,
                    "device_epsilon_max",
                    Path(tmp) / f"devices-{eps:g}",
                )
        local = rows.get("local-8")
        if local is not None:
            ok &= local.accuracy >= LOCAL_BAR and (local.epsilon or 0) <= 8
            summary.append(f"local eps<=8 acc {local.accuracy:.4f} (bar {LOCAL_BAR})")
    verdict = ("  PASS" if ok else "  FAIL") if summary else ""
    print("privacy: " + ("; ".join(summary) or "no bar in this selection") + verdict)
    return 0 if ok else 1


def _flower_comparison(args: argparse.Namespace, rows: dict[str, Row], summary: list[str]) -> bool:
    row = rows.get("central-3") or next(
        (r for k, r in rows.items() if k.startswith("central-") and r.noise), None
    )
    if row is None or row.noise is None or row.epsilon is None:
        return True
    flwr_eps = flower_epsilon(
        noise=row.noise, sample_rate=args.q, population=args.central_clients, rounds=row.rounds
    )
    ratio = row.epsilon / flwr_eps
    print(
        f"  accountant check ({row.name}: z {row.noise:.3f}, q {args.q}, {row.rounds} rounds): "
        f"fedge eps {row.epsilon:.3f} (Poisson-subsampled RDP) vs Flower eps {flwr_eps:.3f} "
        f"(no amplification) -> ratio {ratio:.3f}"
    )
    summary.append(f"fedge/Flower eps ratio {ratio:.3f} (bar <= {FLOWER_RATIO_BAR:.3f})")
    return ratio <= FLOWER_RATIO_BAR


if __name__ == "__main__":
    sys.exit(main())
