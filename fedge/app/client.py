"""The ClientApp factory: local training and evaluation on a client's own data.

The same ClientApp runs on every runtime. Its data comes from the node config: a simulated
client has a ``partition-id`` (and ``num-partitions``) into the run's dataset; a real device
will name its own data directory. The server's train config (learning rate, epochs, batch size,
FedProx's ``proximal-mu``) travels in each message, so the server controls the round.
"""

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedge.app.arrays import torch_state_dict
from fedge.app.config import RunConfig
from fedge.app.personalize import (
    PERSONAL_LAYERS,
    keep_personal_layers,
    personal_layers_file,
    personalize_client,
    restore_personal_layers,
    training_part,
)
from fedge.app.regression import evaluate_regression, target_scale
from fedge.app.training import EvalResult, LocalTraining, evaluate, task_loss, train
from fedge.data import get_dataset, parse_partition, partition_indices
from fedge.data.device import load_device_data
from fedge.data.population import population_of
from fedge.errors import DataError
from fedge.models import get_model

__all__ = [
    "ClientData",
    "TrainSetting",
    "build_client_app",
    "client_seed",
    "load_client_data",
    "simulated_partitions",
    "train_setting",
]


@dataclass(frozen=True)
class ClientData:
    """A client's local samples as tensors, plus what is needed to build its model."""

    x: torch.Tensor
    y: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class TrainSetting:
    """What a train message asks of a client: the round and the local training options."""

    server_round: int
    site_round: int
    local: LocalTraining


def train_setting(config: RunConfig, record: ConfigRecord) -> TrainSetting:
    """A train message's config record, the run's options where it says nothing."""
    return TrainSetting(
        server_round=int(_scalar(record, "server-round", 0)),
        site_round=int(_scalar(record, "site-round", 1)),
        local=LocalTraining(
            epochs=int(_scalar(record, "local-epochs", config.local_epochs)),
            batch_size=int(_scalar(record, "batch-size", config.batch_size)),
            lr=_scalar(record, "lr", config.lr),
            momentum=_scalar(record, "momentum", config.momentum),
            proximal_mu=_scalar(record, "proximal-mu", 0.0),
        ),
    )


_PARTITIONS: dict[tuple[Any, ...], list[Any]] = {}
_PARTITIONS_LOCK = threading.Lock()
# Models are per thread: the local runtime may train several clients at once in one process.
_THREAD = threading.local()


def load_client_data(
    config: RunConfig, node_config: dict[str, Any], part: str = "train"
) -> ClientData:
    """The samples of the client described by ``node_config`` (cached per process).

    A real device names its own ``data-dir`` (see :mod:`fedge.data.device`); a simulated client
    has a ``partition-id`` into the run's dataset, and with personalisation options trains on
    the ``part`` of it that :func:`~fedge.app.personalize.training_part` names.
    """
    if "data-dir" in node_config:
        local = load_device_data(Path(str(node_config["data-dir"])), dataset=config.dataset)
        x_local, y_local = torch.from_numpy(local.x), torch.from_numpy(local.y)
        if config.task_kind == "regression":  # the target in its units, scaled as the task's
            mean, std = target_scale(get_dataset(config.dataset, data_dir=config.data_dir))
            y_local = (y_local - mean) / std
        return ClientData(x_local, y_local, local.input_shape, local.num_classes)
    if "partition-id" not in node_config:
        raise DataError("node config has no 'partition-id': this client has no data source")
    partition_id = int(node_config["partition-id"])
    num_partitions = int(node_config.get("num-partitions", config.clients))
    if not 0 <= partition_id < num_partitions:
        raise DataError(f"partition-id {partition_id} is outside [0, {num_partitions})")
    dataset = get_dataset(config.dataset, data_dir=config.data_dir)
    population = population_of(dataset)
    if population is not None:  # a device's samples are built when it is sampled, not kept
        x_device, y_device = population.device_data(partition_id)
        x, y = torch.from_numpy(x_device), torch.from_numpy(y_device)
    else:
        x, y = simulated_partitions(config, num_partitions)[partition_id]
    x, y = training_part(config, partition_id, x, y, part)
    return ClientData(x, y, dataset.input_shape, dataset.num_classes)


