"""A per-profile build's artifacts on disk: ``profiles/<name>/`` holds the chosen model file and
its ``artifact.json`` (format ``fedge-profile-artifact``, see :mod:`fedge.builder.tiers`).

:mod:`fedge.builder.tiers` writes them; the publisher (:mod:`fedge.release.publish`) and the
operator's CLI read them with :func:`read_profile_artifacts` before signing or uploading. Light
on purpose: the standard library only, no torch and no engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.errors import ReleaseError
from fedge.files import file_sha256

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_JSON",
    "PROFILES_DIR",
    "ProfileArtifact",
    "is_profile_artifact",
    "read_profile_artifacts",
]

#: The ``format`` of an ``artifact.json``.
ARTIFACT_FORMAT = "fedge-profile-artifact"
ARTIFACT_JSON = "artifact.json"
#: The folder of a per-profile build that holds one folder per device profile.
PROFILES_DIR = "profiles"


@dataclass(frozen=True)
class ProfileArtifact:
    """A profile's chosen artifact as written under ``profiles/<name>/``: the model file and
    what its ``artifact.json`` says about it, read and checked once."""

    profile: str
    path: Path
    #: The engine the artifact is for, and ``fp32`` or ``int8``.
    engine: str
    precision: str
    #: Hex sha256 and size in bytes of the artifact file, as built.
    sha256: str
    length: int
    #: Measured figures: accuracy, agreement, latency p50/p99, peak memory, ...
    figures: dict[str, Any]
    #: The whole ``artifact.json`` (what a release's report carries).
    document: dict[str, Any]


def is_profile_artifact(document: dict[str, Any]) -> bool:
    """Whether ``document`` is a per-profile build's ``artifact.json``."""
    return document.get("format") == ARTIFACT_FORMAT


def read_profile_artifacts(build: Path | str) -> list[ProfileArtifact]:
    """Every profile artifact of the per-profile build in ``build``, each file checked against
    the length and sha256 it was measured with (:class:`ReleaseError` if one differs or is
    missing, or if ``build`` has no ``profiles/`` folder)."""
    root = Path(build) / PROFILES_DIR
    if not root.is_dir():
        raise ReleaseError(f"{build} is not a per-profile release (no {PROFILES_DIR}/ folder)")
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = folder / ARTIFACT_JSON
        try:
            document = json.loads(meta.read_text())
            artifact = _artifact_of(folder, document)
        except KeyError as err:
            raise ReleaseError(f"{meta} is not a fedge profile artifact: no {err}") from err
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise ReleaseError(f"{meta} is not a fedge profile artifact: {err}") from err
        path = artifact.path
        if (
            not path.is_file()
            or path.stat().st_size != artifact.length
            or file_sha256(path) != artifact.sha256
        ):
            raise ReleaseError(f"{path} is not the artifact {meta} describes (length or sha256)")
        found.append(artifact)
    return found


def _artifact_of(folder: Path, document: dict[str, Any]) -> ProfileArtifact:
    if not is_profile_artifact(document):
        raise ValueError(f"no 'format': {ARTIFACT_FORMAT!r}")
    return ProfileArtifact(
        profile=str((document.get("profile") or {}).get("name", folder.name)),
        path=folder / str(document["file"]),
        engine=str(document["runtime"]),
        precision=str(document["precision"]),
        sha256=str(document["sha256"]),
        length=int(document["length"]),
        figures=dict(document["figures"]),
        document=document,
    )
