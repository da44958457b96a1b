"""Releases built by ``fedge simulate``: ``release/`` after the run, ``release-round-K/`` before.

The round loop checkpoints the global model to ``out/model.pt`` before it calls ``on_round``,
so a release every K rounds is built from that file inside the callback.
"""

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedge.app.config import RunConfig
from fedge.app.results import RoundRecord, RunResult, write_results
from fedge.builder.distill import DistillSettings
from fedge.builder.pipeline import (
    ARTIFACTS,
    ReleaseSettings,
    build_release,
    default_student,
    replace_dir,
)
from fedge.builder.report import ReleaseReport, read_report
from fedge.errors import StudentShapeError
from fedge.models import model_info

__all__ = [
    "RELEASE_DIR",
    "ReleaseCallback",
    "check_release_config",
    "release_after_run",
    "release_dir_for_round",
    "with_round_releases",
]

RELEASE_DIR = "release"

#: Told ``(directory, None)`` when a release build starts and ``(directory, report)`` when done.
ReleaseCallback = Callable[[Path, ReleaseReport | None], None]


def release_dir_for_round(out_dir: Path, server_round: int) -> Path:
    """Where the release of round ``server_round`` goes (``release-round-0005``)."""
    return out_dir / f"release-round-{server_round:04d}"


def check_release_config(config: RunConfig) -> None:
    """Fail before training when the configured student cannot take the dataset's input."""
    if not (config.release or config.release_every) or config.student is None:
        return
    from fedge.data import get_dataset

    dataset = get_dataset(config.dataset, data_dir=config.data_dir)
    if model_info(config.student).images_only and not dataset.is_image:
        raise StudentShapeError(
            f"student {config.student!r} needs image input, dataset {config.dataset} has "
            f"samples of shape {dataset.input_shape}; use {default_student(dataset)}"
        )


def with_round_releases(
    config: RunConfig,
    out_dir: Path | None,
    on_round: Callable[[RoundRecord], None] | None,
    on_release: ReleaseCallback | None = None,
) -> Callable[[RoundRecord], None] | None:
    """``on_round`` extended to build a release every ``config.release_every`` rounds."""
    every = config.release_every
    if out_dir is None or every <= 0:
        return on_round

    def hook(record: RoundRecord) -> None:
        if on_round is not None:
            on_round(record)
        if record.round % every == 0:
            target = release_dir_for_round(out_dir, record.round)
            report = _build(config, out_dir / "model.pt", target, on_release)
            record.extra["release"] = _summary(target, report)

    return hook


def release_after_run(
    config: RunConfig,
    out_dir: Path | None,
    result: RunResult,
    on_release: ReleaseCallback | None = None,
) -> ReleaseReport | None:
    """Build ``out/release/`` from the final ``model.pt`` and note it in ``results.json``."""
    if out_dir is None or not config.release or not result.rounds:
        return None
    target = out_dir / RELEASE_DIR
    last = release_dir_for_round(out_dir, result.rounds[-1].round)
    if config.release_every and result.rounds[-1].round % config.release_every == 0:
        # The last round's release was built from the same final model.pt: copy, don't rebuild.
        report = _copy(last, target, on_release)
    else:
        report = _build(config, out_dir / "model.pt", target, on_release)
    result.notes["release"] = _summary(target, report)
    write_results(out_dir, result)
    return report


def _build(
    config: RunConfig, checkpoint: Path, target: Path, on_release: ReleaseCallback | None
) -> ReleaseReport:
    if on_release is not None:
        on_release(target, None)
    report = build_release(
        checkpoint=checkpoint,
        out_dir=target,
        student=config.student,
        data_dir=config.data_dir,
        settings=ReleaseSettings(distill=_distill_settings(config), seed=config.seed),
    )
    if on_release is not None:
        on_release(target, report)
    return report


def _distill_settings(config: RunConfig) -> DistillSettings:
    if config.release_epochs is None:
        return DistillSettings(seed=config.seed)
    return DistillSettings(seed=config.seed, epochs=config.release_epochs)


def _copy(source: Path, target: Path, on_release: ReleaseCallback | None) -> ReleaseReport:
    work = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, work)
        replace_dir(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = read_report(target / ARTIFACTS["json"])
    if on_release is not None:
        on_release(target, report)
    return report


def _summary(target: Path, report: ReleaseReport) -> dict[str, Any]:
    return {
        "dir": str(target),
        "model": report.student_int8.file,
        "sha256": report.student_int8.sha256,
        "accuracy": report.student_int8.accuracy,
        "size_x": round(report.size_ratio, 2),
        "latency_p50_x": round(report.latency_ratio, 2),
        "accuracy_delta_points": round(report.accuracy_delta_points, 2),
    }
