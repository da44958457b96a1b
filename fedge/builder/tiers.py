"""Per-profile release builds: the most accurate model that fits each kind of device.

``build_profile_release(checkpoint=..., out_dir=..., profiles=[...])`` generates candidate
models from the checkpoint's global model (the teacher itself, structurally pruned copies of it
fine-tuned on the transfer set, and distilled students), exports each to every engine and
precision some profile asks for, measures every artifact on this machine in a fresh process
(file size, batch-1 p50/p99 on one thread, the session's peak memory, test accuracy and top-1
agreement with the torch model it came from), and picks per profile the most accurate artifact
inside its budget whose agreement is at least ``min_agreement`` (99.5%). Ties go to the
profile's preferred engine, then to the smaller file. When nothing fits a profile, the build
fails with :class:`~fedge.errors.BudgetError` naming the closest candidate and what it
missed by, and writes nothing.

Candidates that cannot fit any profile asking for them are not built: an artifact holds at least
one byte per int8 weight and four per fp32 weight, so e.g. the teacher's 6.6 MB of weights are
never converted for a 16 KiB camera. They appear in the report as ``skipped``.

Output layout (built in a temporary directory beside ``out_dir`` and renamed into place only
when every profile has its artifact, like :func:`~fedge.builder.pipeline.build_release`)::

    out_dir/
      profiles/<profile>/model<ext>      the chosen artifact (.onnx, .openvino.zip, .tflite)
      profiles/<profile>/artifact.json   what a publisher signs, see below
      report.json                        every candidate, per-profile choices, settings
      report.md                          the same for people
      report.png                         accuracy against size and p99, per profile

``artifact.json`` (format ``fedge-profile-artifact``, version 1) holds ``profile`` (name,
tier, engines, precisions, budget, dataset), ``engine``, ``precision``, ``file``,
``sha256``, ``length``, ``architecture``, ``source`` (teacher, pruned or distilled),
``parameters``, ``dataset``, ``num_classes``, ``input``/``output`` shapes, ``figures``
(accuracy, agreement, latency_p50_ms, latency_p99_ms, peak_memory_mb, load_ms, test_samples,
latency_runs and measured_on: measured on the build machine at batch 1 on one thread),
``teacher`` (architecture, parameters, accuracy) and ``created_at``. The LiteRT artifact has a
fixed batch of 1 and, at int8, int8 input and output tensors; the OpenVINO artifact is a zip
of the IR. :func:`fedge.inference.runners.load_runner` runs each kind exactly as it was measured
here.
A publisher reads all of them with :func:`fedge.builder.artifact.read_profile_artifacts`,
which checks each file's sha256 and length, and signs one manifest per profile.
"""

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedge.app.checkpoint import Checkpoint
from fedge.app.regression import is_regression_dataset
from fedge.builder.anomaly import anomaly_teacher, is_anomaly_checkpoint
from fedge.builder.artifact import ARTIFACT_FORMAT, ARTIFACT_JSON, PROFILES_DIR
from fedge.builder.distill import DistillSettings, get_distiller
from fedge.builder.pipeline import (
    build_student,
    build_teacher,
    raw_input_spec,
    replace_dir,
    resolve_checkpoint,
    transfer_data,
)
from fedge.builder.prune import PruneSettings, parameter_count, prune_and_finetune
from fedge.builder.regression import regression_profiles, regression_scores
from fedge.builder.targets import Target, get_target
from fedge.builder.targets.base import importable
from fedge.builder.targets.probe import measure_artifact
from fedge.builder.tier_results import (
    FORMAT_VERSION,
    TIER_REPORT_FORMAT,
    CandidateRow,
    ProfileRelease,
    build_machine,
)
from fedge.builder.tiers_report import write_tier_chart, write_tier_markdown
from fedge.builder.transfer import TransferSet
from fedge.data import Dataset, get_dataset
from fedge.errors import BudgetError, ConfigError, MissingExtraError, ReleaseError, first_line
from fedge.files import file_sha256
from fedge.inference.profiles import PRECISIONS, BudgetMiss, DeviceProfile
from fedge.log import logger
from fedge.models import list_models, model_info

