"""Many clients per kernel: a round's sampled clients train together as one computation.

For the small models of cross-device FL, training clients one by one spends most of its time in
per-step overhead (a few dozen samples per client, a handful of steps). Here the clients' weights
are stacked along a new leading axis and every step runs all of them at once
(:func:`stack_clients`: a linear layer becomes one batched matrix product, a convolution one
grouped convolution, the clients' batches one after another in the input), with SGD with
momentum applied to the stacked weights. Each client keeps its own batch order (the same
seeded permutation as :func:`fedge.app.training.train`), its own number of steps (a client whose
samples run out stops: its weights and momentum are masked from later updates) and its own batch
sizes (padding rows carry zero weight in a masked mean), so the result is the sequential one up
to float rounding.

What cannot batch falls back to the sequential path, and :func:`plan_batching` says why: local
DP-SGD (Opacus trains each client alone), bf16 autocast, models with buffers (BatchNorm's running
statistics) or random layers (dropout), runtimes other than ``local``. ``auto`` also leaves
convolutional models sequential: their time is in the convolution kernels, which run once per
client either way (a grouped convolution, or im2col and a batched matrix product, measured no
faster on CPU), so batching them measured no faster than one client at a time, and slower with
its gathering and padding (``on`` batches them anyway).
"""

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from torch import Tensor, nn

from fedge.app.arrays import torch_state_dict
from fedge.app.client import ClientData, client_seed, load_client_data, train_setting
from fedge.app.config import RunConfig
from fedge.app.personalize import PERSONAL_LAYERS
from fedge.app.training import LocalTraining, map_one_thread_each, train
from fedge.errors import ConfigError

__all__ = [
    "AUTO_MAX_PARAMETERS",
    "BatchTrainer",
    "BatchingPlan",
    "plan_batching",
    "stack_clients",
    "train_together",
    "unstackable_layer",
]

#: ``auto`` batches models up to this size (the small models of cross-device FL); larger ones
#: spend their time in the kernels themselves, where batching gains little.
AUTO_MAX_PARAMETERS = 1_000_000
# Stacked weights, momentum and gradients of one group stay within this many bytes.
_GROUP_BYTES = 768 * 2**20
# Fewer clients than this with similar step counts train one by one.
_MIN_GROUP = 3
# A group pads its clients' steps to its longest client's: keep the padding under half the work.
_PADDING_SLACK = 1.5


@dataclass(frozen=True)
class BatchingPlan:
    """Whether a run's clients train batched, and why (not)."""

    batched: bool
    reason: str

    def describe(self) -> str:
        """The one line a run prints about it."""
        how = "batched" if self.batched else "sequential"
        return f"client training: {how} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        """The ``client_training`` entry of ``results.json``."""
        return {"batched": self.batched, "reason": self.reason}


def plan_batching(config: RunConfig) -> BatchingPlan:
    """How ``config``'s clients train; ``--batch-clients on`` with an obstacle is an error."""
    if config.batch_clients == "off":
        return BatchingPlan(False, "--batch-clients off")
    obstacle = _obstacle(config)
    if obstacle is None:
        return BatchingPlan(True, "each round's clients as one computation, stacked weights")
    if config.batch_clients == "on":
        raise ConfigError("--batch-clients", "on", f"cannot batch: {obstacle}")
    return BatchingPlan(False, obstacle)


def _obstacle(config: RunConfig) -> str | None:
    if config.runtime != "local":
        return f"the {config.runtime} runtime trains each client in its own worker"
    if config.privacy.local:
        return "local DP-SGD (Opacus) trains each client alone"
    if config.device != "cpu":
        return f"--device {config.device}: batched training runs on the CPU only"
    if config.precision != "fp32":
        return f"--precision {config.precision} is not batched"
    if config.simulated_clock:
        return "the simulated clock trains each device when its own events come"
    if config.declared_loss is not None:
        return "the task's own loss is trained one client at a time"
    if config.task_kind == "anomaly":
        return "an anomaly task's reconstruction loss is trained one client at a time"
    if config.task_kind == "regression":
        return "a regression task's MSE loss is trained one client at a time"
    if config.strategy in PERSONAL_LAYERS:
        return f"--strategy {config.strategy} keeps layers on each client between rounds"
    model = _global_model(config)
    if any(True for _ in model.buffers()):
        return f"model {config.model} has buffers (e.g. BatchNorm statistics), kept per client"
    layer = unstackable_layer(model)
    if layer is not None:
        return f"model {config.model}'s layer {layer} is not one batched training can stack"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return f"model {config.model} has dropout, whose random masks differ when batched"
    size = sum(p.numel() for p in model.parameters())
    if config.batch_clients == "auto" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return (
            f"model {config.model} has convolutions: their kernels run once per client either "
            "way, so batching is no faster on CPU (--batch-clients on batches them)"
        )
    if config.batch_clients == "auto" and size > AUTO_MAX_PARAMETERS:
        return (
            f"model {config.model} has {size:,} parameters, above auto's "
            f"{AUTO_MAX_PARAMETERS:,} (--batch-clients on batches it)"
        )
    return None


