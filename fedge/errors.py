"""The fedge exception hierarchy, each class with the gRPC status code it is answered with.

Every error fedge raises on purpose derives from :class:`FedgeError`. The CLI prints its message
on one line (exit code 2); a server's one interceptor answers it with the class's ``status`` (a
``grpc.StatusCode`` name, kept as text so this leaf module imports nothing).
"""

from typing import ClassVar

__all__ = [
    "AddressInUseError",
    "ArtifactNotFoundError",
    "AuthenticationError",
    "BusyError",
    "ConfigError",
    "DataError",
    "DuplicateResultError",
    "FedgeError",
    "InvalidUpdateError",
    "MissingExtraError",
    "NotFoundError",
    "PayloadError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PkiError",
    "PrivacyBudgetExceededError",
    "ReleaseError",
    "ReleaseNotFoundError",
    "RoundFailedError",
    "StaleResultError",
    "TokenError",
    "UnavailableError",
    "VerificationError",
]


class FedgeError(Exception):
    """Base class of all errors fedge raises deliberately."""

    status: ClassVar[str] = "FAILED_PRECONDITION"


class ConfigError(FedgeError, ValueError):
    """A configuration value is invalid; the message names the option and the value."""

    status = "INVALID_ARGUMENT"

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option = option
        self.value = value
        self.reason = reason
        super().__init__(f"{option}: {value!r} {reason}")


class MissingExtraError(FedgeError):
    """A command needs a part of fedge this install lacks; the message names the extra."""

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs fedge[{extra}]: pip install 'fedge[{extra}]'")


class DataError(FedgeError):
    """A dataset cannot be loaded: a missing file, a malformed file, too few samples."""

    status = "INVALID_ARGUMENT"


class InvalidUpdateError(FedgeError):
    """A client's update cannot be aggregated (NaN/Inf, wrong names, shapes or dtypes)."""

    status = "INVALID_ARGUMENT"


class PrivacyBudgetExceededError(FedgeError):
    """Training would spend more privacy than the configured budget allows."""


class RoundFailedError(FedgeError):
    """Fewer devices than the run's minimum gave a usable update in a round.

    ``drops`` says, per device, why its update is missing: ``{"node_id", "reason"}`` and, where
    the runtime knows it, ``"device_id"``.
    """

    def __init__(
        self, message: str, *, server_round: int = 0, drops: list[dict[str, object]] | None = None
    ) -> None:
        self.server_round = server_round
        self.drops = list(drops or [])
        super().__init__(message)


class AddressInUseError(FedgeError):
    """Another process already listens on the address a server was asked to bind."""


class AuthenticationError(FedgeError):
    """The caller has no identity this server knows (no, unknown or expired certificate)."""

    status = "UNAUTHENTICATED"


class PermissionDeniedError(FedgeError):
    """The caller is known but not allowed: a revoked device, a device on the control API."""

    status = "PERMISSION_DENIED"


class TokenError(FedgeError):
    """An enrolment token that is malformed, unknown, used or expired."""

    status = "UNAUTHENTICATED"


class PkiError(FedgeError):
    """A certificate, key or CSR is missing, malformed or not acceptable."""

    status = "INVALID_ARGUMENT"


class PayloadError(FedgeError):
    """A request or streamed payload is malformed: framing, size, hash or protobuf content."""

    status = "INVALID_ARGUMENT"


class PayloadTooLargeError(PayloadError):
    """A streamed payload is larger than the receiver accepts."""

    status = "RESOURCE_EXHAUSTED"


class BusyError(FedgeError):
    """The server is at a capacity limit; the caller should retry after ``retry_after_ms``."""

    status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        self.retry_after_ms = retry_after_ms
        super().__init__(message)


class UnavailableError(FedgeError):
    """What was asked needs a server this one cannot reach now (a site gateway's cloud link is
    down): retry later."""

    status = "UNAVAILABLE"


class NotFoundError(FedgeError):
    """A device, run or other named thing that does not exist."""

    status = "NOT_FOUND"


class StaleResultError(FedgeError):
    """A result for a task that is unknown, for another run or round, or no longer awaited."""


class DuplicateResultError(FedgeError):
    """A second result for a task that already has one."""

    status = "ALREADY_EXISTS"


class ReleaseError(FedgeError):
    """A model release cannot be published, promoted, rolled back or served."""

    status = "INVALID_ARGUMENT"


class ReleaseNotFoundError(ReleaseError, LookupError):
    """No release with that version (or no release at all) exists in the store."""

    status = "NOT_FOUND"


class ArtifactNotFoundError(ReleaseError, LookupError):
    """No artifact with that content address exists in the store."""

    status = "NOT_FOUND"


class VerificationError(ReleaseError):
    """A manifest or an artifact failed verification; ``reason`` names the check that failed.

    Reasons: ``signature``, ``key``, ``malformed``, ``expired``, ``not-newer``, ``profile``,
    ``length``, ``sha256``, ``rejected``.
    """

    status = "FAILED_PRECONDITION"

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
