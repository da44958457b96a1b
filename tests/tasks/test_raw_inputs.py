"""Data read with no code, shipped and answered on a device from raw CSV rows: the release's
signed manifest carries the preprocessing and the class names; the device needs no pandas,
no torch and no task code to use them."""

import csv
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from fedge.app.config import RunConfig
from fedge.data import read_data
from fedge.edge.inference import InferenceEngine, serve_inference
from fedge.edge.slots import Slots
from fedge.release.publish import publish_build
from fedge.simulation import simulate
from fedge.v1 import inference_pb2, inference_pb2_grpc

from ..conftest import heartbeat_listener, wait_for
from ..coordinator.conftest import Fleet
from .test_data_only import _records

FEDGE = [sys.executable, "-m", "fedge.cli"]


def test_a_device_answers_raw_csv_rows_with_class_names(fleet: Fleet, tmp_path: Path) -> None:
    _records(tmp_path / "records.csv")
    config = RunConfig.from_mapping(
        {"data": str(tmp_path / "records.csv"), "label": "diagnosis", "clients": 3,
         "rounds": 3, "release-epochs": 3}
    )  # fmt: skip
    simulate(config, out_dir=tmp_path / "run", device_state_root=tmp_path / "ledgers")
    identity = fleet.enroll("clinic")
    store = fleet.coordinator.releases
    with heartbeat_listener(identity, fleet.channel(identity.tls())) as delivery:
        wait_for(lambda: delivery.updater is not None, 10, "the delivery loop's first check")
        signed = publish_build(store, tmp_path / "run" / "release", percent=100)
        assert signed.manifest.labels == ("benign", "malignant")
        assert signed.manifest.report["preprocessing"]["kind"] == "table"
        wait_for(
            lambda: (
                delivery.updater is not None
                and delivery.updater.active_version() == signed.manifest.version
            ),
            30,
            "the release installed",
        )
    rows = list(csv.DictReader((tmp_path / "records.csv").open()))[:5]
    with (tmp_path / "patients.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k in rows[0] if k != "diagnosis"])
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k != "diagnosis"} for row in rows)
    proc = subprocess.run(
        [*FEDGE, "edge", "predict", "--state", str(identity.state_dir), "patients.csv"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answered = [line.split(": ")[1].split(" (")[0] for line in proc.stdout.splitlines()]
    # The same rows, encoded by the training pipeline, through the same int8 model.
    files = read_data(tmp_path / "records.csv", label="diagnosis")
    x = files.preprocessing.transform(rows)
    session = ort.InferenceSession(str(tmp_path / "run" / "release" / "model.onnx"))
    expected = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)
    assert answered == [files.label_names[i] for i in expected]
    assert set(answered) <= {"benign", "malignant"} and len(answered) == 5
    assert np.isin(["(release 1)"], [line[-11:] for line in proc.stdout.splitlines()]).all()

    # The device's gRPC inference server takes the same rows as CSV text.
    slots = Slots(identity.state_dir)
    serving = slots.state().serving
    assert serving is not None
    engine = InferenceEngine()
    engine.swap(slots.model_path(serving), slots.version_of(serving))
    server, port = serve_inference(engine)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            reply = stub.Predict(
                inference_pb2.PredictRequest(
                    raw=(tmp_path / "patients.csv").read_bytes(),
                    raw_format=inference_pb2.RAW_FORMAT_CSV,
                ),
                timeout=30,
            )
            assert list(reply.label_names) == answered and reply.model_version == 1
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(
                    inference_pb2.PredictRequest(
                        raw=b"age,sex\n1,2\n", raw_format=inference_pb2.RAW_FORMAT_CSV
                    ),
                    timeout=30,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)
