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
    what its ``artifact.json`` says about it."""

    profile: str
    path: Path
    document: dict[str, Any]

    @property
    def engine(self) -> str:
        """The engine the artifact is for."""
        return str(self.document["runtime"])

    @property
    def precision(self) -> str:
        """``fp32`` or ``int8``."""
        return str(self.document["precision"])

    @property
    def sha256(self) -> str:
        """Hex sha256 of the artifact file, as built."""
        return str(self.document["sha256"])

    @property
    def length(self) -> int:
        """Size of the artifact file in bytes."""
        return int(self.document["length"])

    @property
    def figures(self) -> dict[str, Any]:
        """Measured figures: accuracy, agreement, latency p50/p99, peak memory, ..."""
        return dict(self.document["figures"])


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
            if not is_profile_artifact(document):
                raise ValueError(f"no 'format': {ARTIFACT_FORMAT!r}")
            path = folder / str(document["file"])
            length, digest = int(document["length"]), str(document["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ReleaseError(f"{meta} is not a fedge profile artifact: {err}") from err
        if not path.is_file() or path.stat().st_size != length or file_sha256(path) != digest:
            raise ReleaseError(f"{path} is not the artifact {meta} describes (length or sha256)")
        name = str((document.get("profile") or {}).get("name", folder.name))
        found.append(ProfileArtifact(profile=name, path=path, document=document))
    return found
