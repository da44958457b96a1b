"""Run a simulated fleet on the ``local`` or ``ray`` runtime (the library of ``fedge simulate``)."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedge.app import RunResult, build_client_app, build_server_app
from fedge.app.arrays import torch_state_dict
from fedge.app.batched import BatchTrainer, plan_batching
from fedge.app.config import RunConfig
from fedge.app.preflight import check_device_visible, check_local_dp_model
from fedge.app.results import write_results
from fedge.app.server import RoundCallback
from fedge.errors import ConfigError
from fedge.runtime import run_local, run_ray

if TYPE_CHECKING:  # the release stack (onnx, onnxruntime) loads only when a release is built
    from flwr.app import ArrayRecord

    from fedge.app.checkpoint import Checkpoint
    from fedge.app.results import RoundRecord
    from fedge.builder.runs import ReleaseCallback
    from fedge.runtime.base import RunGrid
    from fedge.runtime.local import LocalGrid
    from fedge.tracking import Tracker

__all__ = ["DEFAULT_DEVICE_STATE_ROOT", "resume_point", "simulate"]

#: Where simulated devices keep their privacy ledgers, one folder per partition.
DEFAULT_DEVICE_STATE_ROOT = Path(".fedge/devices")


def simulate(
    config: RunConfig,
    *,
    out_dir: Path | None = None,
    on_round: RoundCallback | None = None,
    on_release: "ReleaseCallback | None" = None,
    device_state_root: Path = DEFAULT_DEVICE_STATE_ROOT,
    start_from: "Checkpoint | None" = None,
) -> RunResult:
    """Train ``config`` on a simulated fleet and return the run's result.

    With ``out_dir`` the run writes ``results.json``, per-round checkpoints, the final
    ``model.pt`` and the plots there, and (``config.release``) a release in ``release/``
    (every ``config.release_every`` rounds also in ``release-round-K/``); ``on_release`` is
    told when each release build starts and ends. Simulated devices keep their privacy
    ledgers under ``device_state_root`` (resolved here: Ray's workers have another cwd).
    ``start_from`` (a checkpoint of this run, see :func:`resume_point`) continues after its
    round, as the uninterrupted run would have.
    """
    from fedge.builder.runs import check_release_config, release_after_run, with_round_releases

    # Flower logs every round at INFO (and warns about settings fedge chose on purpose, such as
    # fraction_evaluate=0); fedge reports rounds and dropped clients itself.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    check_device_visible(config)
    _check_population(config)
    check_local_dp_model(config)
    check_release_config(config)
    on_round = with_round_releases(config, out_dir, on_round, on_release)
    trackers = _trackers(config, out_dir)
    on_round = _tracked(trackers, on_round)
    results: list[RunResult] = []
    root = Path(device_state_root).expanduser().absolute()
    server_app = build_server_app(
        config,
        out_dir=out_dir,
        on_round=on_round,
        results=results,
        device_state_root=root,
        start_from=start_from,
    )
    client_app = build_client_app(config, device_state_root=root)
    if config.gateways and config.runtime != "local":
        raise ConfigError("--gateways", config.gateways, "runs on the local runtime")
    batching = plan_batching(config)
    if config.runtime == "local":
        wrap = _site_grid(config) if config.gateways else None
        if config.simulated_clock:
            wrap = _clock_grid(config)
        batch = BatchTrainer(config) if batching.batched else None
        run_local(server_app, client_app, num_nodes=config.clients, wrap=wrap, batch_train=batch)
    elif config.runtime == "ray":
        run_ray(server_app, client_app, num_nodes=config.clients, device=config.device)
    else:
        raise ConfigError(
            "--runtime",
            config.runtime,
            "is not a simulation runtime; use local or ray (grpc runs on `fedge coordinator`)",
        )
    if not results:
        raise RuntimeError("the ServerApp finished without a result; see the log above")
    results[0].notes["client_training"] = batching.to_dict()
    if out_dir is not None:
        write_results(out_dir, results[0])
    release_after_run(config, out_dir, results[0], on_release)
    for tracker in trackers:
        tracker.finish(out_dir)
    return results[0]


def _trackers(config: RunConfig, out_dir: Path | None) -> "list[Tracker]":
    from fedge.tracking import open_trackers, parse_track

    names = parse_track(config.track)
    if not names:
        return []
    if out_dir is None:
        raise ConfigError("--track", config.track, "needs an output directory (--out)")
    return open_trackers(
        names, out_dir=out_dir, config=config.to_dict(), uri=config.tracking_uri, name=out_dir.name
    )


def _tracked(trackers: "list[Tracker]", on_round: RoundCallback | None) -> RoundCallback | None:
    if not trackers:
        return on_round

    def log(record: "RoundRecord") -> None:
        for tracker in trackers:
            tracker.log_round(record.to_dict())
        if on_round is not None:
            on_round(record)

    return log


def resume_point(out_dir: Path) -> "tuple[RunConfig, Checkpoint]":
    """The run kept in ``out_dir`` (its last round's checkpoint) and that run's options."""
    from fedge.app.checkpoint import load_checkpoint

    path = out_dir / "model.pt"
    if not path.is_file():
        raise ConfigError("--resume", str(out_dir), "holds no checkpoint (model.pt) to resume")
    checkpoint = load_checkpoint(path)
    config = RunConfig.from_mapping(checkpoint.config)
    if config.mode == "async":
        raise ConfigError(
            "--resume", str(out_dir), "holds a --mode async run: its updates in flight are not kept"
        )
    if checkpoint.server_round >= config.rounds:
        raise ConfigError(
            "--resume",
            str(out_dir),
            f"holds a finished run ({config.rounds} of {config.rounds} rounds)",
        )
    return config, checkpoint


def _site_grid(config: RunConfig) -> "Callable[[LocalGrid], RunGrid]":
    """Put the simulated clients behind ``config.gateways`` sites (node i is client i - 1)."""
    from fedge.app.metrics import test_scores
    from fedge.app.sites import site_members
    from fedge.runtime.sites import SiteGrid

    dataset, model = config.dataset_and_model()

    def site_accuracy(arrays: "ArrayRecord") -> float:
        model.load_state_dict(torch_state_dict(arrays))
        return test_scores(model, dataset, config.declared_task)["accuracy"]  # as rounds report

    members = [
        [c + 1 for c in clients] for clients in site_members(config.clients, config.gateways)
    ]
    return lambda local: SiteGrid(
        local,
        members=members,
        run_config=config.to_run_config(),
        site_rounds=config.site_rounds,
        evaluate=site_accuracy,
    )


def _clock_grid(config: RunConfig) -> "Callable[[LocalGrid], RunGrid]":
    """Put the simulated clients on a simulated clock (availability, log-normal speeds)."""
    from fedge.app.availability import device_speeds, parse_availability
    from fedge.runtime.clock import SimulatedClockGrid

    availability = parse_availability(
        config.availability,
        devices=config.clients,
        slot_seconds=config.slot_seconds,
        seed=config.seed,
    )
    speeds = device_speeds(
        config.clients, median=config.device_speed, sigma=config.speed_sigma, seed=config.seed
    )
    return lambda local: SimulatedClockGrid(
        local,
        availability=availability,
        speeds=speeds,
        local_epochs=config.local_epochs,
        min_nodes=config.min_clients,
        round_timeout=config.round_timeout,
    )


def _check_population(config: RunConfig) -> None:
    # Partition here, so that too many clients or too few samples per shard fail before the
    # run starts rather than inside a client; the local runtime's clients reuse the cache.
    from fedge.app.client import simulated_partitions
    from fedge.data import get_dataset
    from fedge.data.population import population_of

    dataset = get_dataset(config.dataset, data_dir=config.data_dir)
    population = population_of(dataset)
    if population is not None:
        _check_device_population(config, population.max_devices)
        return
    try:
        simulated_partitions(config, config.clients)
    except ConfigError as err:
        if err.option != "--clients" or config.clients <= len(dataset.y_train):
            raise
        # A fixed dataset split into more clients than samples would give clients no data:
        # large populations are devices that hold their own samples.
        raise ConfigError(
            "--clients",
            config.clients,
            f"is more than the {len(dataset.y_train)} training samples of {config.dataset}, "
            "so some clients would hold nothing; a larger population needs devices with data "
            "of their own (--dataset synthetic:1,1, or a LEAF directory)",
        ) from err


def _check_device_population(config: RunConfig, max_devices: int | None) -> None:
    """A population is partitioned by device: one client per device, no other split."""
    if max_devices is not None and config.clients > max_devices:
        raise ConfigError(
            "--clients",
            config.clients,
            f"is more than the {max_devices} devices of {config.dataset}",
        )
    if config.partition != "iid":
        raise ConfigError(
            "--partition",
            config.partition,
            f"does not apply: {config.dataset} is partitioned by device (leave the default)",
        )
    if config.partition_level != "device":
        raise ConfigError(
            "--partition-level",
            config.partition_level,
            f"does not apply: {config.dataset} is partitioned by device",
        )
