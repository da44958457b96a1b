"""``fedge simulate``: train a simulated fleet on this machine (``local``) or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedge.cli.common import console, fail, require_extra
from fedge.cli.release import print_release_summary
from fedge.errors import FedgeError

if TYPE_CHECKING:
    # torch-heavy modules load only when a command runs, so `fedge --help` stays fast
    from fedge.app.config import RunConfig
    from fedge.app.results import RoundRecord, RunResult
    from fedge.builder import ReleaseReport

__all__ = ["simulate_command"]


def simulate_command(
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: mnist-5k).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: fedavg-cnn).")] = None,
    clients: Annotated[int | None, typer.Option(help="Number of clients (default: 10).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds (default: 10).")] = None,
    fraction: Annotated[
        float | None, typer.Option(help="Fraction of clients sampled per round, in (0, 1].")
    ] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Local batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Client learning rate.")] = None,
    momentum: Annotated[
        float | None, typer.Option(help="Client SGD momentum, in \\[0, 1) (default: 0.9).")
    ] = None,
    partition: Annotated[
        str | None, typer.Option(help="iid, dirichlet:ALPHA or shards:K (default: iid).")
    ] = None,
    gateways: Annotated[
        int | None,
        typer.Option(help="Put the clients behind K site gateways, aggregated per site (0: none)."),
    ] = None,
    partition_level: Annotated[
        str | None,
        typer.Option(
            help="With --gateways: split the data by --partition across devices, or across "
            "sites (then evenly within each site) (default: device)."
        ),
    ] = None,
    site_rounds: Annotated[
        int | None,
        typer.Option(
            help="With --gateways: local FedAvg rounds at each site per round (default: 1)."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32, or bf16 (faster on CPUs with AVX512-BF16/AMX) (default: fp32)."),
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Aggregation strategy.")] = None,
    runtime: Annotated[str | None, typer.Option(help="local or ray (default: local).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: 0).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory of on-disk datasets (torchvision layout).")
    ] = None,
    dp_noise: Annotated[
        float | None, typer.Option(help="Central DP: noise multiplier z (client level).")
    ] = None,
    dp_clip: Annotated[float | None, typer.Option(help="Central DP: clip norm C.")] = None,
    dp_adaptive_clip: Annotated[
        bool | None, typer.Option(help="Central DP: adapt C to the median update norm.")
    ] = None,
    dp_delta: Annotated[float | None, typer.Option(help="DP delta (default: 1e-5).")] = None,
    dp_max_epsilon: Annotated[
        float | None, typer.Option(help="Central DP: stop before a round crosses this epsilon.")
    ] = None,
    dp_target_epsilon: Annotated[
        float | None, typer.Option(help="Central DP: choose z to end the rounds at this epsilon.")
    ] = None,
    dp_seed: Annotated[
        int | None, typer.Option(help="Seed DP noise (reproducible; default: OS randomness).")
    ] = None,
    local_dp_noise: Annotated[
        float | None, typer.Option(help="Local DP-SGD: noise multiplier on each device.")
    ] = None,
    local_dp_clip: Annotated[
        float | None, typer.Option(help="Local DP-SGD: per-sample gradient clip norm.")
    ] = None,
    local_dp_epsilon: Annotated[
        float | None, typer.Option(help="Local DP-SGD: each device's epsilon budget.")
    ] = None,
    device_state_root: Annotated[
        Path | None,
        typer.Option(
            help="Simulated devices' state dirs (privacy ledgers) (default: .fedge/devices)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of options (CLI flags win).")
    ] = None,
    release: Annotated[
        bool | None,
        typer.Option("--release/--no-release", help="Build release/ (int8 student) after the run."),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(help="Release student (default: student-cnn for images, else student-mlp)."),
    ] = None,
    release_every: Annotated[
        int | None, typer.Option(help="Also build release-round-K/ every K rounds (0: never).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/latest"),
) -> None:
    """Simulate a federated fleet and write results.json, checkpoints and plots to --out."""
    require_extra("server", "fedge simulate")
    flags: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "clients": clients,
        "rounds": rounds,
        "fraction": fraction,
        "local_epochs": local_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "partition": partition,
        "gateways": gateways,
        "partition_level": partition_level,
        "site_rounds": site_rounds,
        "precision": precision,
        "strategy": strategy,
        "runtime": runtime,
        "seed": seed,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "dp_noise": dp_noise,
        "dp_clip": dp_clip,
        "dp_adaptive_clip": dp_adaptive_clip,
        "dp_delta": dp_delta,
        "dp_max_epsilon": dp_max_epsilon,
        "dp_target_epsilon": dp_target_epsilon,
        "dp_seed": dp_seed,
        "local_dp_noise": local_dp_noise,
        "local_dp_clip": local_dp_clip,
        "local_dp_epsilon": local_dp_epsilon,
        "release": release,
        "student": student,
        "release_every": release_every,
    }
    releases: list[tuple[Path, ReleaseReport]] = []
    try:
        from fedge.app.config import config_from_layers
        from fedge.simulation import DEFAULT_DEVICE_STATE_ROOT

        run_config = config_from_layers(config, flags)
        root = device_state_root or DEFAULT_DEVICE_STATE_ROOT
        result = _run(run_config, out, releases, root)
    except (FedgeError, ValueError) as err:
        fail(str(err))
    _print_summary(result, out)
    if releases:
        print_release_summary(releases[-1][1], releases[-1][0])


def _run(
    config: RunConfig, out: Path, releases: list[tuple[Path, ReleaseReport]], root: Path
) -> RunResult:
    from fedge.simulation import simulate

    sites = (
        f" behind {config.gateways} site gateways ({config.partition} per {config.partition_level})"
        if config.gateways
        else ""
    )
    console.print(
        f"fedge simulate: {config.dataset} / {config.model}, {config.clients} clients{sites}, "
        f"{config.partition}, {config.strategy}, {config.rounds} rounds on {config.runtime}",
        soft_wrap=True,
    )
    columns = (
        TextColumn("[bold]rounds"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("rounds", total=config.rounds, status="")

        def on_round(record: RoundRecord) -> None:
            progress.console.print(
                f"round {record.round:>3}  accuracy {record.accuracy:.4f}  loss {record.loss:.4f}"
                f"  {record.seconds:5.1f}s"
                + (f"  dropped {len(record.dropped)}" if record.dropped else "")
                + (f"  eps {record.extra['epsilon']:.3f}" if "epsilon" in record.extra else "")
            )
            for site in record.extra.get("sites", []):
                progress.console.print(
                    "          " + _site_line(site), highlight=False, soft_wrap=True
                )
            progress.update(task, advance=1, status=f"acc {record.accuracy:.4f}")

        def on_release(target: Path, report: ReleaseReport | None) -> None:
            if report is None:
                progress.update(task, status=f"building {target.name}/")
                return
            progress.console.print(f"{target}: {report.summary()}", soft_wrap=True)
            releases.append((target, report))

        return simulate(
            config, out_dir=out, on_round=on_round, on_release=on_release, device_state_root=root
        )


def _site_line(site: dict[str, Any]) -> str:
    """One site's share of a round, as ``simulate`` prints it."""
    parts = [
        f"{site['site']}: {site.get('aggregated', 0)}/{site.get('asked', 0)} devices",
        f"{site.get('examples', 0)} examples",
    ]
    if site.get("train_loss") is not None:
        parts.append(f"train loss {site['train_loss']:.4f}")
    if site.get("accuracy") is not None:
        parts.append(f"site model accuracy {site['accuracy']:.4f}")
    return ", ".join(parts)


def _print_summary(result: RunResult, out: Path) -> None:
    table = Table(title="fedge simulate")
    for column in ("round", "accuracy", "loss", "clients", "dropped", "seconds"):
        table.add_column(column, justify="right")
    for r in result.rounds:
        table.add_row(
            str(r.round),
            f"{r.accuracy:.4f}",
            f"{r.loss:.4f}",
            str(r.aggregated),
            str(len(r.dropped)),
            f"{r.seconds:.1f}",
        )
    console.print(table)
    console.print(
        f"final accuracy {result.final_accuracy:.4f} in {result.total_seconds:.1f}s; "
        f"results in {out / 'results.json'}"
    )
    if result.stopped_reason:
        console.print(f"stopped early: {result.stopped_reason}")
