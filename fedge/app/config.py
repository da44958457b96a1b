"""The typed run configuration shared by ``fedge simulate``, the ServerApp and the ClientApp.

A :class:`RunConfig` is validated when built: a bad value raises
:class:`~fedge.errors.ConfigError` naming the CLI option and the value. Its privacy options are a
:class:`~fedge.privacy.config.PrivacyConfig` that validates itself. It can be read from a TOML
file (keys are the CLI option names, with dashes or underscores) and has one flat wire form
(:meth:`RunConfig.to_run_config`, Flower's ``run_config``: dashed keys, privacy options
included), which is what ``flwr run .`` gives and what devices receive with each task.
"""

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedge.app.availability import AVAILABILITY_HELP, parse_availability
from fedge.data.partition import parse_partition
from fedge.errors import ConfigError
from fedge.options import (
    BOTH,
    NESTED,
    SIMULATE,
    check_options,
    coerce_option,
    config_key,
    declared_options,
    layer_options,
    option,
)
from fedge.privacy.config import PrivacyConfig
from fedge.tracking import parse_track

if TYPE_CHECKING:
    from torch import nn

    from fedge.data import Dataset

__all__ = [
    "ASYNC_STRATEGIES",
    "BATCH_MODES",
    "DEVICE_KINDS",
    "FEATURE_SHIFTS",
    "MODES",
    "PARTITION_LEVELS",
    "PERSONALIZE_MODES",
    "PRECISIONS",
    "RUNTIMES",
    "RunConfig",
    "config_from_layers",
    "option_names",
]

RUNTIMES = ("local", "ray", "grpc")
MODES = ("sync", "async")
ASYNC_STRATEGIES = ("fedavg", "fedprox")
PRECISIONS = ("fp32", "bf16")
PARTITION_LEVELS = ("device", "site")
PERSONALIZE_MODES = ("off", "finetune")
FEATURE_SHIFTS = ("none", "device")
BATCH_MODES = ("auto", "on", "off")
#: What ``--device`` names: the CPU, or a CUDA GPU (``cuda``, or ``cuda:N`` for the N-th).
DEVICE_KINDS = ("cpu", "cuda")


def _models() -> list[str]:
    from fedge.models import list_models

    return list_models()


def _students() -> list[str]:
    from fedge.models import list_models

    return list_models(students_only=True)


def _strategies() -> list[str]:
    from fedge.app.strategies import list_strategies

    return list_strategies()


