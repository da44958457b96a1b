"""``fedge simulate``: train a simulated fleet on this machine (``local``) or on Ray."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedge.app.results import RoundRecord, RunResult
from fedge.cli.common import console, fail
from fedge.config import RunConfig, load_config_file
from fedge.errors import FedgeError

__all__ = ["simulate_command"]


def simulate_command(
    dataset: Annotated[str | None, typer.Option(help="Dataset name [default: mnist-5k].")] = None,
    model: Annotated[str | None, typer.Option(help="Model name [default: fedavg-cnn].")] = None,
    clients: Annotated[int | None, typer.Option(help="Number of clients [default: 10].")] = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds [default: 10].")] = None,
    fraction: Annotated[
        float | None, typer.Option(help="Fraction of clients sampled per round, in (0, 1].")
    ] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Local batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Client learning rate.")] = None,
    partition: Annotated[
        str | None, typer.Option(help="iid, dirichlet:ALPHA or shards:K [default: iid].")
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Aggregation strategy.")] = None,
    runtime: Annotated[str | None, typer.Option(help="local or ray [default: local].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [default: 0].")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory of on-disk datasets (torchvision layout).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of options (CLI flags win).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/latest"),
) -> None:
    """Simulate a federated fleet and write results.json, checkpoints and plots to --out."""
    flags: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "clients": clients,
        "rounds": rounds,
        "fraction": fraction,
        "local_epochs": local_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "partition": partition,
        "strategy": strategy,
        "runtime": runtime,
        "seed": seed,
        "data_dir": str(data_dir) if data_dir is not None else None,
    }
    try:
        values = load_config_file(config) if config is not None else {}
        values.update({k: v for k, v in flags.items() if v is not None})
        run_config = RunConfig.from_mapping(values)
        result = _run(run_config, out)
    except (FedgeError, ValueError) as err:
        fail(str(err))
    _print_summary(result, out)


def _run(config: RunConfig, out: Path) -> RunResult:
    from fedge.simulation import simulate

    console.print(
        f"fedge simulate: {config.dataset} / {config.model}, {config.clients} clients, "
        f"{config.partition}, {config.strategy}, {config.rounds} rounds on {config.runtime}"
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
            )
            progress.update(task, advance=1, status=f"acc {record.accuracy:.4f}")

        return simulate(config, out_dir=out, on_round=on_round)


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
