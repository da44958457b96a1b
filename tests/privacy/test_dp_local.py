"""Local DP-SGD on devices: the ledger across processes, the budget refusal, the state dir."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedge.app.config import RunConfig
from fedge.errors import ConfigError, FedgeError, PrivacyBudgetExceededError, RoundFailedError
from fedge.models import get_model
from fedge.privacy.accountant import Accountant
from fedge.privacy.config import PrivacyConfig
from fedge.privacy.device import device_state_dir
from fedge.privacy.ledger import LEDGER_FILE, DeviceLedger, LedgerEntry
from fedge.privacy.local import dp_train
from fedge.simulation import simulate

_WRITE = """
import sys
from fedge.privacy.ledger import DeviceLedger, LedgerEntry
DeviceLedger(sys.argv[1]).record(LedgerEntry(noise_multiplier=1.2, sample_rate=0.1, steps=40))
"""
_READ = """
import sys
from fedge.privacy.ledger import DeviceLedger
print(DeviceLedger(sys.argv[1]).epsilon(delta=1e-5))
"""


def _python(code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    _python(_WRITE, str(tmp_path))
    _python(_WRITE, str(tmp_path))  # a second process appends, it does not overwrite
    epsilon = float(_python(_READ, str(tmp_path)))
    expected = Accountant(delta=1e-5, history=[(1.2, 0.1, 80)]).epsilon()
    assert epsilon == pytest.approx(expected)
    assert len(json.loads((tmp_path / LEDGER_FILE).read_text())["entries"]) == 2
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind


def test_ledger_refuses_past_its_budget(tmp_path: Path) -> None:
    ledger = DeviceLedger(tmp_path)
    ledger.record(LedgerEntry(noise_multiplier=1.0, sample_rate=0.2, steps=50))
    spent = ledger.epsilon(delta=1e-5)
    with pytest.raises(PrivacyBudgetExceededError, match="budget"):
        ledger.check(
            noise_multiplier=1.0, sample_rate=0.2, steps=50, budget=spent + 0.5, delta=1e-5
        )
    after = ledger.check(
        noise_multiplier=1.0, sample_rate=0.2, steps=1, budget=spent + 0.5, delta=1e-5
    )
    assert spent < after <= spent + 0.5


def test_an_unreadable_ledger_is_an_error_not_a_fresh_budget(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text("{not json")
    with pytest.raises(FedgeError, match="unreadable"):
        DeviceLedger(tmp_path)


def test_state_dir_comes_from_the_node_config_when_given(tmp_path: Path) -> None:
    root = tmp_path / "root"
    given = device_state_dir(
        {"state-dir": str(tmp_path / "edge"), "partition-id": 3}, simulated_root=root
    )
    assert given == tmp_path / "edge"
    assert device_state_dir({"partition-id": 3}, simulated_root=root) == root / "3"
    with pytest.raises(ConfigError, match="state-dir"):  # a real device always names its own
        device_state_dir({}, simulated_root=None)


def test_dp_train_is_seeded_and_noisy() -> None:
    torch.manual_seed(0)
    model = get_model("student-mlp", input_shape=(1, 8, 8), num_classes=10)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))

    def run(seed: int) -> torch.Tensor:
        result = dp_train(
            model,
            x,
            y,
            epochs=2,
            batch_size=10,
            lr=0.5,
            momentum=0.0,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            seed=seed,
        )
        assert result.steps == 8 and result.sample_rate == pytest.approx(0.25)
        return torch.cat([v.flatten() for v in result.state_dict.values()])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    assert set(dict(model.state_dict())) == set(
        dp_train(
            model,
            x,
            y,
            epochs=1,
            batch_size=10,
            lr=0.1,
            momentum=0.0,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            seed=0,
        ).state_dict
    )


def test_devices_report_epsilon_and_refuse_past_budget_across_runs(tmp_path: Path) -> None:
    config = RunConfig(
        dataset="digits",
        model="student-mlp",
        clients=2,
        rounds=2,
        batch_size=32,
        lr=0.2,
        privacy=PrivacyConfig(local_dp_epsilon=2.0, dp_seed=0),
    )
    first = simulate(config, out_dir=tmp_path / "run1", device_state_root=tmp_path / "devices")
    for record in first.rounds:
        assert len(record.extra["device_epsilon"]) == 2
        assert 0 < record.extra["device_epsilon_max"] <= 2.0
    assert first.rounds[1].extra["device_epsilon_max"] > first.rounds[0].extra["device_epsilon_max"]
    for pid in (0, 1):
        assert (tmp_path / "devices" / str(pid) / LEDGER_FILE).is_file()
    # The same devices in a new run: their ledgers say the budget is spent, so nobody trains
    # and the run fails, with each device's reason, instead of "completing" untrained.
    with pytest.raises(RoundFailedError) as failed:
        simulate(
            config.replace(rounds=1),
            out_dir=tmp_path / "run2",
            device_state_root=tmp_path / "devices",
        )
    assert "round 1: 0 of 2 devices gave a usable update, need 1" in str(failed.value)
    assert len(failed.value.drops) == 2
    assert all("privacy budget exhausted" in str(d["reason"]) for d in failed.value.drops)
    assert not (tmp_path / "run2" / "model.pt").exists()  # no model from a round nobody trained
    results = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert results["rounds"][0]["device_epsilon_max"] <= 2.0
    assert results["privacy"]["local"]["device_budget"] == 2.0


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_dp_sgd_step_is_the_true_gradient_step_in_any_layout(layout: torch.memory_format) -> None:
    # No clipping (C far above any gradient norm), negligible noise, every record in the one
    # batch (rate 1): one DP-SGD step is plain gradient descent, whatever the model's layout.
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    model = get_model("dp-cnn", input_shape=(1, 12, 12), num_classes=10)
    reference = get_model("dp-cnn", input_shape=(1, 12, 12), num_classes=10)
    reference.load_state_dict(model.state_dict())
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    expected = {n: p.detach() - 0.1 * p.grad for n, p in reference.named_parameters()}
    result = dp_train(
        model.to(memory_format=layout),
        x,
        y,
        epochs=1,
        batch_size=16,
        lr=0.1,
        momentum=0.0,
        noise_multiplier=1e-9,
        max_grad_norm=1e3,
        seed=0,
    )
    assert result.steps == 1 and result.sample_rate == 1.0
    for name, value in expected.items():
        torch.testing.assert_close(result.state_dict[name], value, atol=1e-5, rtol=1e-4)