__all__ = [
    "MIN_AGREEMENT",
    "TIER_REPORT_FORMAT",
    "BuildStep",
    "CandidateRow",
    "ProfileRelease",
    "Progress",
    "TierSettings",
    "build_profile_release",
    "choose_candidate",
]

#: An artifact's top-1 predictions must match its torch model's on this share of the test set.
MIN_AGREEMENT = 0.995
#: Bytes per weight at least, by precision (a lower bound of the artifact's size).
_WEIGHT_BYTES = {"fp32": 4, "int8": 1}


@dataclass(frozen=True)
class BuildStep:
    """A step of a per-profile build, told as it starts.

    First the candidate models are trained (``stage`` ``prune`` or ``distil``; ``phase``
    ``model``), then each artifact is exported and measured (``export``, then ``measure`` with
    the same ``index``; ``phase`` ``artifact``). ``index`` of ``count`` counts within the phase,
    from 1; ``detail`` names the model or the artifact (``student-tiny int8 on litert``).
    """

    stage: str
    detail: str
    index: int
    count: int

    @property
    def phase(self) -> str:
        """``model`` while candidates are trained, ``artifact`` while artifacts are built."""
        return "model" if self.stage in ("prune", "distil") else "artifact"

    def __str__(self) -> str:
        return f"{self.phase} {self.index}/{self.count}: {self.stage} {self.detail}"


#: Told each :class:`BuildStep` as the build goes (the CLI draws a progress bar from them).
Progress = Callable[[BuildStep], None]


@dataclass(frozen=True)
class TierSettings:
    """Which candidates are generated and how they are measured; defaults fit ``fedge simulate``.

    ``students`` ``None`` means every registered student that takes the dataset's input.
    ``prune_ratios`` are the pruning levels of the teacher (``()``: no pruning).
    """

    students: tuple[str, ...] | None = None
    prune_ratios: tuple[float, ...] = (0.6, 0.9)
    include_teacher: bool = True
    distill: DistillSettings = field(default_factory=DistillSettings)
    finetune: DistillSettings = field(default_factory=DistillSettings)
    distiller: str = "kd"
    latency_runs: int = 300
    warmup: int = 30
    min_agreement: float = MIN_AGREEMENT
    #: Seeds every student's initial weights (``distill.seed`` seeds augmentation and batches).
    seed: int = 0

    def __post_init__(self) -> None:
        PruneSettings(ratios=self.prune_ratios)  # validates the ratios
        if self.latency_runs < 1 or self.warmup < 0:
            raise ValueError("latency_runs must be >= 1 and warmup >= 0")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement {self.min_agreement!r} must be in [0, 1]")


@dataclass
class _Model:
    """A torch candidate model and where it came from."""

    id: str
    architecture: str
    source: str
    module: nn.Module
    detail: dict[str, Any]

    @property
    def parameters(self) -> int:
        return parameter_count(self.module)


