"""``fedge release build``: one release from a checkpoint, or one artifact per device profile.

Without ``--profile``: distil the checkpoint's model into one student, export it to ONNX,
quantize it to int8 and report (``--publish-percent P`` then signs the build and rolls it out to
a P% canary of ``--publish-profile`` devices). With ``--profile NAME`` (repeatable; a ``.toml``
path works too) or ``--all-profiles`` (every registered profile serving the checkpoint's
dataset): build candidates (teacher, pruned teacher, students; fp32 and int8; each profile's
engines), measure each, and write the most accurate one that fits each profile's budget under
``OUT/profiles/<name>/`` (see :mod:`fedge.builder.tiers`).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fedge.cli._control import Control, operator_command
from fedge.cli.common import PROFILE_HELP, console, fail, require_extra, resolve_device_profile
from fedge.cli.release_rollout import upload_and_publish
from fedge.errors import FedgeError

if TYPE_CHECKING:  # the release build stack (torch, onnx) is imported only when a command runs
    from fedge.app.checkpoint import Checkpoint
    from fedge.builder import BuildStep, DistillSettings, ProfileRelease, ReleaseReport
    from fedge.inference.profiles import DeviceProfile

__all__ = ["build_command", "print_profile_summary", "print_release_summary"]


@operator_command
def build_command(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="A fedge checkpoint (e.g. runs/latest/model.pt).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Release directory to write.")],
    student: Annotated[
        list[str] | None,
        typer.Option(
            "--student",
            help="Student model (default: student-cnn for images, else student-mlp). With "
            "--profile: the students to try, repeatable (default: every student that fits).",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", min=1, help="Distillation (and fine-tuning) epochs (default: 20)."
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Distillation temperature (default: 4).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory of on-disk datasets.")
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help=f"Build the best model for this device profile: {PROFILE_HELP}; repeatable.",
        ),
    ] = None,
    all_profiles: Annotated[
        bool,
        typer.Option("--all-profiles", help="Build for every device profile serving the dataset."),
    ] = False,
    prune_ratio: Annotated[
        list[float] | None,
        typer.Option(
            "--prune-ratio",
            help="With --profile: share of channels pruned from the teacher, repeatable "
            "(default: 0.6, 0.9).",
        ),
    ] = None,
    no_prune: Annotated[
        bool, typer.Option("--no-prune", help="With --profile: no pruned candidates.")
    ] = False,
    latency_runs: Annotated[
        int | None, typer.Option("--latency-runs", min=1, help="Timed batch-1 runs (default: 300).")
    ] = None,
    publish_percent: Annotated[
        int | None,
        typer.Option(
            "--publish-percent",
            help="Publish the build to this share of devices (1-100) once built (a canary).",
        ),
    ] = None,
    publish_profile: Annotated[
        str,
        typer.Option("--publish-profile", help="With --publish-percent: device profile."),
    ] = "cpu-small",
    control: Control = Control(),
) -> None:
    """Build a release: one int8 student, or with --profile the best model per device profile."""
    from dataclasses import replace

    require_extra("server", "fedge release build")

    from fedge.builder import DistillSettings

    if publish_percent is not None and not 0 < publish_percent <= 100:
        fail(f"--publish-percent: {publish_percent!r} must be in (0, 100]")
    distill = DistillSettings(seed=seed)
    if epochs is not None:
        distill = replace(distill, epochs=epochs)
    if temperature is not None:
        if not temperature > 0:
            fail(f"--temperature: {temperature!r} must be positive")
        distill = replace(distill, temperature=temperature)
    if profile or all_profiles:
        if profile and all_profiles:
            fail(f"--all-profiles: cannot be combined with --profile {profile[0]!r}")
        if publish_percent is not None:
            fail(
                f"--publish-percent: {publish_percent!r} publishes a single build; publish a "
                "per-profile build's profiles/<name>/ artifacts instead"
            )
        if no_prune and prune_ratio:
            fail(f"--no-prune: cannot be combined with --prune-ratio {prune_ratio[0]!r}")
        _build_profiles(
            checkpoint=checkpoint,
            out=out,
            names=profile or [],
            students=student,
            distill=distill,
            prune_ratios=() if no_prune else tuple(prune_ratio or (0.6, 0.9)),
            latency_runs=latency_runs,
            seed=seed,
            data_dir=data_dir,
        )
        return
    for option, value in (("--prune-ratio", prune_ratio), ("--no-prune", no_prune or None)):
        if value:
            fail(f"{option}: {value!r} needs --profile or --all-profiles")
    if student and len(student) > 1:
        fail(f"--student: {student[1]!r} is a second student; without --profile give one")
    _build_single(
        checkpoint=checkpoint,
        out=out,
        student=student[0] if student else None,
        distill=distill,
        latency_runs=latency_runs,
        seed=seed,
        data_dir=data_dir,
    )
    if publish_percent is not None:
        release = control.call(
            lambda stub: upload_and_publish(
                stub, out, percent=publish_percent, profile=publish_profile
            ),
        )
        console.print(
            f"published release {release.version} ({release.name}, sha256 "
            f"{release.sha256[:12]}) to {publish_percent}% of {release.profile!r} devices; widen "
            f"it with `fedge release promote {release.version} --percent P`",
            soft_wrap=True,
        )


def _build_single(
    *,
    checkpoint: Path,
    out: Path,
    student: str | None,
    distill: "DistillSettings",
    latency_runs: int | None,
    seed: int,
    data_dir: Path | None,
) -> None:
    from fedge.builder import ReleaseSettings, build_release

    settings = ReleaseSettings(distill=distill, seed=seed)
    if latency_runs is not None:
        settings = ReleaseSettings(distill=distill, seed=seed, latency_runs=latency_runs)
    console.print(f"fedge release build: {checkpoint} -> {out}")
    with (
        _failing_in_one_line(out),
        console.status("distilling, exporting, quantizing, measuring ..."),
    ):
        report = build_release(
            checkpoint=checkpoint,
            out_dir=out,
            student=student,
            data_dir=str(data_dir) if data_dir is not None else None,
            settings=settings,
        )
    print_release_summary(report, out)


def _build_profiles(
    *,
    checkpoint: Path,
    out: Path,
    names: list[str],
    students: list[str] | None,
    distill: "DistillSettings",
    prune_ratios: tuple[float, ...],
    latency_runs: int | None,
    seed: int,
    data_dir: Path | None,
) -> None:
    from dataclasses import replace

    from fedge.app.checkpoint import load_checkpoint
    from fedge.builder import TierSettings, build_profile_release

    for ratio in prune_ratios:
        if not 0.0 < ratio < 1.0:
            fail(f"--prune-ratio: {ratio!r} must be in (0, 1)")
    try:
        profiles = [resolve_device_profile(name) for name in names]
        ckpt = load_checkpoint(checkpoint)
    except FedgeError as err:
        fail(str(err))
    if not profiles:
        profiles = _profiles_serving(ckpt)
    settings = TierSettings(
        students=tuple(students) if students else None,
        prune_ratios=prune_ratios,
        distill=distill,
        finetune=distill,
        seed=seed,
    )
    if latency_runs is not None:
        settings = replace(settings, latency_runs=latency_runs)
    console.print(
        f"fedge release build: {checkpoint} -> {out} for profile(s) "
        f"{', '.join(p.name for p in profiles)}"
    )
    with _failing_in_one_line(out), _StepProgress() as progress:
        release = build_profile_release(
            checkpoint=ckpt,
            out_dir=out,
            profiles=profiles,
            data_dir=str(data_dir) if data_dir is not None else None,
            settings=settings,
            progress=progress.tell,
        )
    print_profile_summary(release)


@contextmanager
def _failing_in_one_line(out: Path) -> Iterator[None]:
    """A build into ``out`` that fails on bad input (one line, exit 2) or Ctrl-C (what it left,
    exit 130): a release is built aside and moved into place only when complete."""
    try:
        yield
    except KeyboardInterrupt:
        before = "the release there before is unchanged" if out.exists() else "nothing written"
        fail(f"interrupted: {out}: {before}; run the command again to build it", code=130)
    except (FedgeError, ValueError) as err:
        fail(str(err))


class _StepProgress:
    """A per-profile build's progress: one line per step (kept in a log or a pipe) under a bar
    per phase (models trained, artifacts exported and measured) with N of M and elapsed time."""

    def __init__(self) -> None:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        self.bars = Progress(*columns, console=console, transient=True)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "_StepProgress":
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def tell(self, step: "BuildStep") -> None:
        """Show ``step``: print its line and move its phase's bar to the steps done before it."""
        if step.phase not in self.tasks:
            for task in self.tasks.values():  # the phase before is over
                self.bars.update(task, completed=self.bars.tasks[task].total)
            self.tasks[step.phase] = self.bars.add_task(
                f"{step.phase}s", total=step.count, status=""
            )
        self.bars.update(
            self.tasks[step.phase], completed=step.index - 1, status=f"{step.stage} {step.detail}"
        )
        self.bars.console.print(str(step), highlight=False, soft_wrap=True)


