"""Errors of the release pipeline: each names what is wrong with the input it was given."""

from fedge.errors import FedgeError

__all__ = [
    "BudgetError",
    "CalibrationError",
    "ExportError",
    "MeasurementError",
    "MissingExtraError",
    "QuantizationError",
    "ReleaseError",
    "StudentShapeError",
    "first_line",
]


class ReleaseError(FedgeError):
    """A release cannot be built; subclasses say which input is at fault."""


class CalibrationError(ReleaseError):
    """The calibration (transfer) set is empty or does not fit the model's input."""


class StudentShapeError(ReleaseError):
    """A student's input or output shape does not fit the teacher's."""


class ExportError(ReleaseError):
    """A model cannot be exported to ONNX, or the export disagrees with torch."""


class QuantizationError(ReleaseError):
    """ONNX Runtime cannot quantize the model (an op it has no int8 kernel for, say)."""


class BudgetError(ReleaseError):
    """No candidate model fits a device profile's budget (the message names the closest one)."""


class MissingExtraError(ReleaseError):
    """An optional package is not installed; the message names the ``fedge[...]`` extra."""


class MeasurementError(ReleaseError):
    """An artifact could not be loaded or run in its runtime while being measured."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (CLI errors are one line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
