"""``build_release``: checkpoint → distilled student → ONNX fp32 → int8 → report, atomically.

The release is built in a temporary directory beside ``out_dir`` and renamed into place only
when every step succeeded, so a failure never leaves a half-written release (and an existing
release at ``out_dir`` is replaced only by a complete one).
"""

import copy
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedge.app.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from fedge.app.regression import is_regression_dataset
from fedge.builder.anomaly import anomaly_teacher, is_anomaly_checkpoint
from fedge.builder.distill import DistillResult, DistillSettings, get_distiller
from fedge.builder.export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx, verify_export
from fedge.builder.onnx_eval import accuracy, measure_latency, predict
from fedge.builder.quantize import quantize_int8
from fedge.builder.regression import regression_report
from fedge.builder.report import (
    ModelRow,
    ReleaseReport,
    write_chart,
    write_markdown,
    write_report_json,
)
from fedge.builder.transfer import TransferSet, public_transfer_set
from fedge.data import Dataset, get_dataset
from fedge.errors import CalibrationError, ConfigError, ReleaseError, StudentShapeError, first_line
from fedge.files import file_sha256
from fedge.log import logger
from fedge.models import get_model, list_models
from fedge.protocol.drift import reference_from

__all__ = [
    "ARTIFACTS",
    "ReleaseSettings",
    "build_release",
    "build_student",
    "build_teacher",
    "default_student",
    "feature_names",
    "raw_input_spec",
    "replace_dir",
    "resolve_checkpoint",
    "transfer_data",
]

#: File names inside a release directory.
ARTIFACTS = {
    "int8": "model.onnx",
    "fp32": "model_fp32.onnx",
    "teacher": "teacher.onnx",
    "json": "report.json",
    "markdown": "report.md",
    "chart": "report.png",
}


@dataclass(frozen=True)
class ReleaseSettings:
    """How a release is built; the defaults fit the default ``fedge simulate``."""

    distill: DistillSettings = field(default_factory=DistillSettings)
    distiller: str = "kd"
    latency_runs: int = 300
    #: Seeds the student's initial weights (``distill.seed`` seeds augmentation and batches).
    seed: int = 0


def default_student(dataset: Dataset) -> str:
    """The student for a dataset: ``student-cnn`` for images, ``student-mlp`` otherwise."""
    return "student-cnn" if dataset.is_image else "student-mlp"


def transfer_data(dataset: Dataset) -> TransferSet:
    """The data distillation and calibration see: the public split only, never ``x_train``."""
    return public_transfer_set(dataset)


def build_release(
    *,
    checkpoint: Path | str | Checkpoint,
    out_dir: Path | str,
    student: str | nn.Module | None = None,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    transfer: TransferSet | None = None,
    settings: ReleaseSettings | None = None,
) -> ReleaseReport:
    """Distil, export, quantize and report the global model in ``checkpoint`` into ``out_dir``.

    ``student`` is a registered student name (default: by dataset, see
    :func:`default_student`) or an ``nn.Module``. ``dataset`` defaults to the checkpoint's;
    ``transfer`` defaults to its public split (:func:`transfer_data`).
    """
    start = time.perf_counter()
    settings = settings or ReleaseSettings()
    out_dir = Path(out_dir)
    ckpt, ckpt_path = resolve_checkpoint(checkpoint)
    if dataset is None:
        dataset = get_dataset(ckpt.dataset, data_dir=data_dir)
    teacher = build_teacher(ckpt, dataset)
    if is_anomaly_checkpoint(ckpt):  # the autoencoder itself, with its threshold in the graph
        ckpt, teacher = anomaly_teacher(ckpt, teacher, dataset)
        student = copy.deepcopy(teacher)
        settings = replace(settings, distiller="copy")
    if is_regression_dataset(dataset):  # one output: MSE to the teacher's, no softmax
        settings = replace(settings, distiller="mse")
    transfer = transfer if transfer is not None else transfer_data(dataset)
    transfer.check_fits(ckpt.input_shape)
    student_name, student_model = build_student(student, dataset, ckpt, seed=settings.seed)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReleaseError(f"release output {out_dir} exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        report = _build(
            work, ckpt, ckpt_path, dataset, teacher, student_name, student_model, transfer, settings
        )
        report = _finish(report, start)
        _write_reports(work, report)
        replace_dir(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("release written to %s: %s", out_dir, report.summary())
    return report


def resolve_checkpoint(checkpoint: Path | str | Checkpoint) -> tuple[Checkpoint, str]:
    """The checkpoint (read from a path when given one) and where it came from."""
    if isinstance(checkpoint, Checkpoint):
        return checkpoint, "<in memory>"
    return load_checkpoint(checkpoint), str(checkpoint)


def build_teacher(ckpt: Checkpoint, dataset: Dataset) -> nn.Module:
    """The checkpoint's model with its weights; errors name a dataset or weights mismatch."""
    if tuple(dataset.input_shape) != tuple(ckpt.input_shape):
        raise CalibrationError(
            f"dataset {dataset.name} has samples of shape {dataset.input_shape}, the "
            f"checkpoint's {ckpt.model} takes {ckpt.input_shape}"
        )
    try:
        return ckpt.build_model()
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"checkpoint of {ckpt.model!r} does not load into that model: {first_line(err)}"
        ) from err