def simulated_partitions(config: RunConfig, num_partitions: int) -> list[Any]:
    """Every simulated client's ``(x, y)`` tensors, partitioned once per process and cached.

    With ``--partition-level site`` the partition is taken across the ``--gateways`` sites,
    and each site's share is dealt evenly (shuffled by the seed) to its devices.
    """
    by_site = config.partition_level == "site" and config.gateways > 0
    key = (
        config.dataset,
        config.data_dir,
        num_partitions,
        config.partition,
        config.seed,
        config.gateways if by_site else 0,
    )
    with _PARTITIONS_LOCK:
        if key not in _PARTITIONS:
            dataset = get_dataset(config.dataset, data_dir=config.data_dir)
            spec = parse_partition(config.partition)
            if by_site:
                indices = _site_partitions(dataset.y_train, num_partitions, config, spec)
            else:
                indices = partition_indices(
                    dataset.y_train,
                    num_partitions,
                    spec,
                    seed=config.seed,
                    groups=dataset.groups_train,
                )
            _PARTITIONS[key] = [
                (torch.from_numpy(dataset.x_train[i]), torch.from_numpy(dataset.y_train[i]))
                for i in indices
            ]
        return _PARTITIONS[key]


def _site_partitions(labels: Any, num_partitions: int, config: RunConfig, spec: Any) -> list[Any]:
    import numpy as np

    from fedge.app.sites import site_members

    members = site_members(num_partitions, config.gateways)
    per_site = partition_indices(labels, len(members), spec, seed=config.seed)
    indices: list[Any] = [None] * num_partitions
    for site, (clients, share) in enumerate(zip(members, per_site, strict=True)):
        rng = np.random.default_rng([config.seed, site])
        for client, part in zip(
            clients, np.array_split(rng.permutation(share), len(clients)), strict=True
        ):
            indices[client] = np.sort(part)
    return indices


def build_client_app(
    config: RunConfig | None = None, *, device_state_root: Path | None = None
) -> ClientApp:
    """A ClientApp for ``config``; without one, the config is read from the run config.

    ``device_state_root``: where simulated devices (no ``state-dir`` in their node config) keep
    their privacy ledgers, one folder per partition.
    """
    app = ClientApp()
    root = Path(device_state_root).absolute() if device_state_root is not None else None

    @app.train()
    def train_handler(msg: Message, context: Context) -> Message:
        return _train(msg, context, config or _run_config(context), root)

    @app.evaluate()
    def evaluate_handler(msg: Message, context: Context) -> Message:
        return _evaluate(msg, context, config or _run_config(context))

    @app.evaluate("personalize")
    def personalize_handler(msg: Message, context: Context) -> Message:
        cfg = config or _run_config(context)
        data = load_client_data(cfg, dict(context.node_config), part="all")
        partition_id = int(context.node_config.get("partition-id", context.node_id))
        kept = personal_layers_file(dict(context.node_config), context.run_id)
        return personalize_client(msg, context.state, cfg, data, partition_id, kept=kept)

    return app


_CONFIGS: dict[tuple[int, str], RunConfig] = {}


def _run_config(context: Context) -> RunConfig:
    # A run's options arrive with every message: resolve them once per run, not per message.
    key = (int(context.run_id), repr(sorted(context.run_config.items())))
    if key not in _CONFIGS:
        _CONFIGS.clear()
        _CONFIGS[key] = RunConfig.from_run_config(_with_own_task(context))
    return _CONFIGS[key]


def _with_own_task(context: Context) -> dict[str, Any]:
    """The run's options, with the task this device's operator installed (``task`` in the
    node config) in place of the coordinator's reference: a device runs only code its operator
    installed, and refuses when that code is not the run's (``task-sha256``)."""
    run_config = dict(context.run_config)
    own = context.node_config.get("task")
    if run_config.get("task") is None:
        return run_config
    if own is None:
        if "data-dir" in context.node_config:  # a real device, not a simulated client
            raise DataError(
                f"the run trains task {run_config['task']} (code sha256 "
                f"{str(run_config.get('task-sha256', ''))[:12]}); this device has no task: "
                "start it with --task FILE.py:NAME"
            )
        return run_config
    return {**run_config, "task": str(own)}


def _model_for(config: RunConfig, data: ClientData, arrays: ArrayRecord) -> nn.Module:
    # One model object per thread and architecture: loading the global weights into it is
    # much cheaper than building a new module for every message.
    models: dict[tuple[Any, ...], nn.Module] = _THREAD.__dict__.setdefault("models", {})
    key = (config.model, data.input_shape, data.num_classes, config.device)
    if key not in models:
        # Channels-last convolution weights: loading the weights keeps this layout (and the
        # device: the message's CPU arrays are copied into the weights where they are).
        built = get_model(config.model, input_shape=data.input_shape, num_classes=data.num_classes)
        models[key] = built.to(config.device).to(memory_format=torch.channels_last)
    model = models[key]
    model.load_state_dict(torch_state_dict(arrays), strict=True)
    return model


