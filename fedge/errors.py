"""The fedge exception hierarchy, each class with the gRPC status code it is answered with.

Every error fedge raises on purpose derives from :class:`FedgeError`. The CLI prints its message
on one line (exit code 2); a server's one interceptor answers it with the class's ``status`` (a
``grpc.StatusCode`` name, kept as text so this leaf module imports nothing).
"""

from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "AddressInUseError",
    "ArtifactNotFoundError",
    "AuthenticationError",
    "BudgetError",
    "BusyError",
    "CalibrationError",
    "ConfigError",
    "DataError",
    "DuplicateResultError",
    "ExportError",
    "FedgeError",
    "InvalidUpdateError",
    "MeasurementError",
    "MissingExtraError",
    "NotFoundError",
    "PayloadError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PkiError",
    "PrivacyBudgetExceededError",
    "QuantizationError",
    "ReleaseError",
    "ReleaseNotFoundError",
    "RoundFailedError",
    "StaleResultError",
    "StudentShapeError",
    "TargetUnavailableError",
    "TokenError",
    "UnavailableError",
    "VerificationError",
    "first_line",
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
    """A command needs a part of fedge this install lacks; the message names the extra.

    With ``missing``, the message names the Python packages that cannot be imported; an empty
    ``extra`` means fedge itself depends on them (reinstall fedge). ``hint`` is appended in
    parentheses (another way to go on without the extra).
    """

    def __init__(
        self, what: str, extra: str, *, missing: Sequence[str] = (), hint: str = ""
    ) -> None:
        self.extra = extra
        self.missing = tuple(missing)
        install = f"pip install 'fedge[{extra}]'" if extra else "reinstall fedge"
        if self.missing:
            message = (
                f"{what} needs the Python package(s) {', '.join(self.missing)}, "
                f"which are not installed: {install}"
            )
        else:
            message = f"{what} needs fedge[{extra}]: {install}"
        super().__init__(f"{message} ({hint})" if hint else message)


class TargetUnavailableError(MissingExtraError):
    """A release target's engine package is not installed (the message names the extra)."""


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
    """A model release cannot be built, published, promoted, rolled back or served; subclasses
    say which input is at fault."""

    status = "INVALID_ARGUMENT"


class CalibrationError(ReleaseError):
    """The calibration (transfer) set is empty or does not fit the model's input."""


class StudentShapeError(ReleaseError):
    """A student's input or output shape does not fit the teacher's."""


class ExportError(ReleaseError):
    """A model cannot be exported to ONNX, or the export disagrees with torch."""

    status = "FAILED_PRECONDITION"


class QuantizationError(ReleaseError):
    """ONNX Runtime cannot quantize the model (an op it has no int8 kernel for, say)."""

    status = "FAILED_PRECONDITION"


class BudgetError(ReleaseError):
    """No candidate model fits a device profile's budget (the message names the closest one)."""

    status = "FAILED_PRECONDITION"


class MeasurementError(ReleaseError):
    """An artifact could not be loaded or run in its engine while being measured."""

    status = "FAILED_PRECONDITION"


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


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (CLI errors are one line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