def _constant(*names: str) -> Callable[[], list[str]]:
    return lambda: list(names)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a federated run. Field names match CLI options (``_`` → ``-``).

    Each field is declared once with :func:`~fedge.options.option`: its help, range and the
    commands that offer it as a flag; privacy options are :class:`PrivacyConfig`'s.
    """

    task: str | None = option(
        None,
        help="Your task: FILE.py:NAME or package.module:NAME (a fedge Task: model, data, kind).",
        commands=BOTH,
    )
    data: str | None = option(
        None,
        help="Your data, no code: a CSV/Parquet table, an image folder (one sub-folder per "
        "class) or .npz; a tabular model is trained on it (see --label, --partition by:COLUMN).",
        commands=BOTH,
    )
    label: str = option("label", help="With --data: the label column.", commands=BOTH)
    kind: str | None = option(
        None,
        help="With --data: what the label column holds: classes (classification, the default) "
        "or a number to predict (regression: MSE loss, MAE and RMSE reported).",
        choices=_constant("classification", "regression"),
        commands=BOTH,
    )
    # Set from the task when a run is planned: a device whose own task's code differs refuses.
    task_sha256: str | None = option(
        None, help="The sha256 of the task's code every client must have (set from --task)."
    )
    # Checked by the registry (_validate): a family takes arguments (synthetic:ALPHA,BETA).
    dataset: str = option(
        "mnist-5k",
        help="Dataset name, or synthetic:ALPHA,BETA[,SEED] (FedProx's generated devices).",
        commands=BOTH,
    )
    data_dir: str | None = option(
        None, help="Directory of on-disk datasets (torchvision layout).", commands=SIMULATE
    )
    model: str = option("fedavg-cnn", help="Model name.", choices=_models, commands=BOTH)
    clients: int = option(10, help="Number of clients (devices of a run).", low=1, commands=BOTH)
    rounds: int = option(10, help="Federated rounds.", low=1, commands=BOTH)
    fraction: float = option(
        1.0,
        help="Fraction of clients sampled per round (the Poisson rate under central DP).",
        low=0.0,
        high=1.0,
        low_open=True,
        commands=BOTH,
    )
    fraction_evaluate: float = option(
        0.0, help="Fraction of clients asked to evaluate each round.", low=0.0, high=1.0
    )
    local_epochs: int = option(1, help="Local epochs per round.", low=1, commands=BOTH)
    batch_size: int = option(32, help="Local batch size.", low=1, commands=BOTH)
    lr: float = option(0.05, help="Client learning rate.", positive=True, commands=BOTH)
    momentum: float = option(
        0.9, help="Client SGD momentum.", low=0.0, high=1.0, high_open=True, commands=BOTH
    )
    # bf16 runs convolutions and matmuls in bfloat16 (autocast; weights stay fp32): about 1.5x
    # faster training on CPUs with AVX512-BF16 or AMX, at a small cost in exactness.
    precision: str = option(
        "fp32",
        help="fp32, or bf16 (faster on CPUs with AVX512-BF16/AMX).",
        choices=_constant(*PRECISIONS),
        commands=BOTH,
    )
    # Where a simulation's models live: each client's and the server's evaluation copy
    # (fedge.app.preflight refuses a CUDA device that is not there before anything is written).
    device: str = option(
        "cpu",
        help="Train and evaluate on cpu, or cuda (cuda:N: the N-th GPU) where a GPU is present.",
        commands=SIMULATE,
    )
    partition: str = option("iid", help="iid, dirichlet:ALPHA or shards:K.", commands=BOTH)
    strategy: str = option(
        "fedavg", help="Aggregation strategy.", choices=_strategies, commands=BOTH
    )
    proximal_mu: float = option(0.01, help="FedProx: proximal term mu.", low=0.0, commands=BOTH)
    trimmed_beta: float = option(
        0.2,
        help="FedTrimmedAvg: fraction trimmed at each end.",
        low=0.0,
        high=0.5,
        high_open=True,
        commands=BOTH,
    )
    krum_malicious: int = option(1, help="Krum: malicious clients tolerated.", low=0, commands=BOTH)
    server_lr: float = option(
        0.01, help="FedAdam: server learning rate.", positive=True, commands=BOTH
    )
    # Differential privacy (central and local): see fedge.privacy.config.
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig, metadata={NESTED: True})
    runtime: str = option(
        "local",
        help="local or ray (RAY_ADDRESS joins a Ray cluster); grpc is the coordinator's.",
        choices=_constant(*RUNTIMES),
        commands=SIMULATE,
    )
    seed: int = option(0, help="Seed of every random choice.", commands=BOTH)
    # fedge.app.batched: the result is the sequential one up to float rounding.
    batch_clients: str = option(
        "auto",
        help="Train a round's clients together in one batched computation: auto (small "
        "models, where it can), on (or fail saying why not), off.",
        choices=_constant(*BATCH_MODES),
        commands=SIMULATE,
    )
    min_clients: int = option(
        1,
        help="Fewest usable updates a round accepts (else retried, then failed).",
        low=1,
        commands=BOTH,
    )
    round_timeout: float = option(
        600.0,
        help="Seconds a round waits for its clients (--mode async on a coordinator: the "
        "longest a training task stays out).",
        low=0.0,
        low_open=True,
        commands=BOTH,
    )
    keep_checkpoints: int = option(2, help="Round checkpoints kept.", low=1)
    # Release pipeline (fedge.builder): build release/ beside results.json after the run, and
    # release-round-K/ every ``release_every`` rounds when > 0. ``student`` None picks by
    # dataset: student-cnn for images, student-mlp otherwise.
    release: bool = option(
        True, help="Build release/ (an int8 student) after the run.", commands=BOTH
    )
    student: str | None = option(
        None,
        help="Release student (default: student-cnn for images, else student-mlp).",
        choices=_students,
        commands=BOTH,
    )
    release_every: int = option(
        0, help="Also build release-round-K/ every K rounds (0: never).", low=0, commands=SIMULATE
    )
    release_epochs: int | None = option(
        None,
        help="Distillation epochs of the release build (default: the pipeline's).",
        low=1,
        commands=BOTH,
    )
    # Sites (fedge.app.sites): a simulation puts its clients behind ``gateways`` site gateways
    # (0: none) and splits the data by ``partition`` across devices, or across sites first
    # (then evenly among each site's devices). ``site_rounds`` local rounds of FedAvg run at
    # each gateway between two cloud rounds, in simulations and deployments alike.
    gateways: int = option(
        0,
        help="Put the clients behind K site gateways, aggregated per site (0: none).",
        low=0,
        commands=SIMULATE,
    )
    partition_level: str = option(
        "device",
        help="With --gateways: split the data by --partition across devices, or across sites.",
        choices=_constant(*PARTITION_LEVELS),
        commands=SIMULATE,
    )
    site_rounds: int = option(
        1,
        help="Local FedAvg rounds at each site per round (with gateways).",
        low=1,
        commands=BOTH,
    )
    # Personalisation (fedge.app.personalize): after the rounds, each simulated client adapts
    # the global model to its own data and serves it only if it wins on its validation split.
    personalize: str = option(
        "off",
        help="After the run, fine-tune the global model on each client's own data (guarded).",
        choices=_constant(*PERSONALIZE_MODES),
        commands=SIMULATE,
    )
    personalize_epochs: int = option(
        5, help="Epochs of each client's personal fine-tune.", low=1, commands=SIMULATE
    )
    feature_shift: str = option(
        "none",
        help="device: each client's inputs are transformed its own way (dimmed, inverted).",
        choices=_constant(*FEATURE_SHIFTS),
        commands=SIMULATE,
    )

    # fedge.tracking (optional extras): one tracked run per simulation.
    track: str = option(
        "",
        help="Track the run: tensorboard, mlflow or both (comma-separated), under --out.",
        commands=SIMULATE,
    )
    tracking_uri: str | None = option(
        None,
        help="With --track mlflow: the tracking URI (default: a SQLite store under --out).",
        commands=SIMULATE,
    )

    # Devices that come and go (fedge.app.async_loop, fedge.app.availability): a simulated
    # clock on which devices are reachable per --availability and train at log-normal speeds;
    # --mode async aggregates every --buffer updates as they arrive instead of in rounds.
    mode: str = option(
        "sync",
        help="sync rounds, or async: aggregate every --buffer updates as devices deliver them "
        "(--rounds counts model versions).",
        choices=_constant(*MODES),
        commands=BOTH,
    )
    buffer: int = option(
        10, help="--mode async: updates per aggregation (K).", low=1, commands=BOTH
    )
    concurrency: int = option(
        20, help="--mode async: devices training at once at most (C).", low=1, commands=BOTH
    )
    max_staleness: int = option(
        100,
        help="--mode async: refuse an update more than this many versions old.",
        low=0,
        commands=BOTH,
    )
    staleness_weight: str = option(
        "poly:0.5",
        help="--mode async: weight of an update tau versions old: poly:A ((1+tau)^-A) or constant.",
        commands=BOTH,
    )
    async_lr: float = option(
        1.0,
        help="--mode async: server learning rate on each buffer's mean update.",
        positive=True,
        commands=BOTH,
    )
    availability: str = option(
        "always",
        help="Simulated devices' reachability per --slot-seconds: " + AVAILABILITY_HELP,
        commands=SIMULATE,
    )
    slot_seconds: float = option(
        60.0,
        help="Simulated clock: length of an availability slot, seconds.",
        positive=True,
        commands=SIMULATE,
    )
    device_speed: float = option(
        1.0,
        help="Simulated clock: the median device's training speed, examples per second.",
        positive=True,
        commands=SIMULATE,
    )
    speed_sigma: float = option(
        0.0,
        help="Simulated clock: log-normal sigma of device speeds (0: all equal).",
        low=0.0,
        commands=SIMULATE,
    )

    def __post_init__(self) -> None:
        self._validate()

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # Rebuilt, not restored, in another process (a Ray worker): validation enters the
        # run's task into that process's registries too.
        return (RunConfig.from_mapping, (self.to_dict(),))

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (and validated); privacy options may be given flat."""
        private = {k: changes.pop(k) for k in list(changes) if k in _PRIVACY}
        if private:
            changes["privacy"] = dataclasses.replace(
                changes.get("privacy", self.privacy), **private
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready flat dict of every option (privacy options included)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "privacy"}
        flat.update(dataclasses.asdict(self.privacy))
        return {f.name: flat[f.name] for f, _ in declared_options(RunConfig)}

    def to_run_config(self) -> dict[str, bool | float | int | str]:
        """The wire form: Flower's flat ``run_config`` (dashed keys, no ``None`` values)."""
        return {
            name.replace("_", "-"): value
            for name, value in self.to_dict().items()
            if value is not None
        }

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunConfig":
        """Build from Flower's run config (``flwr run``), which may also name an ``out`` dir."""
        return cls.from_mapping({k: v for k, v in run_config.items() if k != "out"})

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a flat mapping with dashed or underscored keys; unknown keys are errors.

        With ``task`` or ``data``, the dataset and model default to the task's own.
        """
        known = {f.name: f.type for f, _ in declared_options(cls)}
        kwargs: dict[str, Any] = {}
        private: dict[str, Any] = {}
        for key, value in _with_task_defaults(values).items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(
                    str(key), value, f"is not a known option; valid: {', '.join(option_names())}"
                )
            target = private if name in _PRIVACY else kwargs
            target[name] = coerce_option(config_key(name), value, known[name], prefix="--")
        return cls(privacy=PrivacyConfig(**private), **kwargs)

    def _validate(self) -> None:
        if not isinstance(self.privacy, PrivacyConfig):
            raise ConfigError("privacy", self.privacy, "must be a PrivacyConfig")
        self._check_task()
        check_options(self, prefix="--")
        self._check_dataset()
        parse_track(self.track)
        parse_partition(self.partition)
        self.privacy.check_run(
            strategy=self.strategy,
            clients=self.clients,
            fraction=self.fraction,
            rounds=self.rounds,
            mode=self.mode,
        )
        self._validate_sites()
        self._validate_clock()
        self._validate_device()

    def _validate_device(self) -> None:
        """The form of ``--device`` and what runs where; whether the GPU is there is the
        preflight's (:func:`~fedge.app.preflight.check_device_visible`)."""
        kind, colon, index = self.device.partition(":")
        if kind not in DEVICE_KINDS or (colon and (kind != "cuda" or not index.isdigit())):
            raise ConfigError("--device", self.device, "must be cpu, cuda or cuda:N")
        if kind == "cpu":
            return
        if self.runtime == "grpc":
            raise ConfigError(
                "--device",
                self.device,
                "is for simulations (local, ray): a coordinator's devices train on their own "
                "hardware",
            )
        if colon and self.runtime == "ray":
            raise ConfigError(
                "--device", self.device, "names a GPU, but Ray gives each client its own: use cuda"
            )
        if self.privacy.local:
            raise ConfigError(
                "--device",
                self.device,
                "cannot run local DP-SGD: Opacus draws its noise from a CPU generator here "
                "(use --device cpu)",
            )

    def _check_dataset(self) -> None:
        from fedge.data.registry import dataset_problem

        problem = dataset_problem(self.dataset)
        if problem is not None:
            raise ConfigError("--dataset", self.dataset, problem)

    def _check_task(self) -> None:
        """Enter the run's task into the registries (in every process that builds this run)
        and refuse a dataset or model that is not the task's."""
        if self.task is None and self.data is None:
            return
        if self.task is not None and self.data is not None:
            raise ConfigError("--data", self.data, "conflicts with --task: the task names its data")
        ref = self.task_ref
        if self.kind is not None and self.task is not None and self.kind != ref.task.kind:
            raise ConfigError(
                "--kind", self.kind, f"conflicts with the task's kind ({ref.task.kind})"
            )
        if ref.task.kind == "regression" and parse_partition(self.partition).kind not in (
            "iid",
            "by",
        ):
            raise ConfigError(
                "--partition",
                self.partition,
                "splits by class; a regression target has none: use iid or by:COLUMN",
            )
        if ref.task.kind == "regression":
            self._check_regression_personalisation()
        if self.dataset != ref.dataset:
            raise ConfigError(
                "--dataset", self.dataset, f"conflicts with the task's own data ({ref.dataset})"
            )
        if self.task is not None and self.model != ref.model:
            raise ConfigError(
                "--model", self.model, f"conflicts with the task's own model ({ref.model})"
            )
        if self.task_sha256 is not None and self.task_sha256 != ref.code_sha256:
            task = ref.task
            raise ConfigError(
                "--task",
                self.task,
                f"is {task.name} {task.version} with code sha256 {ref.code_sha256[:12]}, "
                f"the run's task has code sha256 {self.task_sha256[:12]}: install the run's task",
            )

    def _check_regression_personalisation(self) -> None:
        """Personalisation judges each device's model by its class accuracy: not a regression's."""
        from fedge.app.personalize import PERSONAL_LAYERS

        if self.personalize != "off":
            raise ConfigError(
                "--personalize", self.personalize, "is for classification tasks, not regression"
            )
        if self.strategy in PERSONAL_LAYERS:
            raise ConfigError(
                "--strategy", self.strategy, "is for classification tasks, not regression"
            )

    @property
    def task_kind(self) -> str:
        """What the run's model predicts: ``classification`` for built-ins, else the task's."""
        ref = self.task_ref
        return str(ref.task.kind) if ref is not None else "classification"

    @functools.cached_property
    def task_ref(self) -> Any:
        """The run's loaded task (a :class:`~fedge.tasks.TaskRef`), or ``None``: loaded once
        per config (the round loop and every client message ask for its kind)."""
        if self.task is None and self.data is None:
            return None
        return _task_of(self.task, self.data, self.label, self.partition, self.kind)

    @property
    def declared_task(self) -> Any:
        """The run's :class:`~fedge.tasks.Task` (model, data, kind, loss, metrics), or ``None``
        for a built-in."""
        ref = self.task_ref
        return ref.task if ref is not None else None

    @property
    def declared_loss(self) -> Any:
        """The task's own ``loss(outputs, labels)``, or ``None``: the kind's loss."""
        task = self.declared_task
        return task.loss if task is not None else None

    @property
    def task_info(self) -> dict[str, str] | None:
        """The run's task (name, version, kind, code sha256), or ``None`` for built-ins."""
        ref = self.task_ref
        return ref.describe() if ref is not None else None

    def dataset_and_model(self) -> tuple["Dataset", "nn.Module"]:
        """The run's dataset and a new global model for it on ``--device``, initialised from
        the random generators (seed them first for a reproducible model)."""
        from fedge.data import get_dataset
        from fedge.models import get_model

        dataset = get_dataset(self.dataset, data_dir=self.data_dir)
        model = get_model(
            self.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
        )
        return dataset, model.to(self.device)

    def _validate_sites(self) -> None:
        if self.gateways > self.clients:
            raise ConfigError(
                "--gateways",
                self.gateways,
                f"is above --clients {self.clients}: a site needs a device",
            )
        if self.gateways == 0:
            if self.partition_level != "device":
                raise ConfigError("--partition-level", self.partition_level, "needs --gateways")
            return
        from fedge.app.sites import check_hierarchy

        check_hierarchy(self, why=f"--gateways {self.gateways}")

    @property
    def simulated_clock(self) -> bool:
        """Whether the run's simulated devices live on a simulated clock (availability and
        speeds), which async always needs; plain sync runs keep the clock off."""
        return (
            self.mode == "async"
            or self.availability != "always"
            or self.speed_sigma > 0
            or self.device_speed != 1.0
        )

    def _validate_clock(self) -> None:
        """Cross-field checks of async aggregation and the simulated clock."""
        from fedge.app.fedbuff import parse_staleness_weight

        parse_staleness_weight(self.staleness_weight)
        parse_availability(
            self.availability, devices=self.clients, slot_seconds=self.slot_seconds, seed=self.seed
        )
        # A coordinator's devices keep their own time: async runs there on the wall clock.
        wall_clock = self.runtime == "grpc" and self.mode == "async" and not self.gateways
        simulated = self.availability != "always" or self.speed_sigma > 0 or self.device_speed != 1
        if (
            self.simulated_clock
            and not (wall_clock and not simulated)
            and (self.runtime != "local" or self.gateways)
        ):
            option_name, value = (
                ("--mode", self.mode)
                if self.mode == "async" and not wall_clock
                else ("--availability", self.availability)
            )
            where = f"--gateways {self.gateways}" if self.gateways else f"--runtime {self.runtime}"
            raise ConfigError(
                option_name,
                value,
                f"runs on the local runtime's simulated clock without gateways, not with {where}",
            )
        if self.mode != "async":
            return
        if self.buffer > self.clients:
            raise ConfigError(
                "--buffer",
                self.buffer,
                f"is larger than the fleet (--clients {self.clients}): an aggregation takes one "
                "update per device",
            )
        if self.strategy not in ASYNC_STRATEGIES:
            raise ConfigError(
                "--strategy",
                self.strategy,
                f"does not run under --mode async (use {' or '.join(ASYNC_STRATEGIES)})",
            )
        if self.fraction != 1.0:
            raise ConfigError(
                "--fraction",
                self.fraction,
                "samples sync rounds; under --mode async --concurrency says how many train",
            )


def config_from_layers(config_file: Path | None, *layers: dict[str, Any]) -> RunConfig:
    """Defaults, then the TOML ``config_file``, then each layer in order (``None`` skipped).

    This is how ``fedge simulate`` resolves its options: flags win over the file.
    """
    return RunConfig.from_mapping(layer_options(config_file, *layers))


_PRIVACY = frozenset(PrivacyConfig.field_names())


def _task_of(
    task: str | None, data: str | None, label: str, partition: str, kind: str | None = None
) -> Any:
    from fedge.tasks import load_task
    from fedge.tasks.loader import data_task

    if task is not None:
        return load_task(task)
    spec = parse_partition(partition)
    group = spec.column if spec.kind == "by" else None
    return data_task(str(data), label=label, group=group, kind=kind or "classification")


def _with_task_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the dataset and model of its task, where they are not given; a device
    population's own model where a population is named and no model is."""
    flat = {str(k).replace("-", "_"): v for k, v in values.items()}
    task, data = flat.get("task"), flat.get("data")
    if "model" not in flat and isinstance(flat.get("dataset"), str):
        from fedge.data.registry import population_model

        model = population_model(str(flat["dataset"]), flat.get("data_dir"))
        if model is not None:
            return {**flat, "model": model}
    if not isinstance(task, str | None) or not isinstance(data, str | None):
        return values
    if (task is None and data is None) or (task is not None and data is not None):
        return values
    if task is not None and ".py:" in task:
        task = flat["task"] = _absolute_file_reference(task)
    if data is not None:
        data = flat["data"] = str(Path(data).expanduser().resolve())
    kind = flat.get("kind")
    ref = _task_of(
        task,
        data,
        str(flat.get("label", "label")),
        str(flat.get("partition", "iid")),
        kind if isinstance(kind, str) else None,
    )
    if task is not None:
        flat.setdefault("task_sha256", ref.code_sha256)
    flat.setdefault("dataset", ref.dataset)
    flat.setdefault("model", ref.model if task is not None else ref.default_model())
    return flat


def _absolute_file_reference(reference: str) -> str:
    """``file.py:NAME`` with the file's absolute path: workers and devices have another cwd."""
    where, _, attribute = reference.rpartition(":")
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise ConfigError("--task", reference, f"names {where}, which does not exist")
    return f"{path}:{attribute}"


def option_names() -> list[str]:
    """Every run option, as written on the command line and in TOML (dashed)."""
    return [f.name.replace("_", "-") for f, _ in declared_options(RunConfig)]
