"""The fedge exception hierarchy.

Every error fedge raises on purpose derives from :class:`FedgeError`, so the CLI can print a
one-line message and gRPC servicers can map each kind to a status code.
"""

__all__ = [
    "ConfigError",
    "DataError",
    "FedgeError",
    "InvalidUpdateError",
    "PrivacyBudgetExceededError",
]


class FedgeError(Exception):
    """Base class of all errors fedge raises deliberately."""


class ConfigError(FedgeError, ValueError):
    """A configuration value is invalid; the message names the option and the value."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option = option
        self.value = value
        self.reason = reason
        super().__init__(f"{option}: {value!r} {reason}")


class DataError(FedgeError):
    """A dataset cannot be loaded: a missing file, a malformed file, too few samples."""


class InvalidUpdateError(FedgeError):
    """A client's update cannot be aggregated (NaN/Inf, wrong names, shapes or dtypes)."""


class PrivacyBudgetExceededError(FedgeError):
    """Training would spend more privacy than the configured budget allows."""
