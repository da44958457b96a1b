"""Publish a model built by the release pipeline (``model.onnx`` + ``report.json``) as the
coordinator's next signed release: an uploaded artifact, or a run's own build directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedge.builder.artifact import is_profile_artifact
from fedge.errors import ReleaseError
from fedge.protocol.manifest import SignedManifest, TensorSpec
from fedge.release.builds import profile_figures, release_figures, resolve_build
from fedge.release.onnx_info import describe_onnx
from fedge.release.store import ReleaseStore

__all__ = ["publish_artifact", "publish_build"]


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
    per_profile = is_profile_artifact(report)
    built = (
        report.get("sha256") if per_profile else (report.get("student_int8") or {}).get("sha256")
    )
    if built and built != sha256:
        raise ReleaseError(
            f"model: {sha256[:12]} is not the model its report was measured on (sha256 differs)"
        )
    named = tuple(str(x) for x in report.get("labels") or ())
    label_list = labels or named or tuple(str(i) for i in range(int(report.get("num_classes", 0))))
    if per_profile:
        profile = str(report["profile"]["name"])
        inputs, outputs = _declared_specs(report, path)
        figures = profile_figures(report)
    else:
        inputs, outputs = describe_onnx(path)
        figures = release_figures(report)
    return store.publish(
        sha256=sha256,
        name=name or str(report.get("dataset") or "model"),
        profile=profile,
        percent=percent,
        inputs=inputs,
        outputs=outputs,
        labels=label_list,
        report=figures,
    )


def _declared_specs(
    document: dict[str, Any], path: Path
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The input and output of a per-profile artifact: read from the ONNX file itself, or, for
    the other engines, as ``artifact.json`` declares them (a device feeds them by position)."""
    if document.get("runtime") == "onnxruntime":
        return describe_onnx(path)

    def spec(name: str, part: dict[str, Any]) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else -1 for d in part.get("shape", []))
        return TensorSpec(name=name, dtype=str(part.get("dtype", "float32")), shape=shape)

    return (spec("input", document.get("input", {})),), (
        spec("logits", document.get("output", {})),
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
