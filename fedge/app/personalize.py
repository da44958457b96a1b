"""Personalisation: each device adapts the global model to its own data, behind a guard.

Three ways a device gets a model of its own, all measured on each device's own test data:

- ``--personalize finetune``: after the run, every client fine-tunes the final global model on
  its own training split and serves the result only if it beats the global model on its own
  held-out validation split (the guard; fine-tuning alone makes some devices worse).
- ``--strategy fedbn``: the normalisation layers (BatchNorm, GroupNorm, LayerNorm) never leave
  the client's own copy: the server averages them like any layer, but a client trains and
  predicts with its own (FedBN, Li et al. 2021; for feature shift across sites or sensors).
- ``--strategy fedper``: the same for the last linear layer, a personal head (FedPer).

In coordinator runs (directly or through a site gateway) a device keeps its personal layers
in its state directory (:func:`personal_layers_file`) from one round to the next, so they
survive a restart of the device; they never leave it.

A simulated client splits its data deterministically into train / validation / test
(:data:`SPLIT`): rounds and fine-tuning see only the train part, the guard the validation
part, and the report the test part. ``--feature-shift device`` transforms each client's inputs
its own way (dimmed, inverted, both), like cameras in different light.

The guard and its reasons are the device's too (:mod:`fedge.edge.personalize`), so this module
loads torch and Flower only inside the functions that train.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord, Message, RecordDict
    from flwr.serverapp import Grid
    from torch import nn

    from fedge.app.client import ClientData
    from fedge.app.config import RunConfig

__all__ = [
    "NO_BUDGET",
    "NO_GAIN",
    "PERSONAL_LAYERS",
    "SHIFT_KINDS",
    "SPLIT",
    "TOO_LITTLE_DATA",
    "GuardDecision",
    "fine_tune",
    "guard",
    "keep_personal_layers",
    "local_parts",
    "local_split",
    "personal_keys",
    "personal_layers_file",
    "personalize_client",
    "personalize_fleet",
    "restore_personal_layers",
    "shift_inputs",
    "summarize",
    "training_part",
    "write_personalization_plot",
]

#: Each client's train / validation / test shares of its own data.
SPLIT = (0.6, 0.2, 0.2)
#: The layers a personalisation strategy keeps on the client, by strategy name.
PERSONAL_LAYERS = {"fedbn": "normalisation layers", "fedper": "the last linear layer"}
#: What ``--feature-shift device`` does to client ``i``'s inputs: ``SHIFT_KINDS[i % 4]``.
SHIFT_KINDS = ("none", "dim", "invert", "dim+invert")
#: How much a dimmed device's inputs keep of their brightness.
DIM_FACTOR = 0.3

#: Why a device keeps the global model (the guard's refusals), as reported by the device.
NO_GAIN = "no gain"
TOO_LITTLE_DATA = "too little data"
NO_BUDGET = "no budget left"
#: Fewest validation samples the guard decides on (fewer: too little data to tell).
MIN_VALIDATION = 5
#: Fewest training samples worth a fine-tune.
MIN_TRAIN = 10

_STATE_KEY = "personal-layers"
_ACTION = "evaluate.personalize"


@dataclass(frozen=True)
class GuardDecision:
    """Whether a device serves its personalised model, and why (``reason``: the outcome)."""

    serve_personal: bool
    reason: str
    global_accuracy: float
    personal_accuracy: float

    @property
    def gain(self) -> float:
        """Validation accuracy gained by the personalised model (negative: lost)."""
        return self.personal_accuracy - self.global_accuracy


def guard(
    global_accuracy: float, personal_accuracy: float, validation_samples: int
) -> GuardDecision:
    """Serve the personalised model only if it beats the global one on enough held-out data.

    A tie keeps the global model: a device changes what it serves only for a measured gain.
    """
    if validation_samples < MIN_VALIDATION:
        return GuardDecision(False, TOO_LITTLE_DATA, global_accuracy, personal_accuracy)
    if personal_accuracy > global_accuracy:
        return GuardDecision(True, "gain", global_accuracy, personal_accuracy)
    return GuardDecision(False, NO_GAIN, global_accuracy, personal_accuracy)


def local_split(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a device's train / validation / test parts (shuffled by ``seed``)."""
    order = np.random.default_rng([seed, num_samples, 7]).permutation(num_samples)
    val = round(num_samples * SPLIT[1])
    test = round(num_samples * SPLIT[2])
    train = num_samples - val - test
    return (
        np.sort(order[:train]),
        np.sort(order[train : train + val]),
        np.sort(order[train + val :]),
    )


