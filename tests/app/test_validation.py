"""Update validation before aggregation: bad replies are dropped with a reason."""

import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict

from fedge.app.validation import (
    refuse_invalid_update,
    validate_evaluate_replies,
    validate_train_replies,
)
from fedge.errors import PayloadError
from fedge.runtime.local import set_server_identity


@pytest.fixture
def reference() -> ArrayRecord:
    return ArrayRecord(
        {
            "w": Array(np.zeros((3, 2), dtype=np.float32)),
            "b": Array(np.zeros(3, dtype=np.float32)),
        }
    )


def _reply(arrays: dict[str, np.ndarray], metrics: dict | None = None, node: int = 7) -> Message:
    set_server_identity(1)
    ins = Message(RecordDict(), dst_node_id=node, message_type="train")
    ins.metadata.__dict__["_message_id"] = f"m{node}"
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics if metrics is not None else {"num-examples": 10}),
        }
    )
    return Message(content, reply_to=ins)


def _good() -> dict[str, np.ndarray]:
    return {"w": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}


def test_a_well_formed_reply_is_kept(reference: ArrayRecord) -> None:
    kept, dropped = validate_train_replies([_reply(_good())], reference)
    assert len(kept) == 1 and dropped == []


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"w": np.full((3, 2), np.nan, np.float32), "b": np.ones(3, np.float32)}, "NaN or Inf"),
        ({"w": np.full((3, 2), np.inf, np.float32), "b": np.ones(3, np.float32)}, "NaN or Inf"),
        ({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}, "shape"),
        ({"w": np.ones((3, 2), np.float64), "b": np.ones(3, np.float32)}, "dtype"),
        ({"w": np.ones((3, 2), np.float32), "bias": np.ones(3, np.float32)}, "names differ"),
        ({"w": np.ones((3, 2), np.float32)}, "missing \\['b'\\]"),
    ],
)
def test_bad_tensors_are_dropped_with_a_reason(
    reference: ArrayRecord, arrays: dict[str, np.ndarray], reason: str
) -> None:
    good = _reply(_good(), node=1)
    bad = _reply(arrays, node=2)
    kept, dropped = validate_train_replies([good, bad], reference)
    assert kept == [good]
    assert len(dropped) == 1 and dropped[0].node_id == 2
    assert re.search(reason, dropped[0].reason), dropped[0].reason


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({}, "no scalar 'num-examples'"),
        ({"num-examples": 0}, "positive"),
        ({"num-examples": -5}, "positive"),
        ({"num-examples": 10, "train-loss": float("nan")}, "not finite"),
    ],
)
def test_bad_metrics_are_dropped(reference: ArrayRecord, metrics: dict, reason: str) -> None:
    kept, dropped = validate_train_replies([_reply(_good(), metrics)], reference)
    assert kept == [] and reason in dropped[0].reason


def test_error_replies_are_dropped_with_the_clients_reason(reference: ArrayRecord) -> None:
    set_server_identity(1)
    ins = Message(RecordDict(), dst_node_id=3, message_type="train")
    reply = Message(Error(2, "out of memory"), reply_to=ins)
    kept, dropped = validate_train_replies([reply], reference)
    assert kept == [] and "out of memory" in dropped[0].reason
    kept, dropped = validate_evaluate_replies([reply])
    assert kept == [] and dropped[0].node_id == 3


def test_refuse_invalid_update_names_the_problem_and_lets_valid_answers_through() -> None:
    reference = ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32))})
    task = Message(RecordDict({"arrays": reference}), 1, MessageType.TRAIN, group_id="1")

    def reply(w: np.ndarray) -> Message:
        metrics = MetricRecord({"num-examples": 4})
        content = RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": metrics})
        return Message(content, reply_to=task)

    with pytest.raises(PayloadError, match=r"^update refused: .*shape"):
        refuse_invalid_update(
            reply(np.zeros((3, 2), np.float32)), message_type=MessageType.TRAIN, reference=reference
        )
    refuse_invalid_update(
        reply(np.ones((2, 3), np.float32)), message_type=MessageType.TRAIN, reference=reference
    )
    failed = Message(Error(code=1, reason="out of memory"), reply_to=task)
    refuse_invalid_update(failed, message_type=MessageType.TRAIN, reference=reference)
