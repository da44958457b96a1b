"""Synthetic(alpha, beta): the cross-device benchmark of FedProx (Li et al., MLSys 2020).

Device ``k`` has its own softmax model ``y = argmax(W_k x + b_k)`` and its own features:
``W_k, b_k ~ N(u_k, 1)`` with ``u_k ~ N(0, alpha)`` (how much the devices' models differ) and
``x ~ N(v_k, Sigma)`` with ``v_k ~ N(B_k, 1)``, ``B_k ~ N(0, beta)`` (how much their data
differ), ``Sigma = diag(j^-1.2)``; 60 features, 10 classes. Device sizes follow the power law
of LEAF's generator: ``int(lognormal(4, 2)) + 50`` samples.

Everything about device ``k`` is drawn from ``(seed, k)`` alone, so a device is generated when it
is sampled, identically in every process and for any population size; a population of 100,000
devices costs nothing until then.

Each device keeps the last fifth of its samples as its own test share (FedProx's 80/20 split of
every device) and trains on the rest. The test set is the test shares of devices 0 to 199, up to
50 samples each: device ids are independent draws, so these are a random sample of any
population of 200 or more devices (with fewer, the extra devices are unseen ones). A fixed sample
keeps evaluation O(1) in the population's size (every device's share would cost a pass over the
whole population each round) and weighs devices nearly equally, as cross-device benchmarks
report a typical device. Held-out devices would not do: each device labels with a model of its
own, so a global model is measured on the devices it serves. The server's public split
(distillation, calibration) is 40 devices outside every population, 50 samples each.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.data.population import PopulationDataset
from fedge.errors import ConfigError

__all__ = ["SyntheticPopulation", "load_synthetic", "parse_synthetic"]

FEATURES = 10 * 6
CLASSES = 10
SYNTAX = "synthetic:ALPHA,BETA[,SEED]"
_TEST_DEVICES, _PUBLIC_DEVICES, _PER_DEVICE = 200, 40, 50
_TEST_SHARE = 0.2
# Streams of the generator: population devices, public devices outside every population.
_POPULATION, _PUBLIC = 0, 1
_FEATURE_STD = np.power(np.arange(1, FEATURES + 1, dtype=np.float64), -1.2) ** 0.5


@dataclass(frozen=True)
class SyntheticPopulation:
    """The devices of Synthetic(``alpha``, ``beta``) for ``seed``; any number of them."""

    alpha: float
    beta: float
    seed: int = 0

    @property
    def max_devices(self) -> int | None:
        """Unbounded: device ``k`` exists for every ``k >= 0``."""
        return None

    @property
    def default_model(self) -> str:
        """An MLP (the paper trains multinomial logistic regression)."""
        return "mlp"

    def device_size(self, device: int) -> int:
        """How many samples device ``device`` holds (LEAF's lognormal power law)."""
        return _size(np.random.default_rng([self.seed, _POPULATION, device]))

    def device_data(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """Device ``device``'s training samples (all but its test share), from its seed."""
        if device < 0:
            raise ValueError(f"device {device} is negative")
        x, y = self._generate(_POPULATION, device)
        train = len(y) - _test_size(len(y))
        return x[:train], y[:train]

    def test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The test shares of devices ``0..199``, up to 50 samples each."""
        parts = []
        for device in range(_TEST_DEVICES):
            x, y = self._generate(_POPULATION, device)
            start = len(y) - _test_size(len(y))
            parts.append((x[start : start + _PER_DEVICE], y[start : start + _PER_DEVICE]))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def public_split(self) -> tuple[np.ndarray, np.ndarray]:
        """50 samples of each of 40 devices outside every population."""
        parts = [self._generate(_PUBLIC, k, limit=_PER_DEVICE) for k in range(_PUBLIC_DEVICES)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _generate(
        self, stream: int, device: int, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, stream, device])
        size = _size(rng)
        model_mean = rng.normal(0.0, self.alpha)
        data_mean = rng.normal(0.0, self.beta)
        centre = rng.normal(data_mean, 1.0, FEATURES)
        weights = rng.normal(model_mean, 1.0, (FEATURES, CLASSES))
        bias = rng.normal(model_mean, 1.0, CLASSES)
        size = size if limit is None else min(size, limit)
        x = centre + rng.standard_normal((size, FEATURES)) * _FEATURE_STD
        y = np.argmax(x @ weights + bias, axis=1)
        return x.astype(np.float32), y.astype(np.int64)


def _size(rng: np.random.Generator) -> int:
    return int(rng.lognormal(4.0, 2.0)) + 50


def _test_size(size: int) -> int:
    return max(1, int(size * _TEST_SHARE))


def parse_synthetic(arguments: str) -> SyntheticPopulation:
    """``ALPHA,BETA[,SEED]`` (the part after ``synthetic:``) as a population."""
    parts = [p.strip() for p in arguments.split(",")]
    try:
        if len(parts) in (2, 3):
            alpha, beta = float(parts[0]), float(parts[1])
            seed = int(parts[2]) if len(parts) == 3 else 0
            if alpha >= 0 and beta >= 0 and np.isfinite(alpha) and np.isfinite(beta) and seed >= 0:
                return SyntheticPopulation(alpha, beta, seed)
    except ValueError:
        pass
    raise ConfigError(
        "--dataset",
        f"synthetic:{arguments}",
        f"is not {SYNTAX} (ALPHA, BETA >= 0, SEED an integer >= 0)",
    )


def load_synthetic(arguments: str, data_dir: Path | None = None) -> PopulationDataset:
    """The dataset ``synthetic:ARGUMENTS``: a generated population and held-out splits."""
    population = parse_synthetic(arguments)
    x_test, y_test = population.test_split()
    x_public, y_public = population.public_split()
    return PopulationDataset(
        name=f"synthetic:{arguments}",
        x_train=np.zeros((0, FEATURES), dtype=np.float32),
        y_train=np.zeros(0, dtype=np.int64),
        x_test=x_test,
        y_test=y_test,
        x_public=x_public,
        y_public=y_public,
        num_classes=CLASSES,
        population=population,
    )