def shift_inputs(x: np.ndarray, kind: str) -> np.ndarray:
    """``x`` as a device with sensor ``kind`` (see :data:`SHIFT_KINDS`) would see it.

    Works in the data's own range: the darkest value is the background, which dimming keeps.
    """
    if kind == "none" or x.size == 0:
        return x
    low, high = float(x.min()), float(x.max())
    out = x.astype(np.float32, copy=True)
    if "dim" in kind:
        out = low + (out - low) * DIM_FACTOR
        high = low + (high - low) * DIM_FACTOR
    if "invert" in kind:
        out = low + high - out
    return out.astype(x.dtype, copy=False)


def uses_local_splits(config: RunConfig) -> bool:
    """Whether simulated clients split their data into train / validation / test."""
    return (
        config.personalize != "off"
        or config.strategy in PERSONAL_LAYERS
        or config.feature_shift != "none"
    )


def client_shift(config: RunConfig, partition_id: int) -> str:
    """The sensor kind of simulated client ``partition_id``."""
    if config.feature_shift == "none":
        return "none"
    return SHIFT_KINDS[partition_id % len(SHIFT_KINDS)]


def training_part(
    config: RunConfig, partition_id: int, x: torch.Tensor, y: torch.Tensor, part: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of a simulated client that ``part`` (train, val, test or all) names.

    Without personalisation options a client trains on all of its data, as before.
    """
    import torch

    if not uses_local_splits(config):
        return x, y
    shifted = torch.from_numpy(shift_inputs(x.numpy(), client_shift(config, partition_id)))
    if part == "all":
        return shifted, y
    return local_parts(shifted, y, config.seed + partition_id)[part]


def local_parts(
    x: torch.Tensor, y: torch.Tensor, seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A device's samples as ``{"train": (x, y), "val": ..., "test": ...}``."""
    import torch

    names = ("train", "val", "test")
    indices = (torch.from_numpy(i) for i in local_split(len(y), seed))
    return {name: (x[i], y[i]) for name, i in zip(names, indices, strict=True)}


def personal_keys(model: nn.Module, strategy: str) -> list[str]:
    """The state-dict keys ``strategy`` keeps on the client (none for other strategies)."""
    from torch import nn

    if strategy == "fedbn":
        norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
        prefixes = [f"{name}." for name, m in model.named_modules() if isinstance(m, norms)]
    elif strategy == "fedper":
        heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        prefixes = [f"{heads[-1]}."] if heads else []
    else:
        return []
    return [k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)]


def personal_layers_file(node_config: dict[str, Any], run_id: int) -> Path | None:
    """Where a device keeps its personal layers of run ``run_id`` (``None``: a simulated
    client, which keeps them in memory only)."""
    if "state-dir" not in node_config:
        return None
    return Path(str(node_config["state-dir"])) / _STATE_KEY / f"run-{int(run_id)}.npz"


def restore_personal_layers(
    strategy: str, state: RecordDict, model: nn.Module, *, kept: Path | None = None
) -> None:
    """Put the client's own layers, kept by an earlier round, into ``model``: from the file
    ``kept`` on a device (:func:`personal_layers_file`), else from the client's ``state``."""
    import torch

    from fedge.app.arrays import torch_state_dict

    if strategy not in PERSONAL_LAYERS:
        return
    if kept is not None:
        if not kept.is_file():
            return
        with np.load(kept) as arrays:
            own = {k: torch.from_numpy(arrays[k].copy()) for k in arrays.files}
    elif _STATE_KEY in state.array_records:
        own = torch_state_dict(state.array_records[_STATE_KEY])
    else:
        return
    model.load_state_dict(own, strict=False)


def keep_personal_layers(
    strategy: str, state: RecordDict, model: nn.Module, *, kept: Path | None = None
) -> None:
    """Keep ``model``'s personal layers for the client's next round: in the file ``kept`` on
    a device (written atomically), else in the client's ``state``."""
    from flwr.app import ArrayRecord

    from fedge.files import atomic_write

    keys = personal_keys(model, strategy)
    if not keys:
        return
    weights = model.state_dict()
    own = {k: weights[k].detach().clone().contiguous() for k in keys}
    if kept is None:
        state.array_records[_STATE_KEY] = ArrayRecord(own)
        return
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.cpu().numpy() for k, v in own.items()})
    kept.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(kept, buffer.getvalue())


