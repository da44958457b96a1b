"""fedge.records.copy_fields: a record built from another's same-named fields."""

from dataclasses import dataclass

import pytest

from fedge.coordinator.state import RoundRow
from fedge.records import copy_fields, field_names
from fedge.release.telemetry import DeviceTelemetry
from fedge.v1 import control_pb2 as pb


@dataclass(frozen=True)
class _Round:
    server_round: int
    accuracy: float
    epsilon: float | None
    unrelated: str = "not a field of the target"


def test_copies_same_named_fields_and_takes_given_ones() -> None:
    telemetry = DeviceTelemetry("dev-1", 3, 10, 1, 2.5, 9.0, 2, "2026-01-01")
    proto = copy_fields(pb.DeviceTelemetry, telemetry, requests=11)
    assert (proto.device_id, proto.active_version, proto.requests, proto.errors) == (
        "dev-1",
        3,
        11,
        1,
    )
    assert (proto.latency_p50_ms, proto.latency_p99_ms) == (2.5, 9.0)
    back = copy_fields(DeviceTelemetry, proto, swaps=2, updated="now")
    assert back == DeviceTelemetry("dev-1", 3, 11, 1, 2.5, 9.0, 2, "now")


def test_none_leaves_a_protobuf_field_unset() -> None:
    summary = copy_fields(pb.RoundSummary, _Round(4, 0.5, None))
    assert summary.server_round == 4 and summary.accuracy == 0.5
    assert not summary.HasField("epsilon")
    assert copy_fields(pb.RoundSummary, _Round(4, 0.5, 1.25)).epsilon == 1.25


def test_table_rows_have_their_columns_as_fields() -> None:
    assert {"server_round", "accuracy", "epsilon", "drops_json"} <= set(field_names(RoundRow))
    row = copy_fields(RoundRow, _Round(2, 0.75, None), run_id=7)
    assert (row.run_id, row.server_round, row.accuracy, row.epsilon) == (7, 2, 0.75, None)


def test_a_class_of_no_known_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="not a dataclass"):
        copy_fields(dict, _Round(1, 0.0, None))
