"""The release report: ``report.json`` (machine-readable), ``report.md`` and a chart.

Three rows, measured in one process on the same inputs: the teacher (fp32 ONNX), the student
(fp32 ONNX) and the student (int8 ONNX, the shipped ``model.onnx``). Each row gives file size,
parameters, batch-1 single-thread latency p50/p99 in ONNX Runtime and held-out test accuracy.
``report.json`` also carries what a release manifest needs: the sha256 and size of
``model.onnx`` and its input/output names and shapes.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedge.charts import pyplot, save_figure, write_markdown_report

__all__ = [
    "REPORT_FORMAT",
    "ModelRow",
    "ReleaseReport",
    "read_report",
    "write_chart",
    "write_markdown",
    "write_report_json",
]

REPORT_FORMAT = "fedge-release-report"
REPORT_VERSION = 1


@dataclass(frozen=True)
class ModelRow:
    """One model of the report."""

    role: str
    file: str
    architecture: str
    precision: str
    size_bytes: int
    parameters: int
    latency_p50_ms: float
    latency_p99_ms: float
    accuracy: float
    sha256: str


@dataclass(frozen=True)
class ReleaseReport:
    """Everything measured while building one release."""

    teacher: ModelRow
    student_fp32: ModelRow
    student_int8: ModelRow
    dataset: str
    num_classes: int
    input_name: str
    input_shape: list[int | str]
    output_name: str
    output_shape: list[int | str]
    opset: int
    checkpoint: dict[str, Any]
    transfer: dict[str, Any]
    distillation: dict[str, Any]
    export_check: dict[str, Any]
    test_samples: int
    latency_runs: int
    build_seconds: float
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[ModelRow]:
        """Teacher, student fp32, student int8."""
        return [self.teacher, self.student_fp32, self.student_int8]

    @property
    def size_ratio(self) -> float:
        """How many times smaller the int8 student's file is than the teacher's."""
        return self.teacher.size_bytes / self.student_int8.size_bytes

    @property
    def latency_ratio(self) -> float:
        """How many times faster (p50, batch 1, one thread) the int8 student is."""
        return self.teacher.latency_p50_ms / self.student_int8.latency_p50_ms

    @property
    def accuracy_delta_points(self) -> float:
        """int8 student accuracy minus teacher accuracy, in percentage points."""
        return 100.0 * (self.student_int8.accuracy - self.teacher.accuracy)

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` document."""
        return {
            "format": REPORT_FORMAT,
            "format_version": REPORT_VERSION,
            "created_at": self.created_at,
            "artifact": {
                "file": self.student_int8.file,
                "sha256": self.student_int8.sha256,
                "size_bytes": self.student_int8.size_bytes,
                "architecture": self.student_int8.architecture,
                "precision": self.student_int8.precision,
                "accuracy": self.student_int8.accuracy,
                "opset": self.opset,
                "input": {"name": self.input_name, "shape": self.input_shape, "dtype": "float32"},
                "output": {
                    "name": self.output_name,
                    "shape": self.output_shape,
                    "dtype": "float32",
                },
                "num_classes": self.num_classes,
                "dataset": self.dataset,
            },
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            # One object per model, keyed by role (what the release manifest reads).
            "teacher": asdict(self.teacher),
            "student_fp32": asdict(self.student_fp32),
            "student_int8": asdict(self.student_int8),
            "ratios": {
                "size_x": self.size_ratio,
                "latency_p50_x": self.latency_ratio,
                "accuracy_delta_points": self.accuracy_delta_points,
            },
            "checkpoint": self.checkpoint,
            "transfer": self.transfer,
            "distillation": self.distillation,
            "export_check": self.export_check,
            "measurement": {
                "test_samples": self.test_samples,
                "latency_runs": self.latency_runs,
                "latency": "batch 1, ONNX Runtime CPU, intra/inter-op threads = 1",
            },
            "build_seconds": self.build_seconds,
            **self.extra,
        }

    def summary(self) -> str:
        """A one-line summary of the release against its teacher (a regression task's: RMSE
        and MAE in the target's units, and R², which is also its rows' accuracy)."""
        scores = self.extra.get("regression")
        if scores:
            shipped, teacher = scores["student int8"], scores["teacher fp32"]
            return (
                f"int8 {self.student_int8.architecture}: {self.size_ratio:.0f}x smaller, "
                f"{self.latency_ratio:.1f}x faster (p50, batch 1, 1 thread), "
                f"RMSE {shipped['rmse']:.4g} vs teacher {teacher['rmse']:.4g}, MAE "
                f"{shipped['mae']:.4g} vs {teacher['mae']:.4g}, R² {shipped['r2']:.3f} vs "
                f"{teacher['r2']:.3f}"
            )
        return (
            f"int8 {self.student_int8.architecture}: {self.size_ratio:.0f}x smaller, "
            f"{self.latency_ratio:.1f}x faster (p50, batch 1, 1 thread), "
            f"accuracy {100 * self.student_int8.accuracy:.2f}% vs teacher "
            f"{100 * self.teacher.accuracy:.2f}% ({self.accuracy_delta_points:+.2f} points)"
        )