def build_profile_release(
    *,
    checkpoint: Path | str | Checkpoint,
    out_dir: Path | str,
    profiles: Sequence[DeviceProfile],
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    transfer: TransferSet | None = None,
    settings: TierSettings | None = None,
    progress: Progress | None = None,
) -> ProfileRelease:
    """Build one artifact per profile in ``profiles`` from ``checkpoint`` into ``out_dir``.

    Every input is checked before any model is trained: profiles must serve the checkpoint's
    dataset, their engines must be registered and installed, students must exist and fit.
    """
    start = time.perf_counter()
    settings = settings or TierSettings()
    out_dir = Path(out_dir)
    say = progress or (lambda step: logger.info("%s", step))
    ckpt, ckpt_path = resolve_checkpoint(checkpoint)
    chosen_profiles = _check_profiles(profiles, ckpt)
    targets = _check_targets(chosen_profiles)
    if dataset is None:
        dataset = get_dataset(ckpt.dataset, data_dir=data_dir)
    teacher = build_teacher(ckpt, dataset)
    if is_anomaly_checkpoint(ckpt):  # the autoencoder itself: neither pruned nor distilled
        ckpt, teacher = anomaly_teacher(ckpt, teacher, dataset)
        settings = replace(settings, students=(), prune_ratios=(), include_teacher=True)
    if is_regression_dataset(dataset):
        chosen_profiles = regression_profiles(chosen_profiles)
        settings = replace(settings, distiller="mse")
    transfer = transfer if transfer is not None else transfer_data(dataset)
    transfer.check_fits(ckpt.input_shape)
    students = _check_students(settings, dataset, ckpt)
    if settings.prune_ratios:
        _check_pruning()
    if out_dir.exists() and not out_dir.is_dir():
        raise ReleaseError(f"release output {out_dir} exists and is not a directory")

    models = _candidate_models(teacher, ckpt, dataset, transfer, students, settings, say)
    with tempfile.TemporaryDirectory(prefix="fedge-tiers-") as scratch:
        rows, paths = _build_candidates(
            models, chosen_profiles, targets, transfer, dataset, settings, Path(scratch), say
        )
        chosen = {
            p.name: choose_candidate(p, rows, settings.min_agreement) for p in chosen_profiles
        }
        teacher_accuracy = _torch_accuracy(teacher, dataset)
        release = ProfileRelease(
            out_dir=out_dir,
            candidates=rows,
            chosen={name: row.id for name, row in chosen.items()},
            teacher={
                "architecture": ckpt.model,
                "parameters": parameter_count(teacher),
                "accuracy": teacher_accuracy,
                "checkpoint": ckpt_path,
                "server_round": ckpt.server_round,
            },
            profiles={p.name: p for p in chosen_profiles},
            dataset=dataset.name,
            num_classes=ckpt.num_classes,
            input_shape=["batch", *ckpt.input_shape],
            settings=_settings_summary(settings, students, transfer, dataset),
            build_seconds=0.0,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            model_details={
                m.id: {
                    "architecture": m.architecture,
                    "source": m.source,
                    "parameters": m.parameters,
                    **m.detail,
                }
                for m in models
            },
            models={m.id: m.module for m in models},
            raw_input=raw_input_spec(dataset),
        )
        release = replace(release, build_seconds=round(time.perf_counter() - start, 2))
        _write(release, paths, out_dir)
    logger.info("profile release written to %s: %s", out_dir, release.summary())
    return release


def _check_profiles(profiles: Sequence[DeviceProfile], ckpt: Checkpoint) -> list[DeviceProfile]:
    if not profiles:
        raise ConfigError("--profile", [], "is empty; name at least one device profile")
    names = [p.name for p in profiles]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("--profile", name, "is given twice")
    for profile in profiles:
        if not profile.serves(ckpt.dataset):
            raise ConfigError(
                "--profile",
                profile.name,
                f"is for {profile.data.dataset} models; the checkpoint's {ckpt.model} is for "
                f"{ckpt.dataset}",
            )
    return list(profiles)


def _check_targets(profiles: list[DeviceProfile]) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for profile in profiles:
        for engine in profile.engines:
            if engine not in targets:
                target = get_target(engine)
                target.require()
                targets[engine] = target
    return targets


def _check_students(settings: TierSettings, dataset: Dataset, ckpt: Checkpoint) -> list[str]:
    available = list_models(students_only=True)
    if settings.students is None:
        return [s for s in available if dataset.is_image or not model_info(s).images_only]
    for name in settings.students:
        if name not in available:
            raise ConfigError("--student", name, f"is not one of: {', '.join(available)}")
        build_student(name, dataset, ckpt, seed=0)  # StudentShapeError if it does not fit
    return list(dict.fromkeys(settings.students))


