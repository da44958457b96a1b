"""The device side of local DP: where its ledger lives, its noise, its budget check.

A device's state directory is ``node_config["state-dir"]`` when the runtime gives one (the edge
agent gives its own ``--state``); simulated devices use ``<device_state_root>/<partition-id>``,
the root being the simulation's choice, never a run option sent to devices. The ledger in it
is checked before every DP-SGD task and updated after, so a device refuses a task that would
take it past ``--local-dp-epsilon`` even across runs and restarts.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fedge.errors import ConfigError
from fedge.privacy.config import PrivacyConfig
from fedge.privacy.ledger import DeviceLedger, LedgerEntry, now
from fedge.privacy.local import TaskLoss, dp_train, local_noise_multiplier, local_plan

__all__ = ["DEVICE_EPSILON_KEY", "PrivateTrainResult", "device_state_dir", "train_private"]

DEVICE_EPSILON_KEY = "device-epsilon"


@dataclass(frozen=True)
class PrivateTrainResult:
    """The new weights, the training loss and the device's total ε after the task."""

    state_dict: dict[str, Tensor]
    loss: float
    device_epsilon: float


def device_state_dir(node_config: dict[str, Any], *, simulated_root: Path | None) -> Path:
    """The device's own state directory (created if missing)."""
    if "state-dir" in node_config:
        path = Path(str(node_config["state-dir"]))
    elif simulated_root is not None and "partition-id" in node_config:
        path = Path(simulated_root) / str(int(node_config["partition-id"]))
    else:
        raise ConfigError(
            "state-dir", None, "is not set: this device has nowhere to keep its ledger"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_private(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    config: PrivacyConfig,
    rounds: int,
    state_dir: Path,
    server_round: int,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    seed: int,
    objective: TaskLoss | None = None,
) -> PrivateTrainResult:
    """DP-SGD within the device's budget; raises PrivacyBudgetExceededError past it.
    ``objective`` is the task's loss (default: cross-entropy)."""
    sample_rate, steps = local_plan(num_records=len(y), batch_size=batch_size, epochs=epochs)
    noise = local_noise_multiplier(
        noise=config.local_dp_noise,
        budget=config.local_dp_epsilon,
        delta=config.dp_delta,
        sample_rate=sample_rate,
        planned_steps=steps * rounds,
        method=config.dp_accountant,
    )
    ledger = DeviceLedger(state_dir)
    ledger.check(
        noise_multiplier=noise,
        sample_rate=sample_rate,
        steps=steps,
        budget=config.local_dp_epsilon,
        delta=config.dp_delta,
        method=config.dp_accountant,
    )
    result = dp_train(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        noise_multiplier=noise,
        max_grad_norm=config.local_dp_clip,
        seed=seed if config.dp_seed is not None else None,
        objective=objective,
    )
    ledger.record(
        LedgerEntry(
            noise_multiplier=result.noise_multiplier,
            sample_rate=result.sample_rate,
            steps=result.steps,
            server_round=server_round,
            time=now(),
        )
    )
    epsilon = ledger.epsilon(delta=config.dp_delta, method=config.dp_accountant)
    return PrivateTrainResult(result.state_dict, result.loss, epsilon)
