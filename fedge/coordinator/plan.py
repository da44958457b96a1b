"""A run's plan: the operator's options resolved once, at submit, against the fleet.

The options arrive as a flat mapping (the CLI's flags, ``--set`` pairs and ``--config`` file,
unvalidated); :func:`resolve_plan` turns them into one :class:`~fedge.app.config.RunConfig`
on the ``grpc`` runtime, or refuses them with one :class:`~fedge.errors.ConfigError` naming the
option: a bad value, more devices than the fleet can train with, or a model that does not fit
the devices' data. The plan is stored once; its wire form (``RunConfig.to_run_config``) is what
devices receive with each task. Device-side paths are not options: each device keeps its own
state and data where its operator started it. A fleet with devices behind site gateways also
refuses what site aggregates cannot compute (:func:`fedge.app.sites.check_hierarchy`).
"""

from dataclasses import dataclass
from typing import Any

from fedge.app.config import RunConfig
from fedge.app.preflight import check_local_dp_model
from fedge.app.sites import check_hierarchy
from fedge.coordinator.state import DeviceRow, State
from fedge.data import get_dataset
from fedge.errors import ConfigError
from fedge.protocol.tasks import TaskHub

__all__ = ["FleetView", "may_train", "resolve_plan"]


@dataclass(frozen=True)
class FleetView:
    """The devices a run can train on: enrolled, not revoked, and with training support (or
    not yet connected, so not yet known to lack it)."""

    trainable: tuple[DeviceRow, ...]
    online: frozenset[int]

    @classmethod
    def of(cls, state: State, hub: TaskHub) -> "FleetView":
        """The fleet as the coordinator knows it now."""
        rows = tuple(d for d in state.devices() if may_train(d))
        return cls(rows, frozenset(hub.online([d.id for d in rows])))


def may_train(device: DeviceRow) -> bool:
    """Whether ``device`` can take a run's training tasks, as far as the coordinator knows
    (a site gateway never does: its devices do)."""
    never_connected = device.state == "enrolled"
    return not device.revoked and not device.is_gateway and (device.can_train or never_connected)


def resolve_plan(options: dict[str, Any], *, fleet: FleetView) -> RunConfig:
    """The run plan of ``options`` (see the module docstring)."""
    config = RunConfig.from_mapping({**options, "runtime": "grpc"})
    if config.min_clients > config.clients:
        raise ConfigError(
            "--min-clients", config.min_clients, f"is above --clients {config.clients}"
        )
    _check_fleet(config, fleet)
    check_local_dp_model(config)
    sites = sorted({d.site for d in fleet.trainable if d.site})
    if sites:
        check_hierarchy(
            config, why=f"devices of the fleet are behind gateways at {', '.join(sites)}"
        )
    elif config.site_rounds > 1:
        raise ConfigError("--site-rounds", config.site_rounds, "needs devices behind gateways")
    if config.gateways:
        raise ConfigError(
            "--gateways",
            config.gateways,
            "is for simulations: a deployment's sites are its gateways (`fedge fleet ls`)",
        )
    return config


def _check_fleet(config: RunConfig, fleet: FleetView) -> None:
    count = len(fleet.trainable)
    if config.clients > count:
        raise ConfigError(
            "--clients",
            config.clients,
            f"is above the {count} enrolled devices that can train (see `fedge fleet ls`; a "
            "device without fedge[train] or --data serves predictions only)",
        )
    dataset = get_dataset(config.dataset, data_dir=config.data_dir)
    shape = "x".join(map(str, dataset.input_shape))
    misfits = [
        d
        for d in fleet.trainable
        if d.data_shape and (d.data_shape != shape or d.data_classes > dataset.num_classes)
    ]
    if count - len(misfits) < config.clients:
        example = misfits[0]
        raise ConfigError(
            "--dataset",
            config.dataset,
            f"({shape}, {dataset.num_classes} classes) does not fit the data of "
            f"{len(misfits)} of the {count} devices, e.g. {example.name or example.device_id}: "
            f"{example.data_shape}, {example.data_classes} classes",
        )
