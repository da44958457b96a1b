"""Errors of the coordinator's services, and the gRPC status code each one maps to."""

import grpc

from fedge.coordinator.pki import PkiError
from fedge.coordinator.state import NotFoundError, TokenError
from fedge.errors import ConfigError, DataError, FedgeError, InvalidUpdateError

__all__ = [
    "AuthenticationError",
    "DuplicateResultError",
    "PayloadError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RoundFailedError",
    "RunStoppedError",
    "StaleResultError",
    "status_for",
]


class AuthenticationError(FedgeError):
    """The caller has no identity this coordinator knows (no, unknown or expired cert)."""


class PermissionDeniedError(FedgeError):
    """The caller is known but not allowed: a revoked device, a device on the control API."""


class PayloadError(FedgeError):
    """A streamed payload is malformed: bad framing, size, hash or protobuf content."""


class PayloadTooLargeError(PayloadError):
    """A streamed payload is larger than the coordinator accepts."""


class StaleResultError(FedgeError):
    """A result for a task that is unknown, for another run or round, or no longer awaited."""


class DuplicateResultError(FedgeError):
    """A second result for a task that already has one."""


class RoundFailedError(FedgeError):
    """Fewer devices than the configured minimum answered within the round timeout."""


class RunStoppedError(FedgeError):
    """The operator stopped the run."""


_CODES: tuple[tuple[type[FedgeError], grpc.StatusCode], ...] = (
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (TokenError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PayloadError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidUpdateError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (DataError, grpc.StatusCode.INVALID_ARGUMENT),
    (PkiError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (StaleResultError, grpc.StatusCode.FAILED_PRECONDITION),
    (DuplicateResultError, grpc.StatusCode.ALREADY_EXISTS),
)


def status_for(err: FedgeError) -> grpc.StatusCode:
    """The status code a servicer answers ``err`` with."""
    for cls, code in _CODES:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION
