"""Central client-level DP: noise scale, clipping bound, clipping before noise, sampling."""

from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from fedge.privacy.adaptive import update_noise_multiplier
from fedge.privacy.central import noised_mean_update
from fedge.privacy.sampling import make_generators, poisson_sample


def _zero(pid: int, w: np.ndarray) -> np.ndarray:
    return np.zeros_like(w)


@pytest.mark.parametrize(("population", "rate"), [(10, 1.0), (40, 0.25)])
def test_noise_std_on_zero_updates_is_zc_over_fixed_denominator(
    dp: Any, weights: ArrayRecord, population: int, rate: float
) -> None:
    z, clip = 1.3, 0.7
    strategy = dp.central(
        noise_multiplier=z, clip_norm=clip, sample_rate=rate, population=population
    )
    grid = dp.update_grid(population, _zero)
    draws = []
    for r in range(1, 6):
        new, _ = dp.one_round(strategy, grid, weights, r)
        draws.append(dp.delta_of(new, weights))
    noise = np.concatenate(draws)
    expected = z * clip / (rate * population)  # the denominator is q*N, not who answered
    assert abs(noise.std() / expected - 1.0) < 0.05
    assert abs(noise.mean()) < 0.05 * expected


def test_huge_update_moves_aggregate_by_at_most_c_over_denominator(
    dp: Any, weights: ArrayRecord
) -> None:
    clip, population = 0.5, 10

    def huge_from_node_0(pid: int, w: np.ndarray) -> np.ndarray:
        return np.full_like(w, 1e6) if pid == 0 else np.zeros_like(w)

    strategy = dp.central(noise_multiplier=1e-9, clip_norm=clip, population=population)
    new, sampled = dp.one_round(strategy, dp.update_grid(population, huge_from_node_0), weights)
    assert sampled == population
    moved = np.linalg.norm(dp.delta_of(new, weights))
    assert moved <= clip / population * (1 + 1e-4)
    assert moved == pytest.approx(clip / population, rel=1e-3)  # clipped, not dropped


def test_clipping_happens_before_noise(dp: Any, weights: ArrayRecord) -> None:
    z, clip, population = 1.0, 1.0, 10
    rng = np.random.default_rng(1)
    directions = {}

    def huge(pid: int, w: np.ndarray) -> np.ndarray:
        key = (pid, w.shape)
        if key not in directions:
            directions[key] = rng.normal(size=w.shape) * 1e5
        return directions[key]

    strategy = dp.central(noise_multiplier=z, clip_norm=clip, population=population)
    grid = dp.update_grid(population, huge)
    new, _ = dp.one_round(strategy, grid, weights)
    updates = [
        {k: directions[(pid, weights[k].numpy().shape)] for k in weights}
        for pid in range(population)
    ]
    clipped_sum = np.zeros(10_010)
    for u in updates:
        flat = np.concatenate([u[k].ravel() for k in weights])
        clipped_sum += flat * clip / np.linalg.norm(flat)
    residual = dp.delta_of(new, weights) - clipped_sum / population
    # Noise added after clipping keeps its full scale zC/den; noise clipped with the update
    # would be ~1e-5 of it, and no clipping would leave residuals of ~1e5.
    assert abs(residual.std() / (z * clip / population) - 1.0) < 0.05


