"""Regression tasks: a numeric target from a CSV (no code) or a task file, trained with an MSE
loss, reported as MAE and RMSE in the target's units (R² as the round's accuracy), distilled,
shipped int8 and answered on a device as numbers in the target's units."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from fedge.app.config import RunConfig
from fedge.builder.regression import regression_profiles, regression_scores
from fedge.coordinator.hub import serve_hub
from fedge.data import read_data
from fedge.data.targets import regression_metrics
from fedge.edge.health import HealthConfig, check_health
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import pin_release_key
from fedge.edge.inference import InferenceEngine, serve_inference
from fedge.edge.slots import Slots
from fedge.edge.updater import Updater
from fedge.errors import ConfigError, DataError
from fedge.inference.profiles import get_profile
from fedge.protocol.manifest import public_key_pem
from fedge.release.publish import publish_build
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.v1 import inference_pb2, inference_pb2_grpc

FEDGE = [sys.executable, "-m", "fedge.cli"]

TASK_FILE = """
import numpy as np
from sklearn.datasets import load_diabetes
from torch import nn
from fedge.tasks import Task

def load_data():
    x, y = load_diabetes(return_X_y=True)
    return x.astype(np.float32) * 10, y          # the target in its own units (25..346)

def build(*, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, num_classes))

TASK = Task(name="progression", model=build, data=load_data, kind="regression")
"""


def _diabetes(path: Path) -> None:
    """The diabetes records of three clinics, split by the patients' age (a covariate shift)."""
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["site"] = pd.cut(frame["age"], [0, 40, 55, 100], labels=["young", "middle", "old"])
    frame.to_csv(path, index=False)


def _fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDGE, *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )


