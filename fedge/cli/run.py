"""``fedge run``: start, watch, stop and list training runs on the coordinator."""

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedge.cli._control import CoordinatorOpt, InsecureOpt, OperatorOpt, call_control
from fedge.cli.common import command_group, console, fail
from fedge.config import config_from_layers
from fedge.errors import FedgeError
from fedge.v1 import control_pb2 as pb

__all__ = ["app"]

app = command_group("Training runs on the coordinator.")


def _state(value: int) -> str:
    return pb.RunState.Name(pb.RunState.ValueType(value)).removeprefix("RUN_STATE_").lower()


def _parse_set(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


@app.command("start")
def start_command(
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: mnist-5k).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: fedavg-cnn).")] = None,
    clients: Annotated[int | None, typer.Option(help="Devices expected per round.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds (default: 10).")] = None,
    fraction: Annotated[float | None, typer.Option(help="Fraction of devices per round.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Local batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Client learning rate.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Aggregation strategy.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: 0).")] = None,
    min_clients: Annotated[
        int | None, typer.Option(help="Fewest replies a round accepts (else retried/failed).")
    ] = None,
    round_timeout: Annotated[
        float | None, typer.Option(help="Seconds a round waits for devices.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other run option, e.g. --set dp-noise=1.0 (repeat)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of run options (flags win).")
    ] = None,
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Start a training run on the coordinator's devices."""
    flags: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "clients": clients,
        "rounds": rounds,
        "fraction": fraction,
        "local_epochs": local_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "strategy": strategy,
        "seed": seed,
        "min_clients": min_clients,
        "round_timeout": round_timeout,
    }
    try:
        run_config = config_from_layers(config, _parse_set(set_ or []), flags)
        run_config = run_config.replace(runtime="grpc")
    except (FedgeError, ValueError) as err:
        fail(str(err))
    request = pb.StartRunRequest(config_json=json.dumps(run_config.to_run_config()))
    response = call_control(
        coordinator, operator, insecure, lambda stub: stub.StartRun(request, timeout=30)
    )
    console.print(f"run {response.run.run_id} {_state(response.run.state)}")


@app.command("status")
def status_command(
    run: Annotated[int, typer.Argument(help="Run id (default: the latest).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """A run's state, rounds and recent events."""
    response = call_control(
        coordinator,
        operator,
        insecure,
        lambda stub: stub.GetRun(pb.GetRunRequest(run_id=run), timeout=30),
    )
    r = response.run
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "run": r.run_id,
                    "state": _state(r.state),
                    "rounds_done": r.rounds_done,
                    "rounds_total": r.rounds_total,
                    "accuracy": r.accuracy if r.HasField("accuracy") else None,
                    "error": r.error,
                    "rounds": [
                        {
                            "round": x.server_round,
                            "accuracy": x.accuracy,
                            "aggregated": x.aggregated,
                        }
                        for x in response.rounds
                    ],
                    "events": [{"kind": e.kind, "message": e.message} for e in response.events],
                }
            )
        )
        return
    console.print(
        f"run {r.run_id}: {_state(r.state)}, round {r.rounds_done}/{r.rounds_total}"
        + (f", accuracy {r.accuracy:.4f}" if r.HasField("accuracy") else "")
        + (f", error: {r.error}" if r.error else "")
    )
    table = Table(title=f"run {r.run_id} rounds")
    for column in ("round", "accuracy", "loss", "devices", "dropped", "seconds"):
        table.add_column(column, justify="right")
    for x in response.rounds:
        table.add_row(
            str(x.server_round),
            f"{x.accuracy:.4f}",
            f"{x.loss:.4f}",
            f"{x.aggregated}/{x.sampled}",
            str(x.dropped),
            f"{x.seconds:.1f}",
        )
    console.print(table)
    for e in list(response.events)[-10:]:
        when = dt.datetime.fromtimestamp(e.time_unix, dt.UTC).strftime("%H:%M:%S")
        console.print(f"{when} {e.kind:<12} {e.device_id:<13} {e.message}", highlight=False)


@app.command("stop")
def stop_command(
    run: Annotated[int, typer.Argument(help="Run id.")],
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Stop a run (a running one stops at the end of the current exchange)."""
    response = call_control(
        coordinator,
        operator,
        insecure,
        lambda stub: stub.StopRun(pb.StopRunRequest(run_id=run), timeout=30),
    )
    console.print(f"run {response.run.run_id} {_state(response.run.state)}")


@app.command("ls")
def ls_command(
    coordinator: CoordinatorOpt = None, operator: OperatorOpt = None, insecure: InsecureOpt = False
) -> None:
    """List runs."""
    response = call_control(
        coordinator,
        operator,
        insecure,
        lambda stub: stub.ListRuns(pb.ListRunsRequest(), timeout=30),
    )
    table = Table(title="fedge runs")
    for column in ("run", "state", "rounds", "accuracy", "dataset / model", "error"):
        table.add_column(column)
    for r in response.runs:
        cfg = json.loads(r.config_json or "{}")
        table.add_row(
            str(r.run_id),
            _state(r.state),
            f"{r.rounds_done}/{r.rounds_total}",
            f"{r.accuracy:.4f}" if r.HasField("accuracy") else "-",
            f"{cfg.get('dataset', '?')} / {cfg.get('model', '?')}",
            r.error,
        )
    console.print(table)
