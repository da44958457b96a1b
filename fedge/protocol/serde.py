"""Protobuf ⇄ domain types at the edges of the wire, and the one map of each enum.

Domain code works with dataclasses and plain strings (an install state is ``"installed"``, a run
state ``"running"``); protobuf messages and enum numbers exist only where a call goes on or comes
off the wire, through the functions here. :func:`message_to_json` shows a message to an operator
(the console's API, ``--json`` output) as plain JSON.
"""

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fedge.data.device import DataSummary
from fedge.errors import PayloadError
from fedge.protocol.manifest import SignedManifest
from fedge.v1 import control_pb2, fleet_pb2, hub_pb2

__all__ = [
    "DEVICE_STATES",
    "INSTALL_STATES",
    "RUN_STATES",
    "InstallReport",
    "data_summary_from_proto",
    "data_summary_to_proto",
    "device_state_from_proto",
    "device_state_to_proto",
    "install_state_from_proto",
    "install_state_to_proto",
    "manifest_response",
    "message_to_json",
    "run_state_from_proto",
    "run_state_to_proto",
    "signed_manifest_from_proto",
    "signed_manifest_to_proto",
]

INSTALL_STATES = ("offered", "downloading", "installed", "refused", "rolled_back", "failed")
RUN_STATES = ("queued", "running", "completed", "failed", "stopped")
DEVICE_STATES = ("idle", "training")


def _enum_map(prefix: str, names: tuple[str, ...], enum: object) -> dict[str, int]:
    value_of = enum.Value  # type: ignore[attr-defined]
    return {name: int(value_of(f"{prefix}_{name.upper()}")) for name in names}


_INSTALL_TO_PROTO = _enum_map("INSTALL_STATE", INSTALL_STATES, hub_pb2.InstallState)
_INSTALL_FROM_PROTO = {v: k for k, v in _INSTALL_TO_PROTO.items()}
_RUN_TO_PROTO = _enum_map("RUN_STATE", RUN_STATES, control_pb2.RunState)
_RUN_FROM_PROTO = {v: k for k, v in _RUN_TO_PROTO.items()}
_DEVICE_TO_PROTO = _enum_map("DEVICE_STATE", DEVICE_STATES, fleet_pb2.DeviceState)
_DEVICE_FROM_PROTO = {v: k for k, v in _DEVICE_TO_PROTO.items()}


@dataclass(frozen=True)
class InstallReport:
    """One install outcome of a device (``state`` is one of :data:`INSTALL_STATES`)."""

    version: int
    state: str
    reason: str
    active_version: int
    # What the device measured of the model (0 when the install stopped before measuring).
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    peak_memory_mb: float = 0.0


def install_state_to_proto(state: str) -> hub_pb2.InstallState.ValueType:
    """The ``InstallState`` number of ``state``."""
    return hub_pb2.InstallState.ValueType(_INSTALL_TO_PROTO[state])


def install_state_from_proto(value: int) -> str:
    """The name of an ``InstallState``; :class:`PayloadError` for an unknown number."""
    try:
        return _INSTALL_FROM_PROTO[value]
    except KeyError:
        raise PayloadError(f"unknown install state {value}") from None


def run_state_to_proto(state: str) -> control_pb2.RunState.ValueType:
    """The ``RunState`` number of ``state`` (``UNSPECIFIED`` for an unknown one)."""
    return control_pb2.RunState.ValueType(_RUN_TO_PROTO.get(state, 0))


def run_state_from_proto(value: int) -> str:
    """The name of a ``RunState`` (``"unspecified"`` for an unknown number)."""
    return _RUN_FROM_PROTO.get(value, "unspecified")


def device_state_to_proto(state: str) -> fleet_pb2.DeviceState.ValueType:
    """The ``DeviceState`` number of ``state``."""
    return fleet_pb2.DeviceState.ValueType(_DEVICE_TO_PROTO.get(state, 0))


def device_state_from_proto(value: int) -> str:
    """The name of a ``DeviceState`` (``"unspecified"`` for an unknown number)."""
    return _DEVICE_FROM_PROTO.get(value, "unspecified")


def signed_manifest_to_proto(signed: SignedManifest) -> hub_pb2.SignedManifest:
    """The wire form of a signed manifest."""
    return hub_pb2.SignedManifest(
        manifest_json=signed.manifest_json, signature=signed.signature, key_id=signed.key_id
    )


def manifest_response(signed: SignedManifest | None) -> hub_pb2.GetManifestResponse:
    """The answer to ``GetManifest``: ``signed``, or that no release is there for the device."""
    if signed is None:
        return hub_pb2.GetManifestResponse(available=False)
    return hub_pb2.GetManifestResponse(available=True, manifest=signed_manifest_to_proto(signed))


def signed_manifest_from_proto(proto: hub_pb2.SignedManifest) -> SignedManifest:
    """A signed manifest off the wire (not yet verified)."""
    return SignedManifest(bytes(proto.manifest_json), bytes(proto.signature), proto.key_id)


def data_summary_to_proto(summary: DataSummary | None) -> fleet_pb2.DataSummary | None:
    """The wire form of a device's data summary."""
    if summary is None:
        return None
    return fleet_pb2.DataSummary(
        dataset=summary.dataset,
        input_shape=list(summary.input_shape),
        num_classes=summary.num_classes,
        samples=summary.samples,
    )


def data_summary_from_proto(proto: fleet_pb2.DataSummary) -> DataSummary | None:
    """A device's data summary off the wire (``None`` when the device has no training data)."""
    if not proto.input_shape:
        return None
    return DataSummary(
        proto.dataset, tuple(int(d) for d in proto.input_shape), proto.num_classes, proto.samples
    )


def _enum_text(field: Any, number: int) -> str:
    enum = field.enum_type
    name = enum.values_by_number[number].name if number in enum.values_by_number else str(number)
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return name.removeprefix(prefix).lower()


def message_to_json(message: Message) -> dict[str, Any]:
    """A protobuf message as plain JSON: numbers stay numbers, enums become their short name
    (``RUN_STATE_RUNNING`` → ``running``), unset optional fields become ``null``, maps are
    sorted by key."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(sorted(value.items()))
        elif field.is_repeated:
            if field.message_type is not None:
                out[field.name] = [message_to_json(v) for v in value]
            elif field.enum_type is not None:
                out[field.name] = [_enum_text(field, v) for v in value]
            else:
                out[field.name] = list(value)
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        elif field.message_type is not None:
            out[field.name] = message_to_json(value)
        elif field.enum_type is not None:
            out[field.name] = _enum_text(field, value)
        elif field.type == FieldDescriptor.TYPE_BYTES:
            out[field.name] = bytes(value).decode("utf-8", "replace")
        else:
            out[field.name] = value
    return out