# -- simulation: every client personalises after the last round --------------------------------


def personalize_fleet(
    grid: Grid, config: RunConfig, arrays: ArrayRecord, out_dir: Path | None
) -> dict[str, Any]:
    """Ask every node to personalise the final global model and summarise what they report."""
    from flwr.app import ConfigRecord, RecordDict

    from fedge.app.validation import validate_evaluate_replies
    from fedge.log import logger

    settings = ConfigRecord({"epochs": config.personalize_epochs})
    messages = [
        grid.create_message(
            RecordDict({"arrays": arrays, "config": settings}), _ACTION, node, "personalize"
        )
        for node in sorted(grid.get_node_ids())
    ]
    replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
    kept, dropped = validate_evaluate_replies(replies)
    for d in dropped:
        logger.warning("personalisation: node %d: %s", d.node_id, d.reason)
    devices = [
        {"node": int(r.metadata.src_node_id), **dict(r.content.metric_records["metrics"])}
        for r in kept
    ]
    devices.sort(key=lambda d: d["node"])
    summary = summarize(devices)
    summary.update(mode=config.personalize, strategy=config.strategy, split=list(SPLIT))
    summary["feature_shift"] = config.feature_shift
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_personalization_plot(out_dir, summary)
    return summary


def personalize_client(
    msg: Message,
    state: RecordDict,
    config: RunConfig,
    data: ClientData,
    partition_id: int,
    *,
    kept: Path | None = None,
) -> Message:
    """One client's answer to :func:`personalize_fleet`: accuracies on its own splits.

    ``global`` is the fleet's model as delivered; ``personal`` the client's (its own layers
    under FedBN/FedPer, then fine-tuned with ``--personalize finetune``); the guard picks
    between them on the validation split and the test split reports both.
    """
    from flwr.app import Message, MetricRecord, RecordDict

    from fedge.app.arrays import torch_state_dict
    from fedge.app.training import evaluate

    split = local_parts(data.x, data.y, config.seed + partition_id)
    model = _fresh_model(config, data)
    model.load_state_dict(torch_state_dict(msg.content.array_records["arrays"]))
    global_val = evaluate(model, *split["val"]).accuracy
    global_test = evaluate(model, *split["test"]).accuracy
    restore_personal_layers(config.strategy, state, model, kept=kept)
    y_train = split["train"][1]
    epochs = msg.content.config_records["config"].get("epochs", config.personalize_epochs)
    assert isinstance(epochs, int)
    unguarded_test: float | None = None
    if config.personalize == "finetune" and len(y_train) >= MIN_TRAIN:
        _, last_state = fine_tune(
            model,
            split["train"],
            split["val"],
            epochs=epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            momentum=config.momentum,
            seed=config.seed * 7_919 + partition_id,
        )
        unguarded_test = _accuracy_of(model, last_state, split["test"])
    personal_val = evaluate(model, *split["val"]).accuracy
    personal_test = evaluate(model, *split["test"]).accuracy
    decision = guard(global_val, personal_val, len(split["val"][1]))
    if config.personalize == "finetune" and len(y_train) < MIN_TRAIN:
        decision = GuardDecision(False, TOO_LITTLE_DATA, global_val, personal_val)
    metrics = MetricRecord(
        {
            "num-examples": len(data.y),
            "train-samples": len(y_train),
            "test-samples": len(split["test"][1]),
            "global-val": global_val,
            "personal-val": personal_val,
            "global-test": global_test,
            "personal-test": personal_test,
            # Without the guard (no early stopping, no comparison) a device serves this.
            "unguarded-test": personal_test if unguarded_test is None else unguarded_test,
            "serves-personal": int(decision.serve_personal),
            "shift": SHIFT_KINDS.index(client_shift(config, partition_id)),
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


def fine_tune(
    model: nn.Module,
    train_part: tuple[torch.Tensor, torch.Tensor],
    val_part: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    seed: int,
) -> tuple[int, dict[str, torch.Tensor]]:
    """Fine-tune ``model`` in place, one epoch at a time, and keep the epoch that scores best
    on ``val_part`` (early stopping: no epoch beats the start, the start is kept).

    Returns the number of epochs kept (0: the model is unchanged) and the weights after the
    last epoch (what fine-tuning without a guard would serve).
    """
    from fedge.app.training import LocalTraining, evaluate, train

    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_accuracy, best_epoch = evaluate(model, *val_part).accuracy, 0
    one_epoch = LocalTraining(epochs=1, batch_size=batch_size, lr=lr, momentum=momentum)
    for epoch in range(1, epochs + 1):
        train(model, *train_part, local=one_epoch, seed=seed + epoch)
        accuracy = evaluate(model, *val_part).accuracy
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    last_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return best_epoch, last_state


def _accuracy_of(
    model: nn.Module, weights: dict[str, torch.Tensor], part: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """Accuracy of ``model`` with ``weights`` on ``part``; ``model`` keeps its own weights."""
    from fedge.app.training import evaluate

    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    accuracy = evaluate(model, *part).accuracy
    model.load_state_dict(own)
    return accuracy


def _fresh_model(config: RunConfig, data: ClientData) -> nn.Module:
    from fedge.models import get_model

    model = get_model(config.model, input_shape=data.input_shape, num_classes=data.num_classes)
    return model.to(config.device)


@dataclass(frozen=True)
class AccuracySpread:
    """Per-device accuracy of one way of serving, across the fleet."""

    mean: float
    worst_10pct: float
    made_worse_share: float
    improved_share: float


def _spread(served: list[float], reference: list[float]) -> AccuracySpread:
    if not served:
        return AccuracySpread(0.0, 0.0, 0.0, 0.0)
    worst = sorted(served)[: max(1, math.ceil(len(served) / 10))]
    pairs = list(zip(served, reference, strict=True))
    return AccuracySpread(
        mean=float(np.mean(served)),
        worst_10pct=float(np.mean(worst)),
        made_worse_share=sum(s < r for s, r in pairs) / len(pairs),
        improved_share=sum(s > r for s, r in pairs) / len(pairs),
    )


def summarize(devices: list[dict[str, Any]]) -> dict[str, Any]:
    """Fleet statistics of per-device test accuracy: global, personalised, with the guard.

    ``worst_10pct`` is the mean accuracy of the worst-off tenth of devices (at least one);
    ``made_worse_share`` the share of devices whose served model is worse than the global on
    their own test data.
    """
    global_acc = [float(d["global-test"]) for d in devices]
    personal = [float(d["unguarded-test"]) for d in devices]
    guarded = [
        float(d["personal-test"] if d["serves-personal"] else d["global-test"]) for d in devices
    ]
    on, off = _spread(guarded, global_acc), _spread(personal, global_acc)
    return {
        "devices": len(devices),
        "global": asdict(_spread(global_acc, global_acc)),
        "guard_off": asdict(off),
        "guard_on": asdict(on),
        "gain_points": 100 * (on.mean - float(np.mean(global_acc) if global_acc else 0.0)),
        "serving_personal": sum(int(d["serves-personal"]) for d in devices),
        "per_device": devices,
    }


def write_personalization_plot(out_dir: Path, summary: dict[str, Any]) -> Path:
    """``personalization.png``: each device's test accuracy, global against personalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted(summary["per_device"], key=lambda d: d["global-test"])
    index = np.arange(len(devices))
    fig, ax = plt.subplots(figsize=(max(6, len(devices) * 0.35), 4))
    width = 0.28
    served = [d["personal-test"] if d["serves-personal"] else d["global-test"] for d in devices]
    ax.bar(index - width, [d["global-test"] for d in devices], width, label="global")
    ax.bar(index, [d["unguarded-test"] for d in devices], width, label="fine-tuned (no guard)")
    ax.bar(index + width, served, width, label="served (guard on)")
    ax.set_xticks(index, [str(d["node"]) for d in devices], fontsize=7)
    ax.set_xlabel("device (node id), by global accuracy")
    ax.set_ylabel("accuracy on the device's own test split")
    on, glob = summary["guard_on"], summary["global"]
    ax.set_title(
        f"{summary['strategy']} + {summary['mode']}: mean {glob['mean']:.3f} -> {on['mean']:.3f}, "
        f"worse {on['made_worse_share']:.0%} (guard on), "
        f"{summary['guard_off']['made_worse_share']:.0%} (off)",
        fontsize=9,
    )
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = out_dir / "personalization.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
