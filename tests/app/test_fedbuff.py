"""FedBuff's aggregation, checked against values computed by hand."""

import numpy as np
import pytest

from fedge.app.fedbuff import (
    apply_update,
    buffered_update,
    model_delta,
    parse_staleness_weight,
)
from fedge.errors import ConfigError


def test_staleness_weights_by_hand() -> None:
    default = parse_staleness_weight("poly:0.5")
    assert default(0) == 1.0
    assert default(3) == pytest.approx(0.5)  # 1/sqrt(4)
    assert default(8) == pytest.approx(1 / 3)
    assert parse_staleness_weight("poly:1")(4) == pytest.approx(0.2)
    assert parse_staleness_weight("constant")(50) == 1.0
    assert parse_staleness_weight("poly:0")(7) == 1.0
    assert parse_staleness_weight("poly:2").describe() == "poly:2"


@pytest.mark.parametrize("spec", ["poly:-1", "poly:", "poly:x", "linear", "poly:nan"])
def test_a_bad_staleness_weight_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="--staleness-weight"):
        parse_staleness_weight(spec)


def test_buffered_update_divides_the_weighted_sum_by_the_buffer_size() -> None:
    deltas = [{"w": np.array([2.0, 4.0])}, {"w": np.array([4.0, 0.0])}]
    # (1*[2,4] + 0.5*[4,0]) / 2 = [2, 2]
    assert buffered_update(deltas, [1.0, 0.5], 2)["w"].tolist() == [2.0, 2.0]
    # a full buffer of K=4 where two of the four weights are 0.25
    four = [{"w": np.array([4.0])}] * 4
    assert buffered_update(four, [1.0, 1.0, 0.25, 0.25], 4)["w"].tolist() == [2.5]
    with pytest.raises(ValueError, match="weights"):
        buffered_update(deltas, [1.0], 2)


def test_delta_and_step_keep_dtypes_and_leave_integer_buffers_alone() -> None:
    start = {"w": np.array([1.0, 1.0], dtype=np.float32), "count": np.array([3], dtype=np.int64)}
    trained = {"w": np.array([2.0, 0.5], dtype=np.float32), "count": np.array([9])}
    delta = model_delta(trained, start)
    assert set(delta) == {"w"} and delta["w"].tolist() == [1.0, -0.5]
    stepped = apply_update(start, delta, server_lr=0.5)
    assert stepped["w"].dtype == np.float32 and stepped["w"].tolist() == [1.5, 0.75]
    assert stepped["count"].tolist() == [3]