def _check_pruning() -> None:
    if not importable("torch_pruning"):
        raise MissingExtraError(
            "pruning",
            "server",
            missing=["torch_pruning"],
            hint="or build without pruning: --no-prune",
        )


def _candidate_models(
    teacher: nn.Module,
    ckpt: Checkpoint,
    dataset: Dataset,
    transfer: TransferSet,
    students: list[str],
    settings: TierSettings,
    say: Progress,
) -> list[_Model]:
    models = []
    if settings.include_teacher:
        models.append(_Model("teacher", ckpt.model, "teacher", teacher, {}))
    prune = PruneSettings(
        ratios=settings.prune_ratios, finetune=settings.finetune, distiller=settings.distiller
    )
    count = len(settings.prune_ratios) + len(students)
    for index, ratio in enumerate(settings.prune_ratios, 1):
        say(BuildStep("prune", f"{ckpt.model} at ratio {ratio:g}", index, count))
        result = prune_and_finetune(teacher, transfer=transfer, ratio=ratio, settings=prune)
        models.append(
            _Model(
                f"{ckpt.model}-pruned-{ratio:g}",
                ckpt.model,
                "pruned",
                result.model,
                {
                    "ratio": ratio,
                    "parameters_before": result.parameters_before,
                    "reduction_x": round(result.reduction, 2),
                    "transfer_agreement": result.finetune.teacher_agreement,
                },
            )
        )
    distiller = get_distiller(settings.distiller)
    for index, name in enumerate(students, len(settings.prune_ratios) + 1):
        say(BuildStep("distil", name, index, count))
        _, module = build_student(name, dataset, ckpt, seed=settings.seed)
        distilled = distiller.distill(
            teacher=teacher, student=module, transfer=transfer, settings=settings.distill
        )
        models.append(
            _Model(
                name,
                name,
                "distilled",
                distilled.student.eval(),
                {"transfer_agreement": distilled.teacher_agreement},
            )
        )
    return models


def _build_candidates(
    models: list[_Model],
    profiles: list[DeviceProfile],
    targets: dict[str, Target],
    transfer: TransferSet,
    dataset: Dataset,
    settings: TierSettings,
    scratch: Path,
    say: Progress,
) -> tuple[list[CandidateRow], dict[str, Path]]:
    """Every candidate's row, and the artifact file of each measured one."""
    rows: list[CandidateRow] = []
    paths: dict[str, Path] = {}
    references = {m.id: _torch_predictions(m.module, dataset) for m in models}
    # Engine by engine: OpenVINO's telemetry forks a process, which is safest before
    # litert-torch has started JAX's threads.
    order = sorted(targets, key=lambda r: (r == "litert", r))
    jobs = [
        (engine, model, precision, askers)
        for engine in order
        for model in models
        for precision in PRECISIONS
        if (askers := [p for p in profiles if engine in p.engines and precision in p.precisions])
    ]
    count = sum(_too_big(model, precision, askers) is None for _, model, precision, askers in jobs)
    index = 0
    for engine, model, precision, askers in jobs:
        index += _too_big(model, precision, askers) is None
        row, path = _candidate(
            model,
            engine,
            precision,
            askers,
            targets[engine],
            transfer,
            dataset,
            settings,
            scratch,
            references[model.id],
            _teller(say, index, count),
        )
        rows.append(row)
        if path is not None:
            paths[row.id] = path
    return rows, paths


def _teller(say: Progress, index: int, count: int) -> Callable[[str, str], None]:
    """Tells ``say`` the stages of artifact ``index`` of ``count``."""
    return lambda stage, detail: say(BuildStep(stage, detail, index, count))


