"""``fedge run``: start, watch, stop and list training runs on the coordinator.

The options of ``run start`` are gathered here (flags win over ``--set`` pairs, which win over
``--config``) and sent as they are: the coordinator resolves them into the run's plan, against
the fleet it knows, or refuses them with one line naming the option.
"""

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedge.cli._control import (
    Control,
    CoordinatorOpt,
    InsecureOpt,
    OperatorOpt,
    call_control,
    operator_command,
)
from fedge.cli._options import run_option_flags
from fedge.cli.common import JsonOption, command_group, console, fail, print_figures, print_plain
from fedge.errors import FedgeError
from fedge.options import layer_options, parse_set
from fedge.protocol.serde import message_to_json, run_state_from_proto
from fedge.v1 import control_pb2 as pb

__all__ = ["app", "run_to_json"]

app = command_group("Training runs on the coordinator.")


@app.command("start")
@run_option_flags("run")
def start_command(
    options: dict[str, Any],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other run option, e.g. --set keep-checkpoints=3 (repeat)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of run options (flags win).")
    ] = None,
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Start a training run on the coordinator's devices."""
    flags = options
    try:
        options = layer_options(config, parse_set(set_ or []), flags)
    except FedgeError as err:
        fail(str(err))
    request = pb.StartRunRequest(config_json=json.dumps(options))
    response = call_control(
        coordinator, operator, insecure, lambda stub: stub.StartRun(request, timeout=60)
    )
    console.print(f"run {response.run.run_id} {run_state_from_proto(response.run.state)}")


def run_to_json(response: pb.GetRunResponse) -> dict[str, Any]:
    """Everything ``run status`` shows, as JSON."""
    r = response.run
    return {
        "run": r.run_id,
        "state": run_state_from_proto(r.state),
        "rounds_done": r.rounds_done,
        "rounds_total": r.rounds_total,
        "accuracy": r.accuracy if r.HasField("accuracy") else None,
        "error": r.error,
        "config": json.loads(r.config_json or "{}"),
        "async": message_to_json(r.async_status) if r.HasField("async_status") else None,
        "rounds": [
            {
                "round": x.server_round,
                "accuracy": x.accuracy,
                "loss": x.loss,
                "asked": x.sampled,
                "replied": x.aggregated,
                "dropped": [message_to_json(d) for d in x.drops],
                "epsilon": x.epsilon if x.HasField("epsilon") else None,
                "metrics": dict(x.metrics),
                "seconds": x.seconds,
                "sites": [message_to_json(s) for s in x.sites],
                "updates": [message_to_json(u) for u in x.updates],
            }
            for x in response.rounds
        ],
        "events": [
            {"time": e.time_unix, "kind": e.kind, "device_id": e.device_id, "message": e.message}
            for e in response.events
        ],
    }


def _print_async(a: pb.AsyncStatus) -> None:
    """An async run's model version, buffer, trainings out, staleness and refusals."""
    staleness = ", ".join(f"{k}: {v}" for k, v in sorted(a.staleness_histogram.items()))
    print_plain(
        f"async: model version {a.version}, {a.in_buffer}/{a.buffer} updates in the buffer, "
        f"{a.training} training; updates received {a.updates_received}, applied "
        f"{a.updates_applied}, refused {a.updates_refused}; staleness (versions: updates) "
        f"{staleness or '-'}"
    )
    for d in a.last_refusals:
        print_plain(f"async: refused {d.device_id or f'node {d.node_id}'}: {d.reason}")


@app.command("status")
@operator_command
def status_command(
    run: Annotated[int, typer.Argument(help="Run id (default: the latest).")] = 0,
    as_json: JsonOption = False,
    control: Control = Control(),
) -> None:
    """A run's state, its rounds (devices asked, replied, dropped and why; replies per site)
    and its events."""
    response = control.call(lambda stub: stub.GetRun(pb.GetRunRequest(run_id=run), timeout=30))
    if as_json:
        console.print_json(json.dumps(run_to_json(response)))
        return
    r = response.run
    console.print(
        f"run {r.run_id}: {run_state_from_proto(r.state)}, round {r.rounds_done}/{r.rounds_total}"
        + (f", accuracy {r.accuracy:.4f}" if r.HasField("accuracy") else "")
        + (f", error: {r.error}" if r.error else ""),
        soft_wrap=True,
        highlight=False,
    )
    if r.HasField("async_status"):
        _print_async(r.async_status)
    # A task's own metrics (ROC-AUC of a binary task; F1 of an anomaly task...) get columns.
    extra = sorted({name for x in response.rounds for name in x.metrics if name != "threshold"})
    print_figures(
        f"run {r.run_id} rounds",
        ("round", "accuracy", "loss", *extra, "replied/asked", "dropped", "seconds"),
        [
            (
                str(x.server_round),
                f"{x.accuracy:.4f}",
                f"{x.loss:.4f}",
                *(f"{x.metrics[name]:.4f}" if name in x.metrics else "" for name in extra),
                f"{x.aggregated}/{x.sampled}",
                str(x.dropped),
                f"{x.seconds:.1f}",
            )
            for x in response.rounds
        ],
    )
    for x in response.rounds:
        for s in x.sites:  # what each site's gateway sent the cloud
            where = f"site {s.site} (gateway {s.gateway_id})" if s.site else "cloud devices"
            loss = f", train loss {s.train_loss:.4f}" if s.HasField("train_loss") else ""
            print_plain(
                f"round {x.server_round}: {where}: {s.replies} "
                f"{'reply' if s.replies == 1 else 'replies'} for {s.aggregated}/{s.asked} "
                f"devices, {s.examples} examples{loss}"
            )
        if x.updates:  # an async version: whose updates, how stale, weighed how
            took = ", ".join(
                f"{u.device_id or f'node {u.node_id}'} (staleness {u.staleness}, weight "
                f"{u.weight:.3f})"
                for u in x.updates
            )
            print_plain(f"version {x.server_round}: {took}")
        for d in x.drops:
            who = d.device_id or f"node {d.node_id}"
            console.print(
                f"round {x.server_round}: dropped {who}: {d.reason}",
                soft_wrap=True,
                highlight=False,
            )
    for e in list(response.events)[-12:]:
        when = dt.datetime.fromtimestamp(e.time_unix, dt.UTC).strftime("%H:%M:%S")
        print_plain(f"{when} {e.kind:<13} {e.device_id:<13} {e.message}")


@app.command("stop")
@operator_command
def stop_command(
    run: Annotated[int, typer.Argument(help="Run id.")],
    control: Control = Control(),
) -> None:
    """Stop a run (a running one stops at the end of the current exchange)."""
    response = control.call(lambda stub: stub.StopRun(pb.StopRunRequest(run_id=run), timeout=30))
    console.print(f"run {response.run.run_id} {run_state_from_proto(response.run.state)}")


@app.command("ls")
@operator_command
def ls_command(control: Control = Control()) -> None:
    """List runs."""
    response = control.call(lambda stub: stub.ListRuns(pb.ListRunsRequest(), timeout=30))
    table = Table(title="fedge runs")
    for column in ("run", "state", "rounds", "accuracy", "dataset / model", "error"):
        table.add_column(column)
    for r in response.runs:
        cfg = json.loads(r.config_json or "{}")
        table.add_row(
            str(r.run_id),
            run_state_from_proto(r.state),
            f"{r.rounds_done}/{r.rounds_total}",
            f"{r.accuracy:.4f}" if r.HasField("accuracy") else "-",
            f"{cfg.get('dataset', '?')} / {cfg.get('model', '?')}",
            r.error,
        )
    console.print(table)
