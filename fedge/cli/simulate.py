"""``fedge simulate``: train a simulated fleet on this machine (``local``) or on Ray."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fedge.cli._options import run_option_flags
from fedge.cli.common import console, fail, require_extra
from fedge.cli.release import print_release_summary
from fedge.errors import ConfigError, FedgeError

if TYPE_CHECKING:
    # torch-heavy modules load only when a command runs, so `fedge --help` stays fast
    from fedge.app.checkpoint import Checkpoint
    from fedge.app.config import RunConfig
    from fedge.app.results import RoundRecord, RunResult
    from fedge.builder import ReleaseReport

__all__ = ["simulate_command"]


@run_option_flags("simulate")
def simulate_command(
    options: dict[str, Any],
    device_state_root: Annotated[
        Path | None,
        typer.Option(
            help="Simulated devices' state dirs (privacy ledgers).", show_default=".fedge/devices"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of options (CLI flags win).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/latest"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run kept in --out after its last checkpointed round."
        ),
    ] = False,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            help="KEY=V1,V2: run every point of the grid of all --sweep options, each in "
            "--out/KEY=V/ (and one tracked run each with --track).",
        ),
    ] = None,
) -> None:
    """Simulate a federated fleet and write results.json, checkpoints and plots to --out."""
    require_extra("server", "fedge simulate")
    if sweep:
        _sweep(options, config, out, sweep, device_state_root)
        return
    releases: list[tuple[Path, ReleaseReport]] = []
    try:
        run_config, start_from = _plan(options, config, out, resume=resume)
        _check_out(out)
        root = device_state_root or _default_device_root()
        result = _run(run_config, out, releases, root, start_from)
    except KeyboardInterrupt:
        fail(_interrupted(out), code=130)
    except (FedgeError, ValueError) as err:
        fail(str(err))
    _print_summary(result, out)
    if releases:
        print_release_summary(releases[-1][1], releases[-1][0])


def _sweep(
    options: dict[str, Any],
    config: Path | None,
    out: Path,
    sweep: list[str],
    device_state_root: Path | None,
) -> None:
    """One run per point of the grid the ``--sweep`` options span."""
    import itertools

    from fedge.app.config import config_from_layers

    try:
        axes = _sweep_axes(sweep)
        points = [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ]
        plans = [
            (config_from_layers(config, {**options, **point}), out / _point_name(point))
            for point in points
        ]
        if any(p.track for p, _ in plans) and not any(p.tracking_uri for p, _ in plans):
            # Every point's MLflow run in one store, beside the points.
            out.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{out.absolute() / 'mlflow.db'}"
            plans = [(p.replace(tracking_uri=uri), where) for p, where in plans]
        finals = []
        for run_config, where in plans:
            _check_out(where)
            root = device_state_root or _default_device_root()
            result = _run(run_config, where, [], root, None)
            finals.append((where.name, result.final_accuracy, result.total_seconds))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except (FedgeError, ValueError) as err:
        fail(str(err))
    table = Table(title=f"fedge simulate --sweep ({len(finals)} points)")
    for column in ("point", "final accuracy", "seconds"):
        table.add_column(column, justify="right")
    for name, accuracy, seconds in finals:
        table.add_row(name, f"{accuracy:.4f}", f"{seconds:.1f}")
    console.print(table)


def _sweep_axes(sweep: list[str]) -> dict[str, list[Any]]:
    from fedge.options import parse_set

    axes: dict[str, list[Any]] = {}
    for item in sweep:
        key, sep, raw = item.partition("=")
        values = [v for v in raw.split(",") if v]
        if not sep or not key or not values:
            raise ConfigError("--sweep", item, "must be KEY=V1,V2,...")
        axes[key] = [parse_set([f"{key}={v}"])[key] for v in values]
    return axes


def _point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_")


def _plan(
    options: dict[str, Any], config: Path | None, out: Path, *, resume: bool
) -> tuple[RunConfig, Checkpoint | None]:
    from fedge.app.config import config_from_layers

    if not resume:
        return config_from_layers(config, options), None
    from fedge.simulation import resume_point

    if options or config is not None:
        given = ", ".join(f"--{k}" for k in options) or "--config"
        raise ConfigError("--resume", given, "conflicts: a resumed run keeps its own options")
    return resume_point(out)


def _default_device_root() -> Path:
    from fedge.simulation import DEFAULT_DEVICE_STATE_ROOT

    return DEFAULT_DEVICE_STATE_ROOT


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot become a directory before a round is spent on it."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError("--out", str(out), f"cannot be a directory: {folder} is a file")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError("--out", str(out), f"is not writable ({folder})")
            return


def _interrupted(out: Path) -> str:
    """What Ctrl-C leaves behind, and how to go on."""
    kept = sorted((out / "checkpoints").glob("round-*.pt"))
    if not kept:
        return f"interrupted before the first round ended: nothing kept in {out}"
    last = kept[-1].stem.removeprefix("round-").lstrip("0")
    return (
        f"interrupted: rounds up to {last} are kept in {out} (model.pt, checkpoints/); "
        f"continue with `fedge simulate --resume --out {out}`, or rerun to start over"
    )


def _run(
    config: RunConfig,
    out: Path,
    releases: list[tuple[Path, ReleaseReport]],
    root: Path,
    start_from: Checkpoint | None,
) -> RunResult:
    from fedge.app.batched import plan_batching
    from fedge.app.preflight import check_device_visible
    from fedge.app.results import task_metrics
    from fedge.simulation import simulate

    check_device_visible(config)  # before the run's first line (simulate checks it too)

    sites = (
        f" behind {config.gateways} site gateways ({config.partition} per {config.partition_level})"
        if config.gateways
        else ""
    )
    info = config.task_info
    what = (
        f"task {info['name']} {info['version']} ({info['kind']})"
        if info
        else f"{config.dataset} / {config.model}"
    )
    if info and config.data:
        what += f" / {config.model}"
    console.print(
        f"fedge simulate: {what}, {config.clients} clients{sites}, "
        f"{config.partition}, {config.strategy}, {config.rounds} rounds on {config.runtime}"
        + (f", models on {config.device}" if config.device != "cpu" else ""),
        soft_wrap=True,
    )
    console.print(plan_batching(config).describe(), soft_wrap=True, highlight=False)
    # A live line on a terminal only (Rich draws nothing live when stdout is not one).
    columns = (
        TextColumn("[bold]rounds"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    is_async = config.mode == "async"
    accuracy = "R²" if config.task_kind == "regression" else "accuracy"  # a regression's: R²
    if config.simulated_clock:
        console.print(_clock_line(config), soft_wrap=True, highlight=False)
    with Progress(*columns, console=console, transient=True) as progress:
        done = start_from.server_round if start_from is not None else 0
        if done:
            progress.console.print(f"resuming after round {done} from {out / 'model.pt'}")
        task = progress.add_task("rounds", total=config.rounds, completed=done, status="")

        def on_round(record: RoundRecord) -> None:
            progress.console.print(
                f"{'version' if is_async else 'round'} {record.round:>3}  "
                f"{accuracy} {record.accuracy:.4f}  loss {record.loss:.4f}"
                f"  {record.seconds:5.1f}s"
                + (f"  dropped {len(record.dropped)}" if record.dropped and not is_async else "")
                + _clock_part(record)
                + (f"  eps {record.extra['epsilon']:.3f}" if "epsilon" in record.extra else "")
                + "".join(f"  {k} {v:.4f}" for k, v in task_metrics(record).items() if k != "r2")
            )
            for site in record.extra.get("sites", []):
                progress.console.print(
                    "          " + _site_line(site), highlight=False, soft_wrap=True
                )
            status = (
                f"acc {record.accuracy:.4f}  sampled {record.sampled}  {record.seconds:.1f}s/round"
            )
            progress.update(task, advance=1, status=status)

        def on_release(target: Path, report: ReleaseReport | None) -> None:
            if report is None:
                progress.update(task, status=f"building {target.name}/")
                return
            progress.console.print(f"{target}: {report.summary()}", soft_wrap=True)
            releases.append((target, report))

        return simulate(
            config,
            out_dir=out,
            on_round=on_round,
            on_release=on_release,
            device_state_root=root,
            start_from=start_from,
        )


def _clock_line(config: RunConfig) -> str:
    """How the simulated fleet behaves, and the async knobs."""
    line = (
        f"simulated clock: availability {config.availability} per {config.slot_seconds:g}s slot, "
        f"speeds log-normal (median {config.device_speed:g} examples/s, sigma "
        f"{config.speed_sigma:g})"
    )
    if config.mode == "async":
        line += (
            f"; async: buffer {config.buffer}, concurrency {config.concurrency}, max staleness "
            f"{config.max_staleness}, weight {config.staleness_weight}, server lr "
            f"{config.async_lr:g}"
        )
    return line


def _clock_part(record: RoundRecord) -> str:
    """A round's (or version's) simulated time and, under async, its staleness and refusals."""
    extra = record.extra
    if "sim_time" not in extra:
        return ""
    part = f"  t={extra['sim_time']:.0f}s"
    if "staleness_mean" in extra:
        part += f"  staleness mean {extra['staleness_mean']:.1f} max {extra['staleness_max']}"
        if extra.get("refused"):
            part += f"  refused {extra['refused']}"
    return part


def _async_summary(notes: dict[str, Any]) -> str:
    """The async run in one line: versions, updates, refusals and their reasons, staleness."""
    reasons = ", ".join(f"{k} {v}" for k, v in notes["refused_by_reason"].items())
    histogram = notes["staleness_histogram"]
    total = sum(histogram.values())
    mean = sum(int(k) * v for k, v in histogram.items()) / total if total else 0.0
    return (
        f"async: {notes['versions']} model versions from {notes['updates_received']} updates "
        f"({notes['updates_applied']} applied, {notes['updates_refused']} refused"
        + (f": {reasons}" if reasons else "")
        + f"), staleness mean {mean:.1f} max {max((int(k) for k in histogram), default=0)}, "
        f"simulated time {notes['sim_time']:.0f}s"
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
    first = "version" if "async" in result.notes else "round"
    dropped = "refused" if "async" in result.notes else "dropped"
    regression = result.notes.get("task", {}).get("kind") == "regression"
    accuracy = "R²" if regression else "accuracy"  # a regression round's accuracy is its R²
    for column in (first, accuracy, "loss", "clients", dropped, "seconds"):
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
    last = result.rounds[-1].extra if regression and result.rounds else {}
    in_units = f", RMSE {last['rmse']:.4g}, MAE {last['mae']:.4g}" if "rmse" in last else ""
    console.print(
        f"final {accuracy} {result.final_accuracy:.4f}{in_units} in {result.total_seconds:.1f}s; "
        f"results in {out / 'results.json'}"
    )
    if "async" in result.notes:
        console.print(_async_summary(result.notes["async"]), highlight=False)
    elif result.rounds and "sim_time" in result.rounds[-1].extra:
        console.print(f"simulated time {result.rounds[-1].extra['sim_time']:.0f}s")
    central = result.notes.get("privacy", {}).get("central", {})
    if "epsilon_bound" in central:
        console.print(
            f"central DP (async, {central['max_participations']} participations per device): "
            f"epsilon {central['epsilon']:.4f} spent, bound {central['epsilon_bound']:.4f}",
            highlight=False,
        )
    if result.stopped_reason:
        console.print(f"stopped early: {result.stopped_reason}")
    if "personalization" in result.notes:
        _print_personalization(result.notes["personalization"], out)


def _print_personalization(summary: dict[str, Any], out: Path) -> None:
    """Per-device accuracy on each device's own test split: global against personalised."""
    table = Table(title=f"personalisation: {summary['strategy']} + {summary['mode']}")
    for column in ("served model", "mean", "worst 10%", "devices worse", "devices better"):
        table.add_column(column, justify="right")
    rows = (
        ("global", "global"),
        ("personal, guard off", "guard_off"),
        ("personal, guard on", "guard_on"),
    )
    for label, key in rows:
        row = summary[key]
        table.add_row(
            label,
            f"{row['mean']:.4f}",
            f"{row['worst_10pct']:.4f}",
            f"{row['made_worse_share']:.0%}",
            f"{row['improved_share']:.0%}",
        )
    console.print(table)
    console.print(
        f"{summary['serving_personal']} of {summary['devices']} devices serve their personal "
        f"model ({summary['gain_points']:+.1f} points mean); plot in {out / 'personalization.png'}"
    )
