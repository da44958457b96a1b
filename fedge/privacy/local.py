"""Local, record-level DP: DP-SGD with Opacus on a device's own samples.

:func:`dp_train` trains a copy of the model with Opacus' ``PrivacyEngine.make_private``
(per-sample clipping to ``max_grad_norm``, Gaussian noise, Poisson-sampled batches) and returns
the new weights with what it spent, so the caller can record it in the device's ledger.
"""

import copy
import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "LocalDPResult",
    "check_dp_compatible",
    "dp_train",
    "local_noise_multiplier",
    "local_plan",
]

# Opacus' hooks make torch warn on every backward pass whose inputs need no gradient (data
# never does). A process-wide filter for this one message: ``catch_warnings`` is not
# thread-safe, and the local runtime trains clients on several threads.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


#: A task's training loss, ``loss(output, inputs, labels)``.
TaskLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def _cross_entropy(output: Tensor, _inputs: Tensor, labels: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output, labels)


@dataclass(frozen=True)
class LocalDPResult:
    """New weights, mean training loss and the privacy cost of one DP-SGD run."""

    state_dict: dict[str, Tensor]
    loss: float
    noise_multiplier: float
    sample_rate: float
    steps: int


def check_dp_compatible(model: nn.Module, *, option: str, value: object) -> None:
    """Refuse, naming the first layer and its fix, a model DP-SGD cannot train (Opacus'
    validator: e.g. BatchNorm mixes samples, so per-sample gradients do not exist)."""
    from opacus.validators import ModuleValidator

    from fedge.errors import ConfigError

    errors = ModuleValidator.validate(model, strict=False)
    if not errors:
        return
    leaves = [
        (name or type(model).__name__, module)
        for name, module in model.named_modules()
        if not list(module.children()) and ModuleValidator.validate(module, strict=False)
    ]
    name, layer = leaves[0] if leaves else (type(model).__name__, model)
    kind = type(layer).__name__
    fix = (
        "replace it with GroupNorm (opacus.validators.ModuleValidator.fix does it)"
        if "BatchNorm" in kind
        else "replace it with a layer Opacus supports"
    )
    raise ConfigError(
        option,
        value,
        f"cannot train under local DP-SGD: layer {name!r} ({kind}) has no per-sample "
        f"gradients; {fix}",
    )


def local_plan(*, num_records: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(sampling rate, steps)`` of one DP-SGD run: Opacus samples ``1/batches`` per step."""
    batches = max(1, math.ceil(num_records / batch_size))
    return 1.0 / batches, batches * epochs


def local_noise_multiplier(
    *,
    noise: float | None,
    budget: float | None,
    delta: float,
    sample_rate: float,
    planned_steps: int,
    method: str = "rdp",
) -> float:
    """``noise`` if given, else the least noise keeping ``planned_steps`` within ``budget``."""
    if noise is not None:
        return noise
    if budget is None:
        raise ValueError("local DP needs a noise multiplier or an epsilon budget")
    from fedge.privacy.accountant import noise_for_epsilon

    return noise_for_epsilon(
        target_epsilon=budget,
        delta=delta,
        sample_rate=sample_rate,
        steps=planned_steps,
        method=method,
    )


def dp_train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    noise_multiplier: float,
    max_grad_norm: float,
    seed: int | None,
    objective: TaskLoss | None = None,
) -> LocalDPResult:
    """DP-SGD on a copy of ``model``; ``seed=None`` draws the noise seed from the OS.
    ``objective(output, inputs, labels)`` is the task's loss (default: cross-entropy)."""
    from opacus import PrivacyEngine

    # Opacus' per-sample convolution gradients are wrong on channels-last activations (the
    # layout fedge's plain training uses), so DP-SGD runs in the standard layout.
    work = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    work.train()
    optimizer = torch.optim.SGD(work.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(63))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=generator)
    private: Any
    with warnings.catch_warnings():
        # Opacus warns that its secure RNG is off: the noise generator is seeded from the OS's
        # CSPRNG unless the user asked for a reproducible seed.
        warnings.simplefilter("ignore")
        private, dp_optimizer, dp_loader = PrivacyEngine(accountant="rdp").make_private(
            module=work,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=generator,
        )
    sample_rate = 1.0 / len(dp_loader)
    steps, total, count = 0, 0.0, 0
    for _ in range(epochs):
        total, count = 0.0, 0
        for xb, yb in dp_loader:
            dp_optimizer.zero_grad(set_to_none=True)
            out = private(xb)
            # An empty Poisson batch still takes a (pure-noise) step, as accounted: Opacus
            # gives it zero per-sample gradients and adds the noise.
            loss = (objective or _cross_entropy)(out, xb, yb) if len(yb) else out.sum() * 0.0
            loss.backward()
            dp_optimizer.step()
            steps += 1
            total += float(loss.detach()) * len(yb)
            count += len(yb)
    state = {k: v.detach().clone() for k, v in private._module.state_dict().items()}
    return LocalDPResult(state, total / max(count, 1), noise_multiplier, sample_rate, steps)
