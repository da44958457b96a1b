"""Anomaly tasks: an autoencoder federated, its threshold set on normal public samples, and a
release whose int8 ONNX graph flags anomalies by itself (no torch, no task code needed)."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from fedge.app.checkpoint import Checkpoint
from fedge.builder.anomaly import FlaggingAutoencoder, recorded_threshold
from fedge.errors import ConfigError
from fedge.tasks import Task, ThresholdRule

FEDGE = [sys.executable, "-m", "fedge.cli"]

TASK_FILE = """
import numpy as np
from torch import nn
from fedge.tasks import Task

def load_data():
    rng = np.random.default_rng(0)
    phases = rng.uniform(0, 6, 600)
    t = np.linspace(0, 6, 32)
    x = np.sin(t[None, :] + phases[:, None]).astype(np.float32)
    y = np.zeros(600, dtype=int)
    y[::20] = 1                       # every 20th window is corrupted by a burst of noise
    x[y == 1] += rng.normal(0, 1.0, (int(y.sum()), 32)).astype(np.float32)
    return x, y

def build(*, input_shape, num_classes):
    d = input_shape[0]
    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, d))

TASK = Task(name="sensors", model=build, data=load_data, kind="anomaly", threshold_quantile=0.99)
"""


def build_sensor_model(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(input_shape[0], input_shape[0]))


def test_flagging_logits_follow_the_reconstruction_error() -> None:
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    zeros = FlaggingAutoencoder(nn.Sequential(nn.Linear(2, 2)), threshold=1.0)
    nn.init.zeros_(zeros.autoencoder[0].weight)
    nn.init.zeros_(zeros.autoencoder[0].bias)
    # errors: mean(x^2) = 1.0, 2.0, 0.25; score (e - 1) / 1
    expected = torch.tensor([[0.0, 0.0], [-1.0, 1.0], [0.75, -0.75]])
    assert torch.allclose(zeros(x), expected)
    assert zeros(x).argmax(dim=1).tolist() == [0, 1, 0]


def test_an_anomaly_task_trains_flags_and_ships_an_int8_flagger(tmp_path: Path) -> None:
    (tmp_path / "task.py").write_text(TASK_FILE)
    proc = subprocess.run(
        [*FEDGE, "simulate", "--task", "task.py:TASK", "--clients", "3", "--rounds", "5"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "runs/latest/results.json").read_text())
    last = results["rounds"][-1]
    assert results["task"]["kind"] == "anomaly"
    assert last["recall"] == 1.0 and last["f1"] > 0.6 and last["roc_auc"] > 0.95
    assert (tmp_path / "runs/latest/metrics.png").stat().st_size > 0  # precision, recall, F1...
    report = json.loads((tmp_path / "runs/latest/release/report.json").read_text())
    assert report["student_int8"]["accuracy"] > 0.9
    # The int8 graph flags the corrupted windows on its own.
    from fedge.tasks import load_task

    x, y = load_task(f"{tmp_path / 'task.py'}:TASK").task.data()  # type: ignore[operator]
    session = ort.InferenceSession(str(tmp_path / "runs/latest/release/model.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    flags = logits.argmax(axis=1)
    assert (flags[y == 1] == 1).mean() > 0.9 and (flags[y == 0] == 0).mean() > 0.95
    assert np.isfinite(logits).all()


def test_an_anomaly_task_trains_through_site_gateways(tmp_path: Path) -> None:
    (tmp_path / "task.py").write_text(TASK_FILE)
    proc = subprocess.run(
        [*FEDGE, "simulate", "--task", "task.py:TASK", "--clients", "3", "--gateways", "3",
         "--rounds", "2", "--no-release"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sites = [line for line in proc.stdout.splitlines() if "site model accuracy" in line]
    assert len(sites) == 6  # three sites, two rounds, each judged by its flags
    last = json.loads((tmp_path / "runs/latest/results.json").read_text())["rounds"][-1]
    assert last["recall"] > 0.5 and last["threshold"] > 0.0


def test_a_sigma_threshold_sits_k_standard_deviations_above_the_mean_log_error() -> None:
    errors = np.exp(np.array([-2.0, 0.0, 2.0]))  # log errors: mean 0, std sqrt(8/3)
    rule = Task(name="s", model=build_sensor_model, data=lambda: None, threshold_sigmas=3.0)
    assert rule.threshold_rule.threshold(errors) == pytest.approx(np.exp(3 * np.sqrt(8 / 3)))
    assert ThresholdRule(quantile=1.0).threshold(errors) == pytest.approx(np.exp(2.0))
    with pytest.raises(ConfigError, match="threshold_sigmas"):
        Task(name="s", model=build_sensor_model, data=lambda: None, threshold_sigmas=0.0)


def test_a_release_carries_the_threshold_its_round_recorded() -> None:
    record = {"round": 3, "extra": {"f1": 0.9, "threshold": 0.25}}
    ckpt = Checkpoint("m", (2,), 2, "d", 3, {}, {}, rounds=[{"round": 2}, record])
    assert recorded_threshold(ckpt) == 0.25
    assert recorded_threshold(replace(ckpt, server_round=4)) is None  # not this model's round
    assert recorded_threshold(replace(ckpt, rounds=[{"round": 3, "extra": {}}])) is None
