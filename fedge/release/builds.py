"""A release build on disk (``model.onnx`` beside its ``report.json``), as ``fedge release
build`` and a finished run write it: where the model is, and what of its report travels.

Light on purpose (no store, no ONNX): the operator's CLI reads a build before uploading it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedge.builder.artifact import PROFILES_DIR, ProfileArtifact, read_profile_artifacts
from fedge.errors import ReleaseError
from fedge.files import file_sha256
from fedge.protocol.drift import DriftReference

__all__ = [
    "profile_figures",
    "release_figures",
    "resolve_build",
    "resolve_profile_build",
]

_ROLES = ("teacher", "student_fp32", "student_int8")
_METRICS = ("size_bytes", "accuracy", "latency_p50_ms", "latency_p99_ms")


def release_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a build's ``report.json`` that travel in the manifest."""
    figures: dict[str, Any] = {}
    for key in ("dataset", "num_classes"):
        if key in report:
            figures[key] = report[key]
    reference = DriftReference.from_dict(report.get("drift"))
    if reference is not None:  # devices bin their inputs by it; the hub compares with it
        figures["drift"] = reference.to_dict()
    if isinstance(report.get("preprocessing"), dict):  # signed: how a device reads raw inputs
        figures["preprocessing"] = report["preprocessing"]
    for role in _ROLES:
        row = report.get(role)
        if isinstance(row, dict):
            for metric in _METRICS:
                if isinstance(row.get(metric), int | float):
                    figures[f"{role}.{metric}"] = row[metric]
    return figures


def resolve_build(model: Path) -> tuple[Path, dict[str, Any]]:
    """``model.onnx`` and its build report (empty if none) from a file or a build directory."""
    onnx_path = model / "model.onnx" if model.is_dir() else model
    if not onnx_path.is_file():
        raise ReleaseError(
            f"model: {onnx_path} does not exist (give model.onnx or a `release build` dir)"
        )
    report_path = onnx_path.with_name("report.json")
    if not report_path.is_file():
        return onnx_path, {}
    try:
        report = json.loads(report_path.read_text())
    except ValueError as err:
        raise ReleaseError(f"report: {report_path} is not valid JSON: {err}") from err
    built = (report.get("student_int8") or {}).get("sha256")
    if built and built != file_sha256(onnx_path):
        raise ReleaseError(
            f"model: {onnx_path} is not the model {report_path} was measured on (sha256 differs)"
        )
    return onnx_path, report


_PROFILE_KEYS = ("runtime", "precision", "architecture", "model", "dataset", "num_classes")


def profile_figures(document: dict[str, Any]) -> dict[str, Any]:
    """What of an ``artifact.json`` travels in the manifest: the engine a device must have,
    what the model is, and what the build measured (the device measures it again)."""
    figures = {key: document[key] for key in _PROFILE_KEYS if key in document}
    if isinstance(document.get("preprocessing"), dict):  # signed: how a device reads raw inputs
        figures["preprocessing"] = document["preprocessing"]
    for key, value in (document.get("figures") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            figures[f"built.{key}"] = value
    return figures


def resolve_profile_build(build: Path) -> list[ProfileArtifact]:
    """Every ``profiles/<name>/`` artifact of a per-profile build directory (empty when
    ``build`` is not one), each checked against the length and SHA-256 it was measured with."""
    if not (build / PROFILES_DIR).is_dir():
        return []
    return read_profile_artifacts(build)