def write_report_json(path: Path, report: ReleaseReport) -> Path:
    """Write ``report.json``."""
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def read_report(path: Path) -> ReleaseReport:
    """Read a ``report.json`` back; :class:`ReleaseError` if it is not one."""
    from fedge.errors import ReleaseError

    try:
        data = json.loads(path.read_text())
        if data.get("format") != REPORT_FORMAT:
            raise ValueError(f"no 'format': {REPORT_FORMAT!r}")
        artifact, measurement = data["artifact"], data["measurement"]
        return ReleaseReport(
            teacher=ModelRow(**data["teacher"]),
            student_fp32=ModelRow(**data["student_fp32"]),
            student_int8=ModelRow(**data["student_int8"]),
            dataset=data["dataset"],
            num_classes=data["num_classes"],
            input_name=artifact["input"]["name"],
            input_shape=artifact["input"]["shape"],
            output_name=artifact["output"]["name"],
            output_shape=artifact["output"]["shape"],
            opset=artifact["opset"],
            checkpoint=data["checkpoint"],
            transfer=data["transfer"],
            distillation=data["distillation"],
            export_check=data["export_check"],
            test_samples=measurement["test_samples"],
            latency_runs=measurement["latency_runs"],
            build_seconds=data["build_seconds"],
            created_at=data["created_at"],
            extra={
                k: data[k] for k in ("drift", "preprocessing", "labels", "regression") if k in data
            },
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ReleaseError(f"{path} is not a fedge release report: {err}") from err


def write_markdown(path: Path, report: ReleaseReport, *, chart: str | None) -> Path:
    """Write the human-readable ``report.md``."""
    lines = [
        f"# fedge release: {report.student_int8.architecture} distilled from "
        f"{report.teacher.architecture}",
        "",
        f"Checkpoint `{report.checkpoint.get('path', '?')}` (round "
        f"{report.checkpoint.get('server_round', '?')}, dataset `{report.dataset}`). "
        f"Accuracy on the {report.test_samples}-sample held-out test set; latency at batch 1 "
        f"on one thread in ONNX Runtime over {report.latency_runs} interleaved runs.",
        "",
        "| model | file | size | parameters | p50 ms | p99 ms | accuracy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        lines.append(
            f"| {row.role} | `{row.file}` | {_human_size(row.size_bytes)} | {row.parameters:,} "
            f"| {row.latency_p50_ms:.3f} | {row.latency_p99_ms:.3f} | {100 * row.accuracy:.2f}% |"
        )
    lines += [
        "",
        f"**{report.summary()}.**",
        "",
        f"- Shipped artifact: `{report.student_int8.file}` (int8, QDQ, per-channel weights), "
        f"sha256 `{report.student_int8.sha256}`.",
        f"- Input `{report.input_name}` {report.input_shape} float32, output "
        f"`{report.output_name}` {report.output_shape}; ONNX opset {report.opset}.",
        f"- Transfer set: {report.transfer.get('source')} "
        f"({report.transfer.get('samples')} samples) plus augmented copies; no client data.",
        f"- Distillation: {report.distillation.get('method')}, "
        f"{report.distillation.get('epochs')} epochs, T={report.distillation.get('temperature')}, "
        f"teacher agreement on the transfer set "
        f"{100 * float(report.distillation.get('teacher_agreement', 0)):.1f}%.",
        f"- fp32 export vs torch: max |diff| {report.export_check.get('max_abs_diff', 0):.2e} "
        f"(tolerance atol {report.export_check.get('atol')} + rtol "
        f"{report.export_check.get('rtol')} x |torch|).",
    ]
    return write_markdown_report(path, lines, chart=chart, caption="size, latency and accuracy")


def write_chart(path: Path, report: ReleaseReport) -> Path:
    """A PNG with three bar charts: file size, p50 latency and accuracy of the three models."""
    plt = pyplot()

    labels = [row.role for row in report.rows]
    colors = ["#7f7f7f", "#1f77b4", "#2ca02c"]
    panels = [
        ("file size (KiB, log)", [r.size_bytes / 1024 for r in report.rows], "%.1f"),
        ("latency p50 (ms, batch 1, 1 thread)", [r.latency_p50_ms for r in report.rows], "%.3f"),
        ("test accuracy (%)", [100 * r.accuracy for r in report.rows], "%.2f"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, values, fmt) in zip(axes, panels, strict=True):
        bars = ax.bar(labels, values, color=colors)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        if title.startswith("file size"):
            ax.set_yscale("log")
        if title.startswith("test"):
            ax.set_ylim(max(0.0, min(values) - 5), 100)
        ax.bar_label(bars, fmt=fmt, fontsize=8)
    fig.suptitle(report.summary(), fontsize=9)
    return save_figure(fig, path)


def _human_size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.2f} MiB"
    return f"{size / 1024:.1f} KiB"