def build_student(
    student: str | nn.Module | None, dataset: Dataset, ckpt: Checkpoint, *, seed: int
) -> tuple[str, nn.Module]:
    """Build the student and check it maps a teacher-shaped batch to (B, num_classes)."""
    torch.manual_seed(seed)  # the student's initial weights
    if isinstance(student, nn.Module):
        name, model = type(student).__name__, student
    else:
        name = student or default_student(dataset)
        students = list_models(students_only=True)
        if name not in students:
            raise ConfigError("--student", name, f"is not one of: {', '.join(students)}")
        try:
            model = get_model(name, input_shape=ckpt.input_shape, num_classes=ckpt.num_classes)
        except ValueError as err:
            reason = first_line(err)
            raise StudentShapeError(f"student {name!r} does not fit the teacher: {reason}") from err
    probe = torch.zeros((2, *ckpt.input_shape))
    try:
        with torch.no_grad():
            out = model.eval()(probe)
    except RuntimeError as err:
        raise StudentShapeError(
            f"student {name!r} cannot take the teacher's input (B, {_dims(ckpt.input_shape)}): "
            f"{first_line(err)}"
        ) from err
    if tuple(out.shape) != (2, ckpt.num_classes):
        raise StudentShapeError(
            f"student {name!r} maps a batch of 2 to shape {tuple(out.shape)}, the teacher to "
            f"(2, {ckpt.num_classes})"
        )
    return name, model