def _global_model(config: RunConfig) -> nn.Module:
    from fedge.data import get_dataset
    from fedge.models import get_model

    dataset = get_dataset(config.dataset, data_dir=config.data_dir)
    return get_model(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes)


class BatchTrainer:
    """Answers a round's train messages for the ``local`` runtime, all clients at once.

    Called by :class:`~fedge.runtime.local.LocalGrid` with the messages of one exchange; it
    returns ``None`` (the grid then runs each message itself) for anything but train messages
    that share one global model and one train config.
    """

    def __init__(self, config: RunConfig) -> None:
        self._config = config
        self._model = _global_model(config)

    def __call__(
        self, messages: Sequence[Message], contexts: Sequence[Context]
    ) -> list[Message] | None:
        """Replies to ``messages`` in order, or ``None`` when they cannot train together."""
        if len(messages) < 2 or not self._same_task(messages):
            return None
        replies: list[Message | None] = [None] * len(messages)
        clients: list[tuple[int, ClientData, int]] = []
        for i, context in enumerate(contexts):
            try:
                data = load_client_data(self._config, dict(context.node_config))
            except Exception:  # the sequential path turns it into the client's error reply
                return None
            partition = int(context.node_config.get("partition-id", context.node_id))
            clients.append((i, data, partition))
        first = messages[0].content
        arrays = first.array_records["arrays"]
        setting = train_setting(self._config, first.config_records.get("config", ConfigRecord()))
        self._model.load_state_dict(torch_state_dict(arrays), strict=True)
        seeds = [
            client_seed(self._config.seed, setting.server_round, partition, setting.site_round)
            for _, _, partition in clients
        ]
        states, losses = train_together(
            self._model,
            [(data.x, data.y) for _, data, _ in clients],
            local=setting.local,
            seeds=seeds,
            workers=os.cpu_count() or 1,
        )
        for (i, data, _), state, loss in zip(clients, states, losses, strict=True):
            metrics = MetricRecord({"num-examples": len(data.y), "train-loss": loss})
            content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})
            replies[i] = Message(content=content, reply_to=messages[i])
        return [r for r in replies if r is not None]

    def _same_task(self, messages: Sequence[Message]) -> bool:
        first = messages[0]
        if first.metadata.message_type != MessageType.TRAIN:
            return False
        arrays = first.content.array_records.get("arrays")
        config = first.content.config_records.get("config")
        for msg in messages[1:]:
            if msg.metadata.message_type != MessageType.TRAIN:
                return False
            other = msg.content.array_records.get("arrays")
            if other is not arrays and not _same_arrays(arrays, other):
                return False
            if dict(msg.content.config_records.get("config", {})) != dict(config or {}):
                return False
        return arrays is not None


def _same_arrays(a: ArrayRecord | None, b: ArrayRecord | None) -> bool:
    if a is None or b is None or list(a) != list(b):
        return False
    return all(a[k].data == b[k].data for k in a)


