"""Central, client-level differential privacy as a wrapper around any Flower strategy.

Each round, :class:`CentralDP`:

1. selects clients by Poisson sampling with rate q (possibly none),
2. clips each client's update (its delta from the global model, L2 norm over all floating
   tensors) to ``C``,
3. sums the clipped updates, adds Gaussian noise N(0, (zC)²) once to the sum, and divides by the
   fixed denominator ``q·N`` (the expected number of clients, not the number that answered),
4. hands the inner strategy one synthetic reply holding ``global + noised mean update``, so
   FedAvg/FedProx return it as is and FedAdam uses it as its pseudo-gradient (post-processing),
5. charges the round to a subsampled-Gaussian accountant.

A round with no sampled client still releases noise: skipping it would reveal that the sample
was empty, which the accountant does not allow for. Client metrics are not aggregated, because
they would leak outside the accounted mechanism.
"""

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore.run import Run

from fedge.privacy.accountant import Accountant
from fedge.privacy.adaptive import AdaptiveClip, count_noise_std, update_noise_multiplier
from fedge.privacy.sampling import make_generators, poisson_sample

__all__ = ["CentralDP", "clip_update", "update_norm"]


class CentralDP(Strategy):
    """Client-level DP around ``strategy`` (any ``flwr.serverapp.strategy.Strategy``)."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        noise_multiplier: float,
        clip_norm: float,
        sample_rate: float,
        population: int,
        delta: float,
        adaptive: bool = False,
        accountant: str = "rdp",
        seed: int | None = None,
    ) -> None:
        if noise_multiplier <= 0 or clip_norm <= 0 or population <= 0:
            raise ValueError("noise multiplier, clip norm and population must be positive")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample rate {sample_rate!r} is outside (0, 1]")
        for attr in ("min_train_nodes", "min_available_nodes"):
            # A Poisson sample can hold a single node: an inner strategy waiting for more
            # would wait forever.
            if int(getattr(strategy, attr, 1)) > 1:
                raise ValueError(
                    f"the inner strategy's {attr} is {getattr(strategy, attr)}; "
                    "CentralDP needs 1 (it decides the sample itself)"
                )
        self.strategy = strategy
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.population = population
        self.denominator = sample_rate * population
        self.seeded = seed is not None
        self.accountant = Accountant(delta=delta, method=accountant)
        self._sampling_rng, self._noise_rng = make_generators(seed, 2)
        self.adaptive: AdaptiveClip | None = None
        self.update_noise = noise_multiplier
        if adaptive:
            std = count_noise_std(
                noise_multiplier=noise_multiplier, expected_clients=self.denominator
            )
            self.adaptive = AdaptiveClip(clip_norm=clip_norm, count_std=std)
            self.update_noise = update_noise_multiplier(
                noise_multiplier=noise_multiplier, count_std=std
            )
        self._clip_norm = clip_norm
        self._global: ArrayRecord | None = None
        self._template: Message | None = None
        self.last_round: dict[str, float] = {}

    @property
    def clip_norm(self) -> float:
        """The clip norm of the next round (it moves under adaptive clipping)."""
        return self.adaptive.clip_norm if self.adaptive else self._clip_norm

    @property
    def epsilon(self) -> float:
        """ε spent so far at the accountant's δ."""
        return self.accountant.epsilon()

    def epsilon_after_next_round(self) -> float:
        """ε once one more round is released."""
        return self.accountant.epsilon_after(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Poisson-sample the clients and let the inner strategy build their messages."""
        nodes = sorted(grid.get_node_ids())
        sampled = poisson_sample(nodes, self.sample_rate, self._sampling_rng)
        self._global = arrays
        # The inner strategy keeps per-round state in configure_train (FedOpt keeps the current
        # arrays), so it is configured even when nobody is sampled; those messages are not sent.
        subset = _SubsetGrid(grid, sampled or nodes[:1])
        messages = list(self.strategy.configure_train(server_round, arrays, config, subset))
        self._template = messages[0] if messages else None
        return messages if sampled else []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip, sum, noise once, divide by q·N; then let the inner strategy apply it."""
        if self._global is None or self._template is None:
            raise RuntimeError("aggregate_train called before configure_train")
        replies = list(replies)
        global_arrays = {k: v.numpy() for k, v in self._global.items()}
        updates = [_update(_arrays_of(r), global_arrays) for r in replies]
        clip = self.clip_norm
        noised_mean, below = noised_mean_update(
            updates,
            global_arrays,
            clip_norm=clip,
            noise_std=self.update_noise * clip,
            denominator=self.denominator,
            rng=self._noise_rng,
        )
        new_arrays = ArrayRecord(
            {
                k: Array(np.asarray(v + noised_mean[k], dtype=v.dtype) if k in noised_mean else v)
                for k, v in global_arrays.items()
            }
        )
        self.last_round = {
            "clip": clip,
            "noise-std": self.update_noise * clip / self.denominator,
            "clients": float(len(replies)),
        }
        if self.adaptive is not None:
            self.last_round["below-clip-fraction"] = self.adaptive.update(
                below=below,
                sampled=len(replies),
                denominator=self.denominator,
                rng=self._noise_rng,
            )
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        synthetic = Message(
            RecordDict({"arrays": new_arrays, "metrics": MetricRecord({"num-examples": 1})}),
            reply_to=self._template,
        )
        aggregated, _ = self.strategy.aggregate_train(server_round, [synthetic])
        return aggregated, MetricRecord({f"dp-{k}": v for k, v in self.last_round.items()})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation is the inner strategy's (it releases metrics, not updates)."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate evaluation metrics with the inner strategy."""
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.strategy.summary()


def update_norm(update: dict[str, np.ndarray]) -> float:
    """The L2 norm of an update over all its tensors."""
    return math.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in update.values()))


def clip_update(update: dict[str, np.ndarray], clip_norm: float) -> dict[str, np.ndarray]:
    """``update`` scaled to L2 norm at most ``clip_norm``."""
    norm = update_norm(update)
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: d * factor for k, d in update.items()}


def noised_mean_update(
    updates: list[dict[str, np.ndarray]],
    reference: dict[str, np.ndarray],
    *,
    clip_norm: float,
    noise_std: float,
    denominator: float,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], int]:
    """``(Σ clip(Δ_i) + N(0, noise_std²)) / denominator`` and how many norms were ≤ C."""
    total = {k: np.zeros(v.shape, dtype=np.float64) for k, v in reference.items() if _is_float(v)}
    below = 0
    for update in updates:
        below += int(update_norm(update) <= clip_norm)
        for k, d in clip_update(update, clip_norm).items():
            total[k] += d
    # Clipping is done: the noise is added once, to the sum.
    return {
        k: (s + rng.normal(0.0, noise_std, s.shape)) / denominator for k, s in total.items()
    }, below


def _is_float(value: np.ndarray) -> bool:
    return bool(np.issubdtype(value.dtype, np.floating))


def _arrays_of(reply: Message) -> ArrayRecord:
    return next(iter(reply.content.array_records.values()))


def _update(arrays: ArrayRecord, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Only floating tensors are trained; integer buffers (counters) keep the global value.
    return {
        k: arrays[k].numpy().astype(np.float64) - ref
        for k, ref in reference.items()
        if _is_float(ref)
    }


class _SubsetGrid(Grid):
    """A view of ``grid`` whose nodes are only ``node_ids`` (the Poisson sample)."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)
