"""Checks every client reply before aggregation, on every runtime.

A training reply is kept only if it carries exactly one ArrayRecord whose tensor names,
shapes and dtypes equal the global model's, whose values are all finite, and a MetricRecord
with a positive ``num-examples``. Anything else is dropped with a reason, and the round goes
on with the other clients.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord

from fedge.app.arrays import array_values
from fedge.errors import PayloadError

__all__ = [
    "DroppedReply",
    "arrays_problem",
    "metrics_problem",
    "refuse_invalid_update",
    "validate_evaluate_replies",
    "validate_train_replies",
]


@dataclass(frozen=True)
class DroppedReply:
    """A device whose reply was not aggregated (or never came), and why.

    ``device_id`` names the device where the runtime knows more than its node id.
    """

    node_id: int
    reason: str
    device_id: str = ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (``device_id`` only when known)."""
        data = asdict(self)
        if not self.device_id:
            del data["device_id"]
        return data


def validate_train_replies(
    replies: Iterable[Message], reference: ArrayRecord
) -> tuple[list[Message], list[DroppedReply]]:
    """Split training replies into those fit to aggregate and those dropped (with reasons)."""
    kept: list[Message] = []
    dropped: list[DroppedReply] = []
    for msg in replies:
        reason = _error_reason(msg) or _metrics_problem(msg) or _arrays_problem(msg, reference)
        if reason:
            dropped.append(DroppedReply(int(msg.metadata.src_node_id), reason))
        else:
            kept.append(msg)
    return kept, dropped


def refuse_invalid_update(
    reply: Message, *, message_type: str, reference: ArrayRecord | None
) -> None:
    """Raise :class:`~fedge.errors.PayloadError` for a device's training reply that the round
    would drop (a reply that reports an error is a valid answer, not bad input): the check a
    server makes as the reply arrives, before it completes the device's task."""
    if reply.has_error() or message_type != MessageType.TRAIN or reference is None:
        return
    _, dropped = validate_train_replies([reply], reference)
    if dropped:
        raise PayloadError(f"update refused: {dropped[0].reason}")


def validate_evaluate_replies(
    replies: Iterable[Message],
) -> tuple[list[Message], list[DroppedReply]]:
    """Split evaluation replies into usable ones and dropped ones (with reasons)."""
    kept: list[Message] = []
    dropped: list[DroppedReply] = []
    for msg in replies:
        reason = _error_reason(msg) or _metrics_problem(msg)
        if reason:
            dropped.append(DroppedReply(int(msg.metadata.src_node_id), reason))
        else:
            kept.append(msg)
    return kept, dropped


def _error_reason(msg: Message) -> str | None:
    if msg.has_error():
        return f"client error: {msg.error.reason}"
    return None


def _metrics_problem(msg: Message) -> str | None:
    records = list(msg.content.metric_records.values())
    if len(records) != 1:
        return f"expected one MetricRecord, got {len(records)}"
    return metrics_problem(records[0])


def metrics_problem(record: MetricRecord) -> str | None:
    """Why ``record`` is no usable reply metric record (a positive scalar ``num-examples``,
    every value finite), or ``None``."""
    num_examples = record.get("num-examples")
    if isinstance(num_examples, list) or num_examples is None:
        return "MetricRecord has no scalar 'num-examples'"
    if not np.isfinite(num_examples) or num_examples <= 0:
        return f"'num-examples' is {num_examples}, must be a positive number"
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        if not all(np.isfinite(v) for v in values):
            return f"metric {key!r} is not finite"
    return None


def _arrays_problem(msg: Message, reference: ArrayRecord) -> str | None:
    records = list(msg.content.array_records.values())
    if len(records) != 1:
        return f"expected one ArrayRecord, got {len(records)}"
    return arrays_problem(records[0], reference)


def arrays_problem(arrays: ArrayRecord, reference: ArrayRecord) -> str | None:
    """Why ``arrays`` cannot be aggregated with ``reference`` (tensor names, shapes, dtypes,
    values that do not decode or are not finite), or ``None``."""
    missing = sorted(set(reference) - set(arrays))
    unexpected = sorted(set(arrays) - set(reference))
    if missing or unexpected:
        return f"tensor names differ: missing {missing}, unexpected {unexpected}"
    for name, ref in reference.items():
        got = arrays[name]
        if tuple(got.shape) != tuple(ref.shape):
            return f"tensor {name!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
        if got.dtype != ref.dtype:
            return f"tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}"
        try:
            values = array_values(got)  # no copy: only read here
        except (ValueError, TypeError) as err:
            return f"tensor {name!r} cannot be decoded: {err}"
        if values.shape != tuple(ref.shape):
            return f"tensor {name!r} decodes to shape {values.shape}, expected {tuple(ref.shape)}"
        if not _all_finite(values):
            return f"tensor {name!r} has NaN or Inf values"
    return None


def _all_finite(values: np.ndarray) -> bool:
    # Any NaN or Inf makes the sum NaN or Inf, and summing needs no mask as large as the
    # update (which isfinite().all() allocates, and faults in, for every reply). A finite
    # update can still overflow the sum, so a non-finite sum is confirmed element by element.
    if values.dtype.kind not in "fc":
        return True
    return bool(np.isfinite(values.sum())) or bool(np.isfinite(values).all())