def _too_big(model: _Model, precision: str, askers: list[DeviceProfile]) -> str | None:
    """Why no profile asking for this candidate can take it, from its weights alone (``None``:
    it is worth building)."""
    floor = model.parameters * _WEIGHT_BYTES[precision]
    if all(floor > p.budget.max_model_bytes for p in askers):
        return f"its weights alone take {floor:,} bytes, more than any budget asking for it"
    return None


def _candidate(
    model: _Model,
    engine: str,
    precision: str,
    askers: list[DeviceProfile],
    target: Target,
    transfer: TransferSet,
    dataset: Dataset,
    settings: TierSettings,
    scratch: Path,
    reference: np.ndarray,
    say: Callable[[str, str], None],
) -> tuple[CandidateRow, Path | None]:
    base = CandidateRow(
        id=f"{model.id}:{engine}:{precision}",
        model=model.id,
        architecture=model.architecture,
        source=model.source,
        engine=engine,
        precision=precision,
        parameters=model.parameters,
        status="skipped",
    )
    note = _too_big(model, precision, askers)
    if note is not None:
        floor = model.parameters * _WEIGHT_BYTES[precision]
        return replace(base, size_bytes=floor, note=note), None
    say("export", base.label)
    work = scratch / model.id
    work.mkdir(exist_ok=True)
    try:
        artifact = target.export(model.module, transfer, work, precision)
        say("measure", base.label)
        measured = measure_artifact(
            engine,
            artifact.path,
            dataset.x_test,
            sample=dataset.x_test[0],
            runs=settings.latency_runs,
            warmup=settings.warmup,
        )
    except ReleaseError as err:
        logger.warning("candidate %s failed: %s", base.label, first_line(err))
        return replace(base, status="failed", note=first_line(err)), None
    if is_regression_dataset(dataset):  # R² on the test split and against torch's outputs
        accuracy, agreement = regression_scores(measured.logits, reference, dataset)
    else:
        predictions = measured.logits.argmax(1)
        accuracy = float((predictions == dataset.y_test).mean())
        agreement = float((predictions == reference).mean())
    row = replace(
        base,
        status="measured",
        size_bytes=artifact.path.stat().st_size,
        sha256=file_sha256(artifact.path),
        accuracy=accuracy,
        agreement=agreement,
        latency_p50_ms=measured.latency_p50_ms,
        latency_p99_ms=measured.latency_p99_ms,
        peak_memory_mb=measured.peak_memory_mb,
        load_ms=measured.load_ms,
    )
    return row, artifact.path


def choose_candidate(
    profile: DeviceProfile, rows: Sequence[CandidateRow], min_agreement: float = MIN_AGREEMENT
) -> CandidateRow:
    """The most accurate candidate that fits ``profile`` and agrees with torch on at least
    ``min_agreement`` of the test set; ties go to the profile's preferred engine, then to the
    smaller file. :class:`BudgetError` naming the closest candidate if none fits."""
    mine = [r for r in rows if r.engine in profile.engines and r.precision in profile.precisions]
    fitting = [r for r in mine if r.status == "measured" and not r.misses(profile, min_agreement)]
    if fitting:
        return max(
            fitting,
            key=lambda r: (r.accuracy, -profile.engines.index(r.engine), -r.size_bytes),
        )
    considered = [r for r in mine if r.status != "failed"]
    if not considered:
        reasons = "; ".join(f"{r.label}: {r.note}" for r in mine) or "no candidate was built"
        raise BudgetError(f"profile {profile.name!r}: every candidate failed ({reasons})")
    closest = min(
        considered,
        key=lambda r: (sum(m.relative for m in r.misses(profile, min_agreement)), r.size_bytes),
    )
    misses = ", ".join(_describe(m) for m in closest.misses(profile, min_agreement))
    raise BudgetError(
        f"profile {profile.name!r}: no candidate fits its budget ({profile.budget.describe()}, "
        f"agreement >= {100 * min_agreement:.1f}%); closest: {closest.label} misses {misses}"
    )


