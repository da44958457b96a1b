"""Errors of the release subsystem (signing, store, rollout, device verification).

Each carries a short machine-readable ``reason`` so a device can report *why* it refused a
release and the operator sees it in ``fedge release status``.
"""

from fedge.errors import FedgeError

__all__ = [
    "ArtifactNotFoundError",
    "ReleaseError",
    "ReleaseNotFoundError",
    "VerificationError",
]


class ReleaseError(FedgeError):
    """Base class of release errors."""


class ReleaseNotFoundError(ReleaseError, LookupError):
    """No release with that version (or no release at all) exists in the store."""


class ArtifactNotFoundError(ReleaseError, LookupError):
    """No artifact with that content address exists in the store."""


class VerificationError(ReleaseError):
    """A manifest or an artifact failed verification; ``reason`` names the check that failed.

    Reasons: ``signature``, ``key``, ``malformed``, ``expired``, ``not-newer``, ``profile``,
    ``length``, ``sha256``, ``rejected``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