def _profiles_serving(ckpt: "Checkpoint") -> "list[DeviceProfile]":
    from fedge.inference.profiles import get_profile, list_profiles

    serving = [get_profile(n) for n in list_profiles() if get_profile(n).serves(ckpt.dataset)]
    if not serving:
        fail(
            f"--all-profiles: no device profile serves {ckpt.dataset} models "
            f"(profiles: {', '.join(list_profiles())})"
        )
    return serving


def print_release_summary(report: "ReleaseReport", out: Path) -> None:
    """The three-row table (teacher, student fp32, student int8) and the one-line summary."""
    table = Table(title=f"release {out}")
    scores = report.extra.get("regression")  # a regression task's: MAE, RMSE, R² per model
    quality = ("MAE", "RMSE", "R²") if scores else ("accuracy",)
    for column in ("model", "size", "params", "p50 ms", "p99 ms", *quality):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for row in report.rows:
        measured = (
            [f"{scores[row.role][k]:.4g}" for k in ("mae", "rmse", "r2")]
            if scores
            else [f"{100 * row.accuracy:.2f}%"]
        )
        table.add_row(
            row.role,
            f"{row.size_bytes / 1024:,.1f} KiB",
            f"{row.parameters:,}",
            f"{row.latency_p50_ms:.3f}",
            f"{row.latency_p99_ms:.3f}",
            *measured,
        )
    console.print(table)
    console.print(report.summary())


def print_profile_summary(release: "ProfileRelease") -> None:
    """One row per profile (its chosen artifact) and the one-line summary."""
    table = Table(title=f"per-profile release {release.out_dir}")
    columns = ("profile", "model", "engine", "precision", "size", "p50 ms", "p99 ms",
               "memory MB", "accuracy", "agreement")  # fmt: skip
    for column in columns:
        left = column in ("profile", "model", "engine", "precision")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for name in release.profiles:
        row = release.chosen_row(name)
        table.add_row(
            name,
            row.model,
            row.engine,
            row.precision,
            f"{row.size_bytes / 1024:,.1f} KiB",
            f"{float(row.latency_p50_ms or 0):.3f}",
            f"{float(row.latency_p99_ms or 0):.3f}",
            f"{float(row.peak_memory_mb or 0):.1f}",
            f"{100 * float(row.accuracy or 0):.2f}%",
            f"{100 * float(row.agreement or 0):.2f}%",
        )
    console.print(table)
    measured = sum(r.status == "measured" for r in release.candidates)
    console.print(
        f"{len(release.candidates)} candidates ({measured} measured); "
        f"report {release.out_dir / 'report.md'}",
        soft_wrap=True,
    )
    console.print(release.summary(), soft_wrap=True)
