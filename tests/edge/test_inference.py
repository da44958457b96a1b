"""On-device inference: the gRPC InferenceService, telemetry and hot swap under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.edge.inference import (
    InferenceEngine,
    NoModelError,
    SlotWatcher,
    predict_arrays,
    serve_inference,
)
from fedge.edge.slots import Slots, SlotState
from fedge.release.testing import linear_weights, make_linear_model
from fedge.v1 import inference_pb2, inference_pb2_grpc


def _tensor(x: np.ndarray) -> inference_pb2.Tensor:
    x = np.ascontiguousarray(x, dtype="<f4")
    return inference_pb2.Tensor(shape=list(x.shape), data=x.tobytes())


@pytest.fixture
def served(
    tmp_path: Path,
) -> Iterator[tuple[InferenceEngine, inference_pb2_grpc.InferenceServiceStub]]:
    engine = InferenceEngine()
    server, port = serve_inference(engine)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield engine, inference_pb2_grpc.InferenceServiceStub(channel)
    channel.close()
    server.stop(grace=None)


def test_predict_matches_the_model_and_reports_telemetry(
    served: tuple[InferenceEngine, inference_pb2_grpc.InferenceServiceStub], tmp_path: Path
) -> None:
    engine, stub = served
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(inference_pb2.PredictRequest(input=_tensor(np.zeros((1, 16)))))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    engine.swap(make_linear_model(tmp_path / "m.onnx", seed=3), 7)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    reply = stub.Predict(inference_pb2.PredictRequest(input=_tensor(x)))
    weights, bias = linear_weights(features=16, classes=4, seed=3)
    expected = x @ weights + bias
    out = np.frombuffer(reply.output.data, dtype="<f4").reshape(tuple(reply.output.shape))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert list(reply.labels) == np.argmax(expected, axis=1).tolist()
    assert reply.model_version == 7
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(inference_pb2.PredictRequest(input=_tensor(np.zeros((1, 3)))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = inference_pb2.Tensor(shape=[2, 16], data=b"\x00" * 12)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(inference_pb2.PredictRequest(input=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stats = stub.GetStats(inference_pb2.GetStatsRequest())
    # The no-model and bad-shape requests are errors; the bad tensor never reached the model.
    assert (stats.requests, stats.errors, stats.active_version) == (3, 2, 7)
    assert 0 < stats.latency_p50_ms <= stats.latency_p99_ms


def test_hot_swap_under_load_fails_no_request(
    served: tuple[InferenceEngine, inference_pb2_grpc.InferenceServiceStub], tmp_path: Path
) -> None:
    engine, stub = served
    models = [make_linear_model(tmp_path / f"m{i}.onnx", seed=i) for i in range(2)]
    engine.swap(models[0], 1)
    stop = threading.Event()
    failures: list[Exception] = []
    versions: set[int] = set()

    def client() -> None:
        x = _tensor(np.ones((2, 16)))
        while not stop.is_set():
            try:
                versions.add(stub.Predict(inference_pb2.PredictRequest(input=x)).model_version)
            except grpc.RpcError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    # Swap only once the clients are being answered, and stop once the last model answers:
    # otherwise thread start-up can outlast all 20 swaps on a busy machine.
    _wait_until(lambda: 1 in versions)
    for i in range(20):
        engine.swap(models[i % 2], i + 2)
    _wait_until(lambda: 21 in versions)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert failures == []
    assert len(versions) > 1  # requests really were answered by swapped models
    assert engine.stats().errors == 0 and engine.stats().swaps == 21


def test_slot_watcher_follows_committed_slot_only(tmp_path: Path) -> None:
    slots = Slots(tmp_path / "dev")
    for slot, seed in (("a", 1), ("b", 2)):
        make_linear_model(slots.model_path(slot), seed=seed)
    engine = InferenceEngine()
    watcher = SlotWatcher(engine, tmp_path / "dev", interval=3600)
    slots.write_state(SlotState(active="a"))
    assert watcher.poll() and engine.version == 0  # no manifest in slot: version unknown
    model = engine._model
    assert model is not None and model.path == slots.model_path("a")
    slots.write_state(SlotState(active="b", previous="a", trial=True))
    assert not watcher.poll()  # a model on trial never serves
    slots.write_state(SlotState(active="b", previous="a"))
    assert watcher.poll()
    model = engine._model
    assert model is not None and model.path == slots.model_path("b")


def test_predict_arrays_from_state_dir(tmp_path: Path) -> None:
    with pytest.raises(NoModelError, match="no model installed"):
        predict_arrays(tmp_path / "dev", [np.zeros(16)])
    slots = Slots(tmp_path / "dev")
    make_linear_model(slots.model_path("a"), seed=4)
    slots.write_state(SlotState(active="a"))
    x = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    outputs, _version = predict_arrays(tmp_path / "dev", [x, np.stack([x, x])])
    weights, bias = linear_weights(features=16, classes=4, seed=4)
    np.testing.assert_allclose(outputs[0][0], x @ weights + bias, rtol=1e-5, atol=1e-5)
    assert outputs[1].shape == (2, 4)


def _wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the inference clients"
        time.sleep(0.01)
