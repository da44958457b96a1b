"""What the round loop needs from privacy: the budget stop, per-round ε, the run's notes."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Message

from fedge.privacy.central import CentralDP
from fedge.privacy.config import PrivacyConfig
from fedge.privacy.device import DEVICE_EPSILON_KEY

__all__ = ["budget_stop_reason", "privacy_notes", "round_privacy"]


def budget_stop_reason(strategy: object, config: PrivacyConfig, server_round: int) -> str | None:
    """Why round ``server_round`` must not run (it would cross ``--dp-max-epsilon``), or None."""
    if not isinstance(strategy, CentralDP) or config.dp_max_epsilon is None:
        return None
    after = strategy.epsilon_after_next_round()
    if after <= config.dp_max_epsilon:
        return None
    return (
        f"privacy budget: round {server_round} would bring epsilon from {strategy.epsilon:.4f} "
        f"to {after:.4f} > --dp-max-epsilon {config.dp_max_epsilon:g} (delta "
        f"{config.dp_delta:g}); stopped after round {server_round - 1}, keeping its model"
    )


def round_privacy(strategy: object, replies: Iterable[Message]) -> dict[str, Any]:
    """The privacy fields of a round's record: central ε and each device's reported ε."""
    extra: dict[str, Any] = {}
    if isinstance(strategy, CentralDP):
        extra["epsilon"] = strategy.epsilon
        extra["delta"] = strategy.accountant.delta
        extra["dp_clip"] = strategy.last_round.get("clip")
        extra["dp_noise_std"] = strategy.last_round.get("noise-std")
    devices: dict[str, float] = {}
    for msg in replies:
        for metrics in msg.content.metric_records.values():
            value = metrics.get(DEVICE_EPSILON_KEY)
            if isinstance(value, int | float):
                devices[str(msg.metadata.src_node_id)] = float(value)
    if devices:
        extra["device_epsilon"] = devices
        extra["device_epsilon_max"] = max(devices.values())
    return extra


def privacy_notes(
    strategy: object, config: PrivacyConfig, *, device_state_root: Path | None = None
) -> dict[str, Any]:
    """The run-level ``privacy`` section of ``results.json`` (empty when DP is off)."""
    if not (config.central or config.local):
        return {}
    seeded = config.dp_seed is not None
    notes: dict[str, Any] = {
        "delta": config.dp_delta,
        "accountant": config.dp_accountant,
        "noise_source": (
            f"seeded with --dp-seed {config.dp_seed} (reproducible, NOT for a real release)"
            if seeded
            else "OS secure randomness (secrets); not reproducible"
        ),
    }
    if isinstance(strategy, CentralDP):
        notes["central"] = {
            "level": "client",
            "noise_multiplier": strategy.noise_multiplier,
            "update_noise_multiplier": strategy.update_noise,
            "clip": config.dp_clip,
            "adaptive_clip": config.dp_adaptive_clip,
            "sampling": "poisson",
            "sample_rate": strategy.sample_rate,
            "population": strategy.population,
            "denominator": strategy.denominator,
            "rounds_accounted": strategy.accountant.steps,
            "epsilon": strategy.epsilon,
            "max_epsilon": config.dp_max_epsilon,
            "target_epsilon": config.dp_target_epsilon,
        }
    if config.local:
        notes["local"] = {
            "level": "record",
            "noise_multiplier": config.local_dp_noise,
            "clip": config.local_dp_clip,
            "device_budget": config.local_dp_epsilon,
            "state_root": (
                str(device_state_root)
                if device_state_root is not None
                else "each device's --state directory (privacy-ledger.json)"
            ),
        }
    return {"privacy": notes}
