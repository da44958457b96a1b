"""Errors of the coordinator's run loop (service errors live in :mod:`fedge.errors`)."""

from fedge.errors import FedgeError

__all__ = ["RunStoppedError"]


class RunStoppedError(FedgeError):
    """The operator stopped the run."""