def _describe(miss: BudgetMiss) -> str:
    if miss.field == "agreement":
        return (
            f"agreement with torch by {100 * (miss.limit - miss.value):.2f} points "
            f"({100 * miss.value:.2f}% < {100 * miss.limit:.1f}%)"
        )
    return str(miss)


@torch.no_grad()
def _torch_predictions(model: nn.Module, dataset: Dataset) -> np.ndarray:
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(dataset.x_test, dtype=np.float32))
    if is_regression_dataset(dataset):  # the outputs themselves: there is no class to pick
        return torch.cat([model(x[i : i + 512]).reshape(-1) for i in range(0, len(x), 512)]).numpy()
    return torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)]).numpy()


def _torch_accuracy(model: nn.Module, dataset: Dataset) -> float:
    predictions = _torch_predictions(model, dataset)
    if is_regression_dataset(dataset):
        return regression_scores(predictions, predictions, dataset)[0]
    return float((predictions == dataset.y_test).mean())


def _settings_summary(
    settings: TierSettings, students: list[str], transfer: TransferSet, dataset: Dataset
) -> dict[str, Any]:
    return {
        "test_samples": len(dataset.y_test),
        "students": students,
        "prune_ratios": list(settings.prune_ratios),
        "include_teacher": settings.include_teacher,
        "distill_epochs": settings.distill.epochs,
        "finetune_epochs": settings.finetune.epochs,
        "distiller": settings.distiller,
        "latency_runs": settings.latency_runs,
        "min_agreement": settings.min_agreement,
        "seed": settings.seed,
        "transfer": {"source": transfer.source, "samples": len(transfer.x)},
    }


def _write(release: ProfileRelease, paths: dict[str, Path], out_dir: Path) -> None:
    """Write the release in a temporary directory and move it into place whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        for name, profile in release.profiles.items():
            row = release.chosen_row(name)
            folder = work / PROFILES_DIR / name
            folder.mkdir(parents=True)
            target = release.artifact_path(name)
            shutil.copyfile(paths[row.id], folder / target.name)
            if file_sha256(folder / target.name) != row.sha256:
                raise ReleaseError(f"{row.label} changed on disk after it was measured")
            document = _artifact_document(release, profile, row, target.name)
            (folder / ARTIFACT_JSON).write_text(json.dumps(document, indent=2) + "\n")
        (work / "report.json").write_text(json.dumps(release.to_dict(), indent=2) + "\n")
        write_tier_chart(work / "report.png", release)
        write_tier_markdown(work / "report.md", release, chart="report.png")
        replace_dir(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _artifact_document(
    release: ProfileRelease, profile: DeviceProfile, row: CandidateRow, file: str
) -> dict[str, Any]:
    batch: int | str = 1 if row.engine == "litert" else "batch"
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": release.created_at,
        "profile": profile.to_dict(),
        "runtime": row.engine,
        "precision": row.precision,
        "file": file,
        "sha256": row.sha256,
        "length": row.size_bytes,
        "architecture": row.architecture,
        "model": row.model,
        "source": row.source,
        "parameters": row.parameters,
        "dataset": release.dataset,
        "num_classes": release.num_classes,
        "input": {"shape": [batch, *release.input_shape[1:]], "dtype": "float32"},
        "output": {"shape": [batch, release.num_classes], "dtype": "float32"},
        "figures": {
            "accuracy": row.accuracy,
            "agreement": row.agreement,
            "latency_p50_ms": row.latency_p50_ms,
            "latency_p99_ms": row.latency_p99_ms,
            "peak_memory_mb": row.peak_memory_mb,
            "load_ms": row.load_ms,
            "test_samples": release.settings["test_samples"],
            "latency_runs": release.settings["latency_runs"],
            "measured_on": build_machine(),
        },
        "teacher": {k: release.teacher[k] for k in ("architecture", "parameters", "accuracy")},
        **release.raw_input,
    }
