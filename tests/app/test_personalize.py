"""Personalisation in simulation: the guard, per-device splits, FedBN/FedPer layers, the report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedge.app.client import build_client_app
from fedge.app.config import RunConfig
from fedge.app.personalize import (
    MIN_VALIDATION,
    NO_GAIN,
    TOO_LITTLE_DATA,
    guard,
    local_split,
    personal_keys,
    personal_layers_file,
    shift_inputs,
    summarize,
)
from fedge.errors import ConfigError
from fedge.models import get_model
from fedge.runtime.local import set_server_identity

FEDGE = [sys.executable, "-m", "fedge.cli"]


def test_the_guard_serves_a_personal_model_only_for_a_measured_gain() -> None:
    assert guard(0.80, 0.85, 20).serve_personal
    assert guard(0.80, 0.85, 20).gain == pytest.approx(0.05)
    tie = guard(0.80, 0.80, 20)
    assert (tie.serve_personal, tie.reason) == (False, NO_GAIN)
    assert guard(0.80, 0.70, 20).reason == NO_GAIN
    few = guard(0.0, 1.0, MIN_VALIDATION - 1)
    assert (few.serve_personal, few.reason) == (False, TOO_LITTLE_DATA)


def test_local_split_is_deterministic_disjoint_and_complete() -> None:
    train, val, test = local_split(101, seed=3)
    assert (len(train), len(val), len(test)) == (61, 20, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(101))
    again = local_split(101, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(local_split(101, seed=4)[2], test)


def test_feature_shift_dims_and_inverts_in_the_data_range() -> None:
    x = np.array([[-0.5, 0.5, 2.5]], dtype=np.float32)
    assert np.array_equal(shift_inputs(x, "none"), x)
    dim = shift_inputs(x, "dim")
    assert dim[0, 0] == pytest.approx(-0.5)  # the background stays
    assert dim[0, 2] == pytest.approx(-0.5 + 3.0 * 0.3)
    inverted = shift_inputs(x, "invert")
    assert inverted[0].tolist() == pytest.approx([2.5, 1.5, -0.5])
    assert shift_inputs(x, "dim+invert")[0, 0] == pytest.approx(0.4)


def test_personal_layers_are_the_norm_layers_or_the_last_linear_layer() -> None:
    bn = get_model("cnn-bn", input_shape=(1, 8, 8), num_classes=10)
    norm = personal_keys(bn, "fedbn")
    assert "features.1.running_mean" in norm and "features.5.weight" in norm
    assert all(".1." in k or ".5." in k for k in norm)
    group = personal_keys(get_model("dp-cnn", input_shape=(1, 8, 8), num_classes=10), "fedbn")
    assert group == [
        "features.1.weight",
        "features.1.bias",
        "features.5.weight",
        "features.5.bias",
    ]
    assert personal_keys(bn, "fedper") == ["classifier.3.weight", "classifier.3.bias"]
    assert personal_keys(bn, "fedavg") == []


def test_an_unknown_personalize_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="--personalize"):
        RunConfig(personalize="ditto")


def _train_message(arrays: ArrayRecord, node: int) -> Message:
    config = ConfigRecord({"lr": 0.05, "local-epochs": 1, "batch-size": 16, "momentum": 0.0})
    content = RecordDict({"arrays": arrays, "config": config})
    return Message(content, node, "train")


@pytest.mark.parametrize(
    ("strategy", "local_key", "shared_key"),
    [
        ("fedbn", "features.1.running_mean", "features.0.weight"),
        ("fedper", "classifier.3.weight", "features.0.weight"),
    ],
)
def test_a_client_trains_with_its_own_personal_layers_not_the_servers(
    strategy: str, local_key: str, shared_key: str
) -> None:
    config = RunConfig(
        dataset="digits",
        model="cnn-bn",
        clients=4,
        strategy=strategy,
        feature_shift="device",
        release=False,
    )
    app = build_client_app(config)
    set_server_identity(1)
    context = Context(
        run_id=1,
        node_id=3,
        node_config={"partition-id": 2, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )
    model = get_model("cnn-bn", input_shape=(1, 8, 8), num_classes=10)
    first = app(_train_message(ArrayRecord(model.state_dict()), 3), context)
    own = context.state.array_records["personal-layers"].to_torch_state_dict()
    assert set(own) == set(personal_keys(model, strategy))
    sent = first.content.array_records["arrays"].to_torch_state_dict()
    assert torch.equal(own[local_key], sent[local_key])
    # The server sends other values for the personal layers (an average): the client ignores
    # them and goes on from its own, while the shared layers are the server's.
    server = {k: v.clone() for k, v in sent.items()}
    server[local_key] = torch.full_like(server[local_key], 7.0)
    server[shared_key] = server[shared_key] * 0.5
    second = app(_train_message(ArrayRecord(server), 3), context)
    after = second.content.array_records["arrays"].to_torch_state_dict()
    assert not torch.allclose(after[local_key], torch.full_like(after[local_key], 7.0), atol=1.0)
    kept = context.state.array_records["personal-layers"].to_torch_state_dict()
    assert torch.equal(kept[local_key], after[local_key])


def test_a_device_keeps_its_personal_layers_in_its_state_directory_across_restarts(
    tmp_path: Path,
) -> None:
    config = RunConfig(dataset="digits", model="cnn-bn", clients=4, strategy="fedper")
    set_server_identity(1)
    node = {"partition-id": 1, "num-partitions": 4, "state-dir": str(tmp_path)}

    def device_process(run_id: int) -> Context:  # a device (re)started: nothing in memory
        return Context(
            run_id=run_id, node_id=3, node_config=node, state=RecordDict(), run_config={}
        )

    model = get_model("cnn-bn", input_shape=(1, 8, 8), num_classes=10)
    head = "classifier.3.weight"
    first = build_client_app(config)(
        _train_message(ArrayRecord(model.state_dict()), 3), device_process(1)
    )
    kept = personal_layers_file(node, 1)
    assert kept == tmp_path / "personal-layers" / "run-1.npz" and kept.is_file()
    with np.load(kept) as arrays:
        assert sorted(arrays.files) == sorted(personal_keys(model, "fedper"))
        assert np.array_equal(arrays[head], first.content.array_records["arrays"][head].numpy())
    server = first.content.array_records["arrays"].to_torch_state_dict()
    server[head] = torch.full_like(server[head], 7.0)
    # After a restart the device goes on from its own head, not the server's ...
    restarted = device_process(1)
    after = build_client_app(config)(_train_message(ArrayRecord(server), 3), restarted)
    trained = after.content.array_records["arrays"][head].numpy()
    assert not np.allclose(trained, 7.0, atol=1.0)
    assert "personal-layers" not in restarted.state.array_records  # on disk, not in memory
    # ... while a new run starts from the server's.
    other = build_client_app(config)(_train_message(ArrayRecord(server), 3), device_process(2))
    assert np.allclose(other.content.array_records["arrays"][head].numpy(), 7.0, atol=1.0)


def test_summary_counts_devices_made_worse_with_and_without_the_guard() -> None:
    devices = [
        {"global-test": 0.5, "unguarded-test": 0.9, "personal-test": 0.9, "serves-personal": 1},
        {"global-test": 0.8, "unguarded-test": 0.6, "personal-test": 0.8, "serves-personal": 0},
    ]
    summary = summarize(devices)
    assert summary["global"]["mean"] == pytest.approx(0.65)
    assert summary["guard_on"]["mean"] == pytest.approx(0.85)
    assert summary["guard_on"]["made_worse_share"] == 0.0
    assert summary["guard_off"]["made_worse_share"] == 0.5
    assert summary["guard_off"]["worst_10pct"] == pytest.approx(0.6)
    assert summary["gain_points"] == pytest.approx(20.0)


def test_simulate_personalize_reports_per_device_accuracy_and_the_guard(tmp_path: Path) -> None:
    """Label skew: fine-tuning on each device's own data beats the global model there, and
    with the guard no device is worse off on its own test split."""
    out = tmp_path / "run"
    args = [
        *("--clients", "10", "--partition", "dirichlet:0.1", "--model", "cnn-small"),
        *("--rounds", "3", "--personalize", "finetune", "--personalize-epochs", "3"),
        *("--no-release", "--out", str(out), "--device-state-root", str(tmp_path / "dev")),
    ]
    proc = subprocess.run(
        [*FEDGE, "simulate", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "personal, guard on" in proc.stdout and "devices serve their personal" in proc.stdout
    report = json.loads((out / "results.json").read_text())["personalization"]
    assert report["devices"] == 10 and len(report["per_device"]) == 10
    assert report["guard_on"]["made_worse_share"] == 0.0
    assert report["guard_on"]["mean"] > report["global"]["mean"]
    assert report["gain_points"] > 5
    for device in report["per_device"]:
        served = device["personal-test"] if device["serves-personal"] else device["global-test"]
        assert served >= device["global-test"]
        assert device["test-samples"] >= 1
    assert (out / "personalization.png").stat().st_size > 0