def test_noised_mean_update_without_noise_is_the_clipped_mean() -> None:
    reference = {"w": np.zeros(3, dtype=np.float32)}
    updates = [{"w": np.array([3.0, 4.0, 0.0])}, {"w": np.array([0.1, 0.0, 0.0])}]
    mean, below = noised_mean_update(
        updates,
        reference,
        clip_norm=1.0,
        noise_std=0.0,
        denominator=4.0,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(mean["w"], np.array([0.7, 0.8, 0.0]) / 4.0)
    assert below == 1


def test_poisson_sampling_rate_is_q_and_sizes_vary() -> None:
    (rng,) = make_generators(3, 1)
    nodes = list(range(1000))
    sizes = [len(poisson_sample(nodes, 0.1, rng)) for _ in range(300)]
    rate = sum(sizes) / (300 * 1000)
    assert abs(rate - 0.1) < 3 * np.sqrt(0.1 * 0.9 / 300_000) + 1e-4
    assert 7.0 < float(np.std(sizes)) < 12.5  # binomial: sqrt(1000 * 0.1 * 0.9) = 9.5


def test_wrapper_samples_each_node_with_rate_q(dp: Any, weights: ArrayRecord) -> None:
    strategy = dp.central(sample_rate=0.2, population=100)
    grid = dp.update_grid(100, _zero)
    counts = np.zeros(101)
    rounds = 200
    for r in range(1, rounds + 1):
        for msg in strategy.configure_train(r, weights, _config(), grid):
            counts[msg.metadata.dst_node_id] += 1
    rate = counts[1:].sum() / (rounds * 100)
    assert abs(rate - 0.2) < 0.01
    assert counts[1:].min() > 0  # every node can be picked


def test_empty_round_still_releases_noise_and_is_accounted(dp: Any, weights: ArrayRecord) -> None:
    strategy = dp.central(sample_rate=0.001, population=3)
    grid = dp.update_grid(3, _zero)
    messages = list(strategy.configure_train(1, weights, _config(), grid))
    assert messages == []
    new, metrics = strategy.aggregate_train(1, [])
    assert new is not None and metrics is not None
    assert np.abs(dp.delta_of(new, weights)).max() > 0
    assert strategy.accountant.steps == 1
    assert strategy.epsilon > 0


def test_seeded_noise_is_reproducible_and_os_noise_is_not(dp: Any, weights: ArrayRecord) -> None:
    grid = dp.update_grid(4, _zero)

    def run(seed: int | None) -> np.ndarray:
        new, _ = dp.one_round(dp.central(population=4, seed=seed), grid, weights)
        return dp.delta_of(new, weights)

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(None), run(None))
    assert dp.central(seed=None).seeded is False


def test_adaptive_clip_follows_the_median_norm(dp: Any, weights: ArrayRecord) -> None:
    population = 20
    small = ArrayRecord({"w": torch.zeros(10)})

    def norm_by_node(pid: int, w: np.ndarray) -> np.ndarray:
        unit = np.ones_like(w) / np.sqrt(w.size)
        return unit * (pid + 1)  # norms 1..20, median 10.5

    strategy = dp.central(noise_multiplier=0.5, clip_norm=2.0, population=population, adaptive=True)
    grid = dp.update_grid(population, norm_by_node)
    for r in range(1, 41):
        dp.one_round(strategy, grid, small, r)
    assert 7.0 < strategy.clip_norm < 15.0
    # The update's noise leaves room for the count's: together they cost exactly z.
    assert strategy.update_noise > 0.5
    assert strategy.adaptive is not None
    combined = (strategy.update_noise**-2 + (2 * strategy.adaptive.count_std) ** -2) ** -0.5
    assert combined == pytest.approx(0.5)


def test_wrapper_refuses_an_inner_strategy_that_waits_for_more_nodes() -> None:
    from flwr.serverapp.strategy import FedAvg

    from fedge.privacy.central import CentralDP

    with pytest.raises(ValueError, match="min_train_nodes"):
        CentralDP(
            FedAvg(min_train_nodes=2),
            noise_multiplier=1.0,
            clip_norm=1.0,
            sample_rate=0.5,
            population=10,
            delta=1e-5,
        )


def test_update_noise_multiplier_rejects_too_little_count_noise() -> None:
    with pytest.raises(ValueError, match="too small"):
        update_noise_multiplier(noise_multiplier=2.0, count_std=0.5)


def _config() -> ConfigRecord:
    return ConfigRecord()
