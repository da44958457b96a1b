"""On-device personalisation as a user runs it: a coordinator and two devices as processes, over
TLS on loopback. A release built by ``fedge simulate`` is published; the device whose camera is
dim installs it, personalises it within its ledger and serves its personal model (its accuracy
on its own inputs rises); the device with too little data keeps the release and says why; the
operator sees both outcomes, noised on the devices, in ``fedge fleet ls``."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from fedge.app.config import RunConfig
from fedge.app.personalize import TOO_LITTLE_DATA
from fedge.data import get_dataset
from fedge.edge.personalize import REASONS, load_outcome
from fedge.edge.slots import HEAD_FILE, Slots
from fedge.simulation import simulate
from fedge.v1 import inference_pb2, inference_pb2_grpc

from .conftest import Cluster, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DIM = 0.1


def _served_labels(port: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    """The labels the device's inference server answers for ``x``, and the release version."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        tensor = inference_pb2.Tensor(shape=list(x.shape), data=x.tobytes())
        reply = stub.Predict(inference_pb2.PredictRequest(input=tensor), timeout=30)
    return np.asarray(reply.labels), int(reply.model_version)


def _write_dim_data(cluster: Cluster, i: int, x: np.ndarray, y: np.ndarray) -> Path:
    """Device ``i``'s data directory, holding its dim camera's images."""
    folder = cluster.root / f"dev{i}" / "data"
    np.savez(folder / "data.npz", x=(x * DIM).astype(np.float32), y=y)
    return folder


def test_a_dim_device_personalises_its_release_and_the_fleet_sees_it(cluster: Cluster) -> None:
    run = cluster.root / "run"
    config = RunConfig(
        dataset="digits",
        model="cnn-small",
        clients=4,
        rounds=2,
        local_epochs=2,
        lr=0.05,
        batch_size=16,
        student="student-cnn",
        release_epochs=2,
    )
    simulate(config, out_dir=run)
    cluster.start_coordinator()
    digits = get_dataset("digits")
    ports = {}
    for i, samples in ((0, len(digits.y_train)), (1, 12)):
        cluster.enroll(i, dataset="digits", partitions=2)
        _write_dim_data(cluster, i, digits.x_train[:samples], digits.y_train[:samples])
        ports[i] = free_port()
        cluster.spawn(
            f"edge{i}", "edge", "start", "--state", f"dev{i}/state", "--data", f"dev{i}/data",
            "--no-train", "--personalize", "--personal-epsilon", "8",
            "--inference", f"127.0.0.1:{ports[i]}", "--heartbeat", "0.5",
            "--release-interval", "1",
        )  # fmt: skip
    published = cluster.cli("release", "publish", str(run / "release"), "--percent", "100")
    assert published.returncode == 0, published.stderr
    version = int(published.stdout.split("published release ")[1].split()[0].rstrip(":"))

    states = {i: cluster.root / f"dev{i}" / "state" for i in ports}
    cluster.wait_for(lambda: all(load_outcome(s) is not None for s in states.values()), 240)
    dim, few = load_outcome(states[0]), load_outcome(states[1])
    assert dim is not None and few is not None
    # The dim device: DP-SGD within its ledger, served behind the guard, on top of the release.
    assert (dim.version, dim.served, dim.reason, dim.method) == (version, True, "gain", "dp-sgd")
    assert dim.epsilon is not None and 0 < dim.epsilon <= 8.0
    assert dim.personal_accuracy > dim.global_accuracy
    slots = Slots(states[0])
    serving = slots.state().serving
    assert serving is not None and (slots.slot_dir(serving) / HEAD_FILE).is_file()
    # What its inference server answers on dim images it never trained on beats the release.
    x_test = (digits.x_test * DIM).astype(np.float32)
    release = ort.InferenceSession(str(run / "release" / "model.onnx"))
    global_accuracy = float(
        (release.run(["logits"], {"input": x_test})[0].argmax(1) == digits.y_test).mean()
    )
    cluster.wait_for(lambda: _served_labels(ports[0], x_test[:1])[1] == version, 60)
    labels, answered = _served_labels(ports[0], x_test)
    assert answered == version
    personal_accuracy = float((labels == digits.y_test).mean())
    assert personal_accuracy > global_accuracy + 0.05, (global_accuracy, personal_accuracy)
    # The device with 12 samples keeps the release and records why.
    assert (few.version, few.served, few.reason) == (version, False, TOO_LITTLE_DATA)
    few_slots = Slots(states[1])
    few_serving = few_slots.state().serving
    assert few_serving is not None and not (few_slots.slot_dir(few_serving) / HEAD_FILE).exists()

    # The operator sees both outcomes as the devices noised them, for the release they fitted.
    def reported() -> dict[str, dict[str, object]]:
        out = cluster.cli("fleet", "ls", "--json")
        assert out.returncode == 0, out.stderr
        return {d["name"]: d["personalization"] for d in json.loads(out.stdout)}

    cluster.wait_for(lambda: all(r is not None for r in reported().values()), 60)
    for name, report in reported().items():
        assert report["version"] == version and report["reason"] in REASONS, (name, report)
    text = cluster.cli("fleet", "ls").stdout
    assert text.count(f"personal (release {version})") == 2, text