def train_together(
    model: nn.Module,
    clients: Sequence[tuple[Tensor, Tensor]],
    *,
    local: LocalTraining,
    seeds: Sequence[int],
    workers: int = 1,
) -> tuple[list[dict[str, Tensor]], list[float]]:
    """Train one copy of ``model`` (its weights on entry) per client, all at once.

    Returns each client's new weights and mean training loss of its last epoch, as
    :func:`fedge.app.training.train` with ``seed=seeds[i]`` would on ``clients[i]``. The
    clients are trained in groups of similar lengths, ``workers`` groups at a time.
    """
    states: list[dict[str, Tensor]] = [{} for _ in clients]
    losses = [0.0] * len(clients)
    plans = [
        _schedule(len(y), seed, local.epochs, local.batch_size)
        for (_, y), seed in zip(clients, seeds, strict=True)
    ]
    # At least one group per worker: each trains on one thread, as the sequential path does
    # (small tensors on several threads each spend their time waiting for each other).
    limit = min(_group_limit(model), -(-len(clients) // max(1, workers)))
    groups = _groups([len(p) for p in plans], limit)

    def run(group: list[int]) -> list[tuple[dict[str, Tensor], float]]:
        if len(group) < _MIN_GROUP:  # nothing to share: the sequential path is as fast
            return [_train_alone(model, clients[i], seeds[i], local) for i in group]
        group_states, group_losses = _train_group(
            model, [clients[i] for i in group], [plans[i] for i in group], local
        )
        return list(zip(group_states, group_losses, strict=True))

    for group, trained in zip(groups, map_one_thread_each(run, groups, workers), strict=True):
        for i, (state, loss) in zip(group, trained, strict=True):
            states[i], losses[i] = state, loss
    return states, losses


def _train_alone(
    model: nn.Module, client: tuple[Tensor, Tensor], seed: int, local: LocalTraining
) -> tuple[dict[str, Tensor], float]:
    alone = copy.deepcopy(model)
    loss = train(alone, *client, local=local, seed=seed)
    return {n: p.detach().clone() for n, p in alone.named_parameters()}, loss


@dataclass(frozen=True)
class _Step:
    epoch: int
    indices: Tensor


def _schedule(size: int, seed: int, epochs: int, batch_size: int) -> list[_Step]:
    """The batches :func:`fedge.app.training.train` draws for a client, in order."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for epoch in range(epochs):
        order = torch.randperm(size, generator=generator)
        steps += [_Step(epoch, order[s : s + batch_size]) for s in range(0, size, batch_size)]
    return steps


def _group_limit(model: nn.Module) -> int:
    per_client = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, min(256, _GROUP_BYTES // max(per_client, 1)))


def _groups(steps: Sequence[int], limit: int) -> list[list[int]]:
    """Clients in groups of similar step counts (longest first), at most ``limit`` each."""
    order = sorted(range(len(steps)), key=lambda i: (-steps[i], i))
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is not None and len(group) < limit:
            longest = steps[group[0]]
            work = sum(steps[j] for j in group) + steps[i]
            if longest * (len(group) + 1) <= _PADDING_SLACK * work:
                group.append(i)
                continue
        groups.append([i])
    return groups


def _train_group(
    model: nn.Module,
    clients: Sequence[tuple[Tensor, Tensor]],
    plans: Sequence[list[_Step]],
    local: LocalTraining,
) -> tuple[list[dict[str, Tensor]], list[float]]:
    count = len(clients)
    stacked = stack_clients(model, count)
    params = dict(stacked.named_parameters())
    proximal_mu = local.proximal_mu
    initial = {name: p.detach().clone() for name, p in params.items()} if proximal_mu else {}
    velocity: dict[str, Tensor] = {}
    x_all, y_all = _padded(clients)
    rows = torch.arange(count).unsqueeze(1)
    totals = torch.zeros(count, dtype=torch.float64)
    seen = torch.zeros(count, dtype=torch.float64)
    last_epoch = torch.tensor([plan[-1].epoch for plan in plans])
    stacked.train()
    for t in range(max(len(plan) for plan in plans)):
        index, mask, active, epoch = _step_batch(plans, t)
        x = x_all[rows, index].flatten(0, 1)
        logits = stacked(x).float()
        per_sample = nn.functional.cross_entropy(
            logits, y_all[rows, index].flatten(), reduction="none"
        )
        losses = (per_sample.view(mask.shape) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if proximal_mu:
            losses = losses + 0.5 * proximal_mu * sum(
                ((params[n] - initial[n]) ** 2).flatten(1).sum(dim=1) for n in params
            )
        for p in params.values():
            p.grad = None
        losses.sum().backward()  # clients share nothing: each slice gets its own gradient
        sizes = mask.sum(dim=1).double()
        counted = active & (epoch == last_epoch)
        totals = torch.where(counted, totals + losses.detach().double() * sizes, totals)
        seen = torch.where(counted, seen + sizes, seen)
        with torch.no_grad():
            _sgd_step(params, velocity, active, lr=local.lr, momentum=local.momentum)
    states = [{n: p[k].detach().clone() for n, p in params.items()} for k in range(count)]
    return states, [float(totals[k] / max(float(seen[k]), 1.0)) for k in range(count)]


def _padded(clients: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Every client's samples in one tensor, shorter clients padded with their first row."""
    longest = max(len(y) for _, y in clients)
    xs, ys = [], []
    for x, y in clients:
        pad = longest - len(y)
        xs.append(torch.cat([x, x[:1].expand(pad, *x.shape[1:])]) if pad else x)
        ys.append(torch.cat([y, y[:1].expand(pad)]) if pad else y)
    return torch.stack(xs), torch.stack(ys)


def _step_batch(plans: Sequence[list[_Step]], t: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step ``t``'s rows of every client, their mask, who is active and in which epoch.

    Rows are padded to the step's widest batch, not the run's: an epoch's short last batches
    then cost what they hold, not a full batch each.
    """
    width = max(len(plan[t].indices) for plan in plans if t < len(plan))
    index = torch.zeros(len(plans), width, dtype=torch.long)
    mask = torch.zeros(len(plans), width)
    active = torch.zeros(len(plans), dtype=torch.bool)
    epochs = torch.full((len(plans),), -1)
    for k, plan in enumerate(plans):
        if t < len(plan):
            rows = plan[t].indices
            index[k, : len(rows)] = rows
            mask[k, : len(rows)] = 1.0
            active[k] = True
            epochs[k] = plan[t].epoch
    return index, mask, active, epochs


def _sgd_step(
    params: dict[str, nn.Parameter],
    velocity: dict[str, Tensor],
    active: Tensor,
    *,
    lr: float,
    momentum: float,
) -> None:
    """``torch.optim.SGD``'s update for the active clients; the others keep their state."""
    for name, p in params.items():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        on = active.view((-1,) + (1,) * (g.dim() - 1))
        if momentum > 0:
            if name not in velocity:
                velocity[name] = g.clone()  # SGD's first step: the buffer is the gradient
            else:
                velocity[name] = torch.where(on, velocity[name] * momentum + g, velocity[name])
            g = velocity[name]
        p.copy_(torch.where(on, p - lr * g, p))


def stack_clients(model: nn.Module, count: int) -> nn.Module:
    """A copy of ``model`` that runs ``count`` clients' copies of it at once.

    Its input is the clients' batches one after another (``count * B`` rows); each layer with
    weights holds them stacked (``count`` copies along a new first axis) and applies each
    client's copy to that client's rows. Layers without weights act per sample already.
    """
    stacked = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    for name, layer in list(stacked.named_modules()):
        kind = _STACKED.get(type(layer))
        if kind is not None:
            _set_module(stacked, name, kind(layer, count))
        elif any(True for _ in layer.parameters(recurse=False)):
            raise ValueError(f"layer {name} ({type(layer).__name__}) cannot be batched")
    return stacked


def unstackable_layer(model: nn.Module) -> str | None:
    """The first layer with weights that :func:`stack_clients` cannot stack, or ``None``."""
    for name, layer in model.named_modules():
        if type(layer) not in _STACKED and any(True for _ in layer.parameters(recurse=False)):
            return f"{name} ({type(layer).__name__})"
    return None


def _set_module(root: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attribute, layer)


def _stack(tensor: Tensor | None, count: int) -> nn.Parameter | None:
    if tensor is None:
        return None
    return nn.Parameter(tensor.detach().unsqueeze(0).repeat(count, *[1] * tensor.dim()).clone())


class _StackedLinear(nn.Module):
    """``count`` copies of a linear layer: one batched matrix product."""

    def __init__(self, layer: nn.Linear, count: int) -> None:
        super().__init__()
        self.count = count
        self.weight = _stack(layer.weight, count)
        self.bias = _stack(layer.bias, count)

    def forward(self, x: Tensor) -> Tensor:
        assert self.weight is not None
        lead = x.shape[:-1]
        out = torch.bmm(x.reshape(self.count, -1, x.shape[-1]), self.weight.transpose(1, 2))
        if self.bias is not None:
            out = out + self.bias.unsqueeze(1)
        return out.reshape(*lead, out.shape[-1])


class _StackedConv2d(nn.Module):
    """``count`` copies of a 2-D convolution, each over its client's rows.

    One convolution per client: oneDNN's grouped convolution (``groups=count``), the obvious
    single kernel, measured up to 7x slower on CPU for the few input channels of a first layer.
    """

    def __init__(self, layer: nn.Conv2d, count: int) -> None:
        super().__init__()
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"a convolution with padding {layer.padding!r} cannot be batched")
        self.count = count
        self.stride, self.padding = layer.stride, layer.padding
        self.dilation, self.groups = layer.dilation, layer.groups
        self.weight = _stack(layer.weight, count)
        self.bias = _stack(layer.bias, count)

    def forward(self, x: Tensor) -> Tensor:
        assert self.weight is not None
        per_client = x.reshape(self.count, -1, *x.shape[1:])
        outs = [
            nn.functional.conv2d(
                per_client[k],
                self.weight[k],
                None if self.bias is None else self.bias[k],
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
            for k in range(self.count)
        ]
        return torch.cat(outs)


class _StackedGroupNorm(nn.Module):
    """``count`` copies of a group normalization: shared statistics code, per-client affine."""

    def __init__(self, layer: nn.GroupNorm, count: int) -> None:
        super().__init__()
        self.count, self.groups, self.eps = count, layer.num_groups, layer.eps
        self.weight = _stack(layer.weight, count)
        self.bias = _stack(layer.bias, count)

    def forward(self, x: Tensor) -> Tensor:
        out = nn.functional.group_norm(x, self.groups, eps=self.eps)
        shape = (self.count, -1, x.shape[1]) + (1,) * (x.dim() - 2)
        out = out.reshape(self.count, -1, *x.shape[1:])
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out.reshape(x.shape)


_STACKED: dict[type[nn.Module], Callable[[Any, int], nn.Module]] = {
    nn.Linear: _StackedLinear,
    nn.Conv2d: _StackedConv2d,
    nn.GroupNorm: _StackedGroupNorm,
}