def test_metrics_in_the_targets_units() -> None:
    scores = regression_metrics(np.array([1.0, 2.0, 5.0]), np.array([1.0, 3.0, 3.0]))
    assert scores["mae"] == pytest.approx(1.0)
    assert scores["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert scores["r2"] == pytest.approx(1 - 5 / (8 / 3))  # actual mean 7/3: SST = 8/3


def test_profiles_keep_every_budget_but_min_accuracy_for_regression(tmp_path: Path) -> None:
    clinic = get_profile("clinic")
    (kept,) = regression_profiles([clinic])
    assert kept.budget.min_accuracy == 0.0 and clinic.budget.min_accuracy == 0.9
    assert kept.budget.max_model_bytes == clinic.budget.max_model_bytes
    assert kept.budget.p99_ms == clinic.budget.p99_ms
    _diabetes(tmp_path / "diabetes.csv")
    data = read_data(tmp_path / "diabetes.csv", label="target", kind="regression").dataset
    exact = data.y_test.copy()
    accuracy, agreement = regression_scores(exact + 0.5, exact, data)
    assert agreement == pytest.approx(1 - 0.25 / float(exact.var()), rel=1e-5)
    assert regression_scores(exact, exact, data) == (1.0, 1.0) and accuracy < 1.0


def test_a_diabetes_csv_trains_by_site_ships_int8_and_answers_numbers(tmp_path: Path) -> None:
    _diabetes(tmp_path / "diabetes.csv")
    args = ["--data", "diabetes.csv", "--label", "target", "--kind", "regression"]
    proc = _fedge("simulate", *args, "--partition", "by:site", "--clients", "3", "--rounds",
                  "10", "--release-epochs", "10", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert " mae " in proc.stdout and " rmse " in proc.stdout  # the console's round lines
    run = tmp_path / "runs/latest"
    results = json.loads((run / "results.json").read_text())
    assert results["task"]["kind"] == "regression"
    last = results["rounds"][-1]
    assert last["accuracy"] == last["r2"] and last["r2"] > 0.3
    assert (run / "metrics.png").stat().st_size > 0
    # Within 5% of a centralised linear regression on the same split, in the target's units.
    files = read_data(tmp_path / "diabetes.csv", label="target", group="site", kind="regression")
    data, (mean, std) = files.dataset, files.preprocessing.target_scale or (0.0, 1.0)
    central = LinearRegression().fit(data.x_train, data.y_train)
    reference = regression_metrics(central.predict(data.x_test) * std + mean,
                                   data.y_test * std + mean)["rmse"]  # fmt: skip
    assert last["rmse"] <= 1.05 * reference, (last["rmse"], reference)

    report = json.loads((run / "release/report.json").read_text())
    shipped = report["regression"]["student int8"]
    assert report["student_int8"]["accuracy"] == shipped["r2"]
    assert shipped["rmse"] <= 1.15 * reference and report["distillation"]["method"] == "mse"
    assert report["preprocessing"]["spec"]["target"] == {"mean": mean, "std": std}

    # Shipped to a device through a hub on loopback (no coordinator) and asked about raw rows.
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    server, port = serve_hub(store)
    state = tmp_path / "device"
    try:
        signed = publish_build(store, run / "release", percent=100)
        pin_release_key(state, public_key_pem(key.public_key()))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            device = Updater(state_dir=state, hub=GrpcHubClient(channel), device_id="clinic")
            installed = device.check_once()
        assert installed is not None and installed.state == "installed", installed
    finally:
        server.stop(grace=None)
        store.close()
    rows = list(csv.DictReader((tmp_path / "diabetes.csv").open()))[:5]
    with (tmp_path / "patients.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k in rows[0] if k != "target"])
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k != "target"} for row in rows)
    proc = _fedge("edge", "predict", "--state", str(state), "patients.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answers = [float(line.split(": ")[1].split(" (")[0]) for line in proc.stdout.splitlines()]
    session = ort.InferenceSession(str(run / "release/model.onnx"))
    x = files.preprocessing.transform(rows)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0].reshape(-1) * std + mean
    assert answers == pytest.approx(expected.tolist(), rel=1e-5)
    assert all(f"(release {signed.manifest.version})" in line for line in proc.stdout.splitlines())
    assert min(answers) >= 25 and max(answers) <= 346  # the target's units, not standardised

    # Its health check scores a regression release on labelled records by R², as the report.
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    np.savez(labelled / "data.npz", x=data.x_test, y=data.y_test * std + mean)
    (labelled / "fedge-data.json").write_text(json.dumps({"kind": "regression"}))
    model = Slots(state).model_path(Slots(state).state().serving or "a")
    health = check_health(
        model, signed.manifest, config=HealthConfig(accuracy_floor=0.3, labelled=labelled)
    )
    assert health.ok and health.accuracy == pytest.approx(shipped["r2"], abs=1e-4)

    # The device's gRPC inference server answers the same numbers for the same CSV text.
    slots = Slots(state)
    serving = slots.state().serving
    assert serving is not None
    engine = InferenceEngine()
    engine.swap(slots.model_path(serving), slots.version_of(serving))
    inference, inference_port = serve_inference(engine)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{inference_port}") as channel:
            reply = inference_pb2_grpc.InferenceServiceStub(channel).Predict(
                inference_pb2.PredictRequest(
                    raw=(tmp_path / "patients.csv").read_bytes(),
                    raw_format=inference_pb2.RAW_FORMAT_CSV,
                ),
                timeout=30,
            )
        assert list(reply.values) == pytest.approx(answers, rel=1e-5)
    finally:
        inference.stop(0)


def test_a_regression_task_file_trains_under_local_dp(tmp_path: Path) -> None:
    (tmp_path / "task.py").write_text(TASK_FILE)
    dp = ["--local-dp-noise", "0.8", "--dp-seed", "1", "--lr", "0.1", "--no-release"]
    proc = _fedge("simulate", "--task", "task.py:TASK", "--clients", "3", "--rounds", "3", *dp,
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "runs/latest/results.json").read_text())
    rounds = results["rounds"]
    assert results["task"]["kind"] == "regression" and "local" in results["privacy"]
    assert all(np.isfinite([r["mae"], r["rmse"], r["loss"]]).all() for r in rounds)
    # Better than predicting the training mean (R² 0), in the target's units (RMSE ~ 50-80).
    assert rounds[-1]["r2"] > 0.0 and 30 < rounds[-1]["rmse"] < 80


def test_a_devices_own_targets_are_scaled_as_the_tasks(tmp_path: Path) -> None:
    from fedge.app.client import load_client_data
    from fedge.data import get_dataset

    (tmp_path / "task.py").write_text(TASK_FILE)
    config = RunConfig.from_mapping({"task": f"{tmp_path / 'task.py'}:TASK", "clients": 3})
    dataset = get_dataset(config.dataset)
    mean, std = dataset.preprocessing["spec"]["target"].values()
    device = tmp_path / "device"
    device.mkdir()
    x, y = dataset.x_test[:20], dataset.y_test[:20] * std + mean  # the target in its units
    np.savez(device / "data.npz", x=x, y=y)
    (device / "fedge-data.json").write_text(json.dumps({"kind": "regression"}))
    data = load_client_data(config, {"data-dir": str(device)})
    assert data.num_classes == 1 and data.y.dtype == torch.float32
    assert data.y.numpy() == pytest.approx(dataset.y_test[:20], abs=1e-5)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "fedge-data.json").write_text(json.dumps({"kind": "regression"}))
    np.savez(broken / "data.npz", x=x, y=np.full(20, np.nan))
    with pytest.raises(DataError, match="regression targets must be finite"):
        load_client_data(config, {"data-dir": str(broken)})


def test_bad_regression_inputs_are_one_line(tmp_path: Path) -> None:
    _diabetes(tmp_path / "diabetes.csv")
    data = str(tmp_path / "diabetes.csv")
    base = {"data": data, "label": "target", "kind": "regression"}
    with pytest.raises(ConfigError, match=r"--partition.*dirichlet:0\.5.*iid or by:COLUMN"):
        RunConfig.from_mapping({**base, "partition": "dirichlet:0.5"})
    for option, value in (("personalize", "finetune"), ("strategy", "fedper")):
        with pytest.raises(ConfigError, match=f"--{option}.*not regression"):
            RunConfig.from_mapping({**base, option: value})
    frame = pd.read_csv(tmp_path / "diabetes.csv")
    frame["target"] = frame["target"].astype(object)
    frame.loc[7, "target"] = "high"
    frame.to_csv(tmp_path / "words.csv", index=False)
    with pytest.raises(DataError, match=r"'target' must hold numbers.*data row 8 has 'high'"):
        read_data(tmp_path / "words.csv", label="target", kind="regression")
    proc = _fedge("simulate", "--data", data, "--label", "target", "--kind", "regression",
                  "--partition", "shards:2", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "--partition" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
