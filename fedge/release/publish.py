"""Publish a model built by the release pipeline (``model.onnx`` + ``report.json``).

Used by ``fedge release publish`` and by any pipeline step that wants to ship what it built to
a canary percentage straight away.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedge.errors import ReleaseError
from fedge.files import file_sha256
from fedge.protocol.drift import DriftReference
from fedge.protocol.manifest import SignedManifest
from fedge.release.onnx_info import describe_onnx
from fedge.release.store import ReleaseStore

__all__ = ["publish_artifact", "publish_build", "release_figures", "resolve_build"]

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


def publish_artifact(
    store: ReleaseStore,
    *,
    sha256: str,
    report: dict[str, Any],
    percent: int,
    name: str = "",
    profile: str = "cpu-small",
    labels: tuple[str, ...] = (),
) -> SignedManifest:
    """Sign the stored ONNX artifact ``sha256`` as the next release of ``store``, rolled out to
    ``percent`` of the devices; ``report`` is its build's ``report.json`` (may be empty)."""
    path = store.artifacts.path(sha256)
    store.artifacts.length(sha256)  # a clear error for an artifact that was never uploaded
    built = (report.get("student_int8") or {}).get("sha256")
    if built and built != sha256:
        raise ReleaseError(
            f"model: {sha256[:12]} is not the model its report was measured on (sha256 differs)"
        )
    label_list = labels or tuple(str(i) for i in range(int(report.get("num_classes", 0))))
    inputs, outputs = describe_onnx(path)
    return store.publish(
        sha256=sha256,
        name=name or str(report.get("dataset") or "model"),
        profile=profile,
        percent=percent,
        inputs=inputs,
        outputs=outputs,
        labels=label_list,
        report=release_figures(report),
    )


def publish_build(
    store: ReleaseStore,
    model: Path,
    *,
    percent: int,
    name: str = "",
    profile: str = "cpu-small",
    labels: tuple[str, ...] = (),
) -> SignedManifest:
    """Store ``model`` (``model.onnx`` or a build directory) and publish it (see
    :func:`publish_artifact`)."""
    onnx_path, report = resolve_build(model)
    sha, _ = store.add_artifact(onnx_path)
    return publish_artifact(
        store,
        sha256=sha,
        report=report,
        percent=percent,
        name=name or str(report.get("dataset") or onnx_path.parent.name or "model"),
        profile=profile,
        labels=labels,
    )
