"""Plain PyTorch training and evaluation on in-memory tensors.

No ``DataLoader``: client partitions are small and already in memory, so batches are slices of
one tensor in an order drawn from a seeded generator. That keeps the ``local`` runtime fast and
deterministic. Image batches go through convolutions in channels-last layout, where oneDNN's
convolution and max-pooling kernels are fastest; ``precision="bf16"`` adds bfloat16 autocast.
The samples stay on the CPU; each batch goes to the device of the model's weights (a no-op for
a model on the CPU).
"""

import copy
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from fedge.app.config import PRECISIONS

__all__ = [
    "EvalResult",
    "LocalTraining",
    "compute_precision",
    "device_of",
    "evaluate",
    "map_one_thread_each",
    "reconstruction_errors",
    "set_seed",
    "sgd_step",
    "task_loss",
    "to_fast_layout",
    "train",
]

T = TypeVar("T")
R = TypeVar("R")

#: Task kinds whose model reconstructs its input (an autoencoder) instead of giving logits.
RECONSTRUCTING = ("anomaly",)


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy loss and accuracy over a set of samples."""

    loss: float
    accuracy: float
    num_examples: int


@dataclass(frozen=True)
class LocalTraining:
    """A client's local SGD: ``epochs`` passes over its samples in batches of ``batch_size``,
    the step size and momentum, and the FedProx weight (``proximal_mu`` 0: plain FedAvg)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    proximal_mu: float = 0.0


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch global generators."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def compute_precision(precision: str, device_type: str = "cpu") -> AbstractContextManager[object]:
    """Autocast to bfloat16 for ``"bf16"``; full precision for ``"fp32"``. ``device_type`` is
    where the model computes (``cpu``, ``cuda``): autocast acts on that device's operations."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are (the CPU for a model without any): its batches go there."""
    weight = next(model.parameters(), None)
    return weight.device if weight is not None else torch.device("cpu")


