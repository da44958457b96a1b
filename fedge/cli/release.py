"""``fedge release``: ``build`` a release from a checkpoint (distil, export, quantize, report).

``build --publish-percent P`` also uploads the fresh build to the coordinator, which signs it as
its next release and rolls it out to a P% canary (the pipeline's automatic publish step). The
rollout commands (publish, promote, rollback, ...) of :mod:`fedge.cli.release_rollout` are
registered in the same group.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fedge.cli._control import CoordinatorOpt, InsecureOpt, OperatorOpt, call_control
from fedge.cli.common import command_group, console, fail, require_extra
from fedge.cli.release_rollout import register as register_rollout
from fedge.cli.release_rollout import upload_and_publish
from fedge.errors import FedgeError

if TYPE_CHECKING:  # the compress stack (torch, onnx) is imported only when a command runs
    from fedge.compress import ReleaseReport

__all__ = ["app", "build_command", "print_release_summary"]

app = command_group("Build, sign and roll out model releases.")


@app.command("build")
def build_command(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="A fedge checkpoint (e.g. runs/latest/model.pt).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Release directory to write.")],
    student: Annotated[
        str | None,
        typer.Option(
            "--student", help="Student model (default: student-cnn for images, else student-mlp)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Distillation epochs (default: 20).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Distillation temperature (default: 4).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory of on-disk datasets.")
    ] = None,
    publish_percent: Annotated[
        int | None,
        typer.Option(
            "--publish-percent",
            help="Publish the build to this share of devices (1-100) once built (a canary).",
        ),
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", help="With --publish-percent: device profile.")
    ] = "cpu-small",
    coordinator: CoordinatorOpt = None,
    operator: OperatorOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Distil the checkpoint's model into a student, export it to ONNX, quantize it to int8."""
    require_extra("server", "fedge release build")
    from dataclasses import replace

    from fedge.compress import DistillSettings, ReleaseSettings, build_release

    if publish_percent is not None and not 0 < publish_percent <= 100:
        fail(f"--publish-percent: {publish_percent!r} must be in (0, 100]")
    distill = DistillSettings(seed=seed)
    if epochs is not None:
        distill = replace(distill, epochs=epochs)
    if temperature is not None:
        if not temperature > 0:
            fail(f"--temperature: {temperature!r} must be positive")
        distill = replace(distill, temperature=temperature)
    console.print(f"fedge release build: {checkpoint} -> {out}")
    try:
        with console.status("distilling, exporting, quantizing, measuring ..."):
            report = build_release(
                checkpoint=checkpoint,
                out_dir=out,
                student=student,
                data_dir=str(data_dir) if data_dir is not None else None,
                settings=ReleaseSettings(distill=distill, seed=seed),
            )
    except (FedgeError, ValueError) as err:
        fail(str(err))
    print_release_summary(report, out)
    if publish_percent is not None:
        release = call_control(
            coordinator,
            operator,
            insecure,
            lambda stub: upload_and_publish(stub, out, percent=publish_percent, profile=profile),
        )
        console.print(
            f"published release {release.version} ({release.name}, sha256 "
            f"{release.sha256[:12]}) to {publish_percent}% of {release.profile!r} devices; widen "
            f"it with `fedge release promote {release.version} --percent P`",
            soft_wrap=True,
        )


def print_release_summary(report: "ReleaseReport", out: Path) -> None:
    """The three-row table (teacher, student fp32, student int8) and the one-line summary."""
    table = Table(title=f"release {out}")
    for column in ("model", "size", "params", "p50 ms", "p99 ms", "accuracy"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for row in report.rows:
        table.add_row(
            row.role,
            f"{row.size_bytes / 1024:,.1f} KiB",
            f"{row.parameters:,}",
            f"{row.latency_p50_ms:.3f}",
            f"{row.latency_p99_ms:.3f}",
            f"{100 * row.accuracy:.2f}%",
        )
    console.print(table)
    console.print(report.summary())


register_rollout(app)