def _build(
    work: Path,
    ckpt: Checkpoint,
    ckpt_path: str,
    dataset: Dataset,
    teacher: nn.Module,
    student_name: str,
    student: nn.Module,
    transfer: TransferSet,
    settings: ReleaseSettings,
) -> ReleaseReport:
    paths = {key: work / name for key, name in ARTIFACTS.items()}
    distilled = get_distiller(settings.distiller).distill(
        teacher=teacher, student=student, transfer=transfer, settings=settings.distill
    )
    export_onnx(teacher, paths["teacher"], input_shape=ckpt.input_shape)
    export_onnx(distilled.student, paths["fp32"], input_shape=ckpt.input_shape, features=True)
    check = verify_export(distilled.student, paths["fp32"], transfer.x)
    quantize_int8(paths["fp32"], paths["int8"], transfer.x)
    files = [paths["teacher"], paths["fp32"], paths["int8"]]
    latencies = measure_latency(files, dataset.x_test[0], runs=settings.latency_runs)
    roles = ["teacher fp32", "student fp32", "student int8"]
    scores = regression_report(files, roles, dataset) if is_regression_dataset(dataset) else {}
    # A regression model's accuracy is its R², as in the run's rounds.
    accuracies = (
        [scores[role]["r2"] for role in roles]
        if scores
        else [accuracy(path, dataset.x_test, dataset.y_test) for path in files]
    )
    params = [_parameters(teacher), _parameters(distilled.student)]
    arch = [ckpt.model, student_name, student_name]
    precisions = ["fp32", "fp32", "int8"]
    rows = [
        ModelRow(
            role=roles[i],
            file=path.name,
            architecture=arch[i],
            precision=precisions[i],
            size_bytes=path.stat().st_size,
            parameters=params[min(i, 1)],
            latency_p50_ms=latencies[i].p50_ms,
            latency_p99_ms=latencies[i].p99_ms,
            accuracy=accuracies[i],
            sha256=file_sha256(path),
        )
        for i, path in enumerate(files)
    ]
    return ReleaseReport(
        teacher=rows[0],
        student_fp32=rows[1],
        student_int8=rows[2],
        dataset=dataset.name,
        num_classes=ckpt.num_classes,
        input_name=INPUT_NAME,
        input_shape=["batch", *ckpt.input_shape],
        output_name=OUTPUT_NAME,
        output_shape=["batch", ckpt.num_classes],
        opset=OPSET,
        checkpoint={
            "path": ckpt_path,
            "model": ckpt.model,
            "server_round": ckpt.server_round,
            "dataset": ckpt.dataset,
        },
        transfer={"source": transfer.source, "samples": len(transfer.x)},
        distillation=_distill_summary(distilled, settings.distill),
        export_check={
            "samples": check.samples,
            "max_abs_diff": check.max_abs_diff,
            "atol": check.atol,
            "rtol": check.rtol,
            "argmax_agreement": check.argmax_agreement,
        },
        test_samples=len(dataset.y_test),
        latency_runs=settings.latency_runs,
        build_seconds=0.0,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        # What the shipped (int8) model sees and predicts on the transfer set: devices report
        # their own windows, and the coordinator compares them with this (drift).
        extra={
            "drift": reference_from(
                transfer.x, predict(paths["int8"], transfer.x), features=feature_names(dataset)
            ).to_dict(),
            **raw_input_spec(dataset),
            **({"regression": scores} if scores else {}),
        },
    )


def feature_names(dataset: Dataset) -> list[str]:
    """The names of the model input's features (a table's columns, a series' channels), for
    drift per feature; empty when the data names none."""
    if dataset.preprocessing is None:
        return []
    from fedge.data.preprocessing import Preprocessing

    return Preprocessing.from_json(dataset.preprocessing).feature_names


def raw_input_spec(dataset: Dataset) -> dict[str, Any]:
    """What a device needs to take raw inputs (a CSV row, a window, an image) and name its
    answers: the dataset's preprocessing spec and class names, when it has them."""
    spec: dict[str, Any] = {}
    if dataset.preprocessing is not None:
        spec["preprocessing"] = dataset.preprocessing
    if dataset.label_names:
        spec["labels"] = list(dataset.label_names)
    return spec


def _finish(report: ReleaseReport, start: float) -> ReleaseReport:
    return replace(report, build_seconds=round(time.perf_counter() - start, 2))


def _write_reports(work: Path, report: ReleaseReport) -> None:
    write_chart(work / ARTIFACTS["chart"], report)
    write_markdown(work / ARTIFACTS["markdown"], report, chart=ARTIFACTS["chart"])
    write_report_json(work / ARTIFACTS["json"], report)


def replace_dir(work: Path, out_dir: Path) -> None:
    """Move the finished release into place; an existing one is replaced only now."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
    work.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _distill_summary(result: DistillResult, settings: DistillSettings) -> dict[str, Any]:
    return {
        "method": result.method,
        "epochs": result.epochs,
        "temperature": settings.temperature,
        "alpha": settings.alpha,
        "augmented_copies": settings.copies if settings.augment is not None else 0,
        "samples_seen": result.samples_seen,
        "final_loss": result.final_loss,
        "teacher_agreement": result.teacher_agreement,
        "seconds": round(result.seconds, 2),
    }


def _parameters(model: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters()))


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)