def to_fast_layout(batch: Tensor) -> Tensor:
    """Image batches (N, C, H, W) in channels-last memory; other tensors unchanged."""
    if batch.dim() == 4:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    local: LocalTraining,
    seed: int = 0,
    precision: str = "fp32",
    kind: str = "classification",
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> float:
    """Train ``model`` in place with SGD as ``local`` says; return the mean training loss of
    the last epoch.

    With ``local.proximal_mu > 0`` the FedProx term ``mu/2 * ||w - w_global||^2`` is added, where
    ``w_global`` is the model's weights on entry. ``kind`` is the task's: ``anomaly`` trains
    an autoencoder to reconstruct its input (labels unused), ``regression`` minimises the MSE
    of its one output, others minimise cross-entropy; a task's own ``loss`` replaces these.
    """
    objective = task_loss(kind, loss)
    device = device_of(model)
    generator = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    velocity: list[Tensor | None] = [None] * len(params)
    global_params = (
        [p.detach().clone() for p in model.parameters()] if local.proximal_mu > 0 else []
    )
    model.train()
    last_loss = 0.0
    for _ in range(local.epochs):
        order = torch.randperm(len(y), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(y), local.batch_size):
            idx = order[start : start + local.batch_size]
            for p in params:
                p.grad = None
            with compute_precision(precision, device.type):
                batch = to_fast_layout(x[idx].to(device))
                output = model(batch)
            batch_loss = objective(output.float(), batch, y[idx].to(device))
            if global_params:
                prox = sum(
                    ((p - g) ** 2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                batch_loss = batch_loss + 0.5 * local.proximal_mu * prox
            batch_loss.backward()
            sgd_step(params, velocity, lr=local.lr, momentum=local.momentum)
            total += float(batch_loss.detach()) * len(idx)
            count += len(idx)
        last_loss = total / max(count, 1)
    return last_loss


@torch.no_grad()
def sgd_step(
    params: Sequence[Tensor], velocity: list[Tensor | None], *, lr: float, momentum: float
) -> None:
    """``torch.optim.SGD``'s step (no dampening, weight decay or Nesterov), the same arithmetic.

    Without the optimizer object: constructing any ``torch.optim`` optimizer imports
    ``torch._dynamo``, seconds of a simulation's start. ``velocity`` holds each parameter's
    momentum buffer (``None`` before its first step) and is updated in place.
    """
    for i, p in enumerate(params):
        grad = p.grad
        if grad is None:  # as SGD: a parameter without a gradient keeps its weights and buffer
            continue
        if momentum:
            buffer = velocity[i]
            if buffer is None:
                buffer = velocity[i] = grad.detach().clone()
            else:
                buffer.mul_(momentum).add_(grad)
            grad = buffer
        p.add_(grad, alpha=-lr)


def task_loss(
    kind: str, declared: Callable[[Tensor, Tensor], Tensor] | None = None
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The training loss of a task kind, as ``loss(output, inputs, labels)``; ``declared``, the
    task's own ``loss(outputs, labels)``, replaces the kind's."""
    if declared is not None:
        return lambda output, _inputs, labels: declared(output, labels)
    if kind in RECONSTRUCTING:
        return lambda output, inputs, _labels: nn.functional.mse_loss(output, inputs.float())
    if kind == "regression":  # one output per sample against the standardised target
        return lambda output, _inputs, labels: nn.functional.mse_loss(output.reshape(-1), labels)
    return lambda output, _inputs, labels: nn.functional.cross_entropy(output, labels)


@torch.no_grad()
def reconstruction_errors(model: nn.Module, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """Each sample's mean squared reconstruction error (an autoencoder's anomaly score)."""
    model.eval()
    device = device_of(model)
    errors = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device)
        output = model(to_fast_layout(batch)).float()
        errors.append(((output - batch.float()) ** 2).flatten(1).mean(dim=1))
    return torch.cat(errors).cpu() if errors else torch.zeros(0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 128,
    precision: str = "fp32",
) -> EvalResult:
    """Loss and accuracy of ``model`` on ``(x, y)``.

    Image batches run on a channels-last copy of the model (the caller's keeps its layout):
    with input and weights in one layout oneDNN converts nothing, and batches of 128 keep a
    small CNN's activations in cache. On the CPU, batches run side by side on the torch
    threads' cores, one thread each (:func:`map_one_thread_each`); on a GPU, in turn.
    """
    model.eval()
    fast = _in_fast_layout(model) if x.dim() == 4 else model
    device = device_of(model)
    workers = torch.get_num_threads() if device.type == "cpu" else 1

    def score(start: int) -> tuple[float, int]:
        with torch.no_grad(), compute_precision(precision, device.type):
            logits = fast(to_fast_layout(x[start : start + batch_size].to(device))).float()
        target = y[start : start + batch_size].to(device)
        loss = float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        return loss, int((logits.argmax(dim=1) == target).sum())

    scores = map_one_thread_each(score, range(0, len(y), batch_size), workers)
    n = len(y)
    total_loss, correct = sum(loss for loss, _ in scores), sum(right for _, right in scores)
    return EvalResult(total_loss / max(n, 1), correct / max(n, 1), n)


def _in_fast_layout(model: nn.Module) -> nn.Module:
    """``model`` if its 4-D (convolution) weights are channels-last already, else such a copy.

    The copy's ReLUs work in place: nothing here keeps activations for a backward pass, and
    a fresh buffer for every ReLU output was a sixth of a small CNN's evaluation time.
    """
    weights = [p for p in model.parameters() if p.dim() == 4]
    if all(p.is_contiguous(memory_format=torch.channels_last) for p in weights):
        return model
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    for module in fast.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True
    return fast


def map_one_thread_each(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(item) for item in items]``, ``workers`` at a time, each on a single torch thread.

    The small tensors of edge models split over several OpenMP threads spend much of their
    time at the threads' barriers, worst on a busy machine; tasks side by side, one thread
    each, keep the cores busy instead. Results keep the order of ``items``. A call from
    inside one of these tasks runs its items in turn.
    """
    if workers <= 1 or len(items) < 2 or getattr(_IN_POOL, "worker", False):
        return [fn(item) for item in items]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return list(_one_thread_pool(workers).map(fn, items))
    finally:
        torch.set_num_threads(threads)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_IN_POOL = threading.local()


def _one_thread_pool(workers: int) -> ThreadPoolExecutor:
    # Kept for the process's life: a simulated round maps twice (training, evaluation), and
    # new threads each time cost about a tenth of a round's time. Keyed by process id too: a
    # forked child gets none of its parent's threads.
    key = (os.getpid(), workers)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(
                workers, thread_name_prefix="fedge-torch", initializer=_mark_pool_worker
            )
        return _POOLS[key]


def _mark_pool_worker() -> None:
    _IN_POOL.worker = True