def _train(msg: Message, context: Context, config: RunConfig, root: Path | None) -> Message:
    data = load_client_data(config, dict(context.node_config))
    model = _model_for(config, data, msg.content.array_records["arrays"])
    train_config: ConfigRecord = msg.content.config_records.get("config", ConfigRecord())
    partition_id = int(context.node_config.get("partition-id", context.node_id))
    kept = personal_layers_file(dict(context.node_config), context.run_id)
    restore_personal_layers(config.strategy, context.state, model, kept=kept)
    if config.privacy.local:
        return _train_private(msg, context, config, data, model, train_config, partition_id, root)
    setting = train_setting(config, train_config)
    loss = train(
        model,
        data.x,
        data.y,
        local=setting.local,
        seed=client_seed(config.seed, setting.server_round, partition_id, setting.site_round),
        precision=config.precision,
        kind=config.task_kind,
        loss=config.declared_loss,
    )
    keep_personal_layers(config.strategy, context.state, model, kept=kept)
    metrics = MetricRecord({"num-examples": len(data.y), "train-loss": loss})
    content = RecordDict({"arrays": _contiguous_arrays(model), "metrics": metrics})
    return Message(content=content, reply_to=msg)


def _evaluate(msg: Message, context: Context, config: RunConfig) -> Message:
    data = load_client_data(config, dict(context.node_config))
    model = _model_for(config, data, msg.content.array_records["arrays"])
    if config.task_kind == "regression":  # R² as accuracy: it needs no target units
        scores = evaluate_regression(model, data.x.numpy(), data.y.numpy())
        result = EvalResult(scores["loss"], scores["accuracy"], len(data.y))
    else:
        result = evaluate(model, data.x, data.y, precision=config.precision)
    metrics = MetricRecord(
        {"num-examples": result.num_examples, "eval-loss": result.loss, "eval-acc": result.accuracy}
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


def _contiguous_arrays(model: nn.Module) -> ArrayRecord:
    # Arrays travel from the CPU in the standard (row-major) layout, whatever device and layout
    # training used (.cpu() of a CPU tensor is the tensor itself).
    return ArrayRecord({k: v.cpu().contiguous() for k, v in model.state_dict().items()})


def client_seed(seed: int, server_round: int, partition_id: int, site_round: int = 1) -> int:
    """The seed of a client's batch order in a round (and of its DP noise, from ``dp-seed``)."""
    # A site's later local rounds (fedge.app.sites) shuffle differently; the first keeps the
    # flat run's seed.
    return (seed * 1_000_003 + server_round * 10_007 + partition_id + (site_round - 1) * 7_919) % (
        2**63
    )


def _scalar(record: ConfigRecord, key: str, default: float) -> float:
    value = record.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"train config {key!r} is {value!r}, expected a number")
    return float(value)


def _train_private(
    msg: Message,
    context: Context,
    config: RunConfig,
    data: ClientData,
    model: nn.Module,
    train_config: ConfigRecord,
    partition_id: int,
    root: Path | None,
) -> Message:
    """DP-SGD within the device's own budget; past it, an error reply (not a crash)."""
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    from fedge.errors import PrivacyBudgetExceededError
    from fedge.privacy.device import DEVICE_EPSILON_KEY, device_state_dir, train_private

    server_round = int(_scalar(train_config, "server-round", 0))
    site_round = int(_scalar(train_config, "site-round", 1))
    try:
        result = train_private(
            model,
            data.x,
            data.y,
            config=config.privacy,
            # Each cloud round is site_rounds tasks for a device behind a gateway.
            rounds=config.rounds * config.site_rounds,
            state_dir=device_state_dir(dict(context.node_config), simulated_root=root),
            server_round=server_round,
            epochs=int(_scalar(train_config, "local-epochs", config.local_epochs)),
            batch_size=int(_scalar(train_config, "batch-size", config.batch_size)),
            lr=_scalar(train_config, "lr", config.lr),
            momentum=_scalar(train_config, "momentum", config.momentum),
            seed=client_seed(config.privacy.dp_seed or 0, server_round, partition_id, site_round),
            objective=task_loss(config.task_kind, config.declared_loss),
        )
    except PrivacyBudgetExceededError as err:
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(err)), reply_to=msg)
    if config.strategy in PERSONAL_LAYERS:
        model.load_state_dict(result.state_dict)
        kept = personal_layers_file(dict(context.node_config), context.run_id)
        keep_personal_layers(config.strategy, context.state, model, kept=kept)
    metrics = MetricRecord(
        {
            "num-examples": len(data.y),
            "train-loss": result.loss,
            DEVICE_EPSILON_KEY: result.device_epsilon,
        }
    )
    content = RecordDict({"arrays": ArrayRecord(result.state_dict), "metrics": metrics})
    return Message(content=content, reply_to=msg)
