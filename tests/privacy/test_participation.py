"""Central DP under async: the participation-bound Gaussian mechanism and its epsilon.

The epsilon fedge reports (Opacus' RDP accountant, k releases at sampling rate 1) is checked
against two computations that share no code with it: Google's dp-accounting RDP accountant, and
the exact privacy curve of k composed Gaussian mechanisms (a Gaussian mechanism with
mu = sqrt(k)/z, Dong, Roth & Su 2019), which no valid accountant may go below.
"""

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedge.app.config import RunConfig
from fedge.errors import ConfigError
from fedge.privacy.participation import ParticipationBoundDP, participation_epsilon


def _exact_epsilon(noise_multiplier: float, participations: int, delta: float) -> float:
    mu = math.sqrt(participations) / noise_multiplier

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return float(brentq(excess, 0.0, 200.0))


def _dp_accounting_epsilon(noise_multiplier: float, participations: int, delta: float) -> float:
    import dp_accounting

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 256, 512]
    accountant = dp_accounting.rdp.RdpAccountant(orders)
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), count=participations)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("z", "k"), [(1.0, 1), (2.0, 10), (5.0, 40), (10.0, 100)])
def test_reported_epsilon_matches_an_independent_accountant_and_never_undercuts_the_exact(
    z: float, k: int
) -> None:
    delta = 1e-5
    reported = participation_epsilon(noise_multiplier=z, participations=k, delta=delta)
    independent = _dp_accounting_epsilon(z, k, delta)
    exact = _exact_epsilon(z, k, delta)
    assert reported == pytest.approx(independent, rel=0.03)
    assert reported >= exact  # never under-report
    assert reported <= 1.5 * exact  # and RDP is not uselessly loose here


def _deltas(*rows: list[float]) -> list[dict[str, np.ndarray]]:
    return [{"w": np.array(r, dtype=np.float64)} for r in rows]


def test_each_update_is_clipped_weighted_summed_noised_once_and_divided_by_k() -> None:
    dp = ParticipationBoundDP(
        noise_multiplier=1e-9,
        clip_norm=1.0,
        buffer_size=2,
        max_participations=3,
        delta=1e-5,
        seed=0,
    )
    # [3, 4] has norm 5: clipped to [0.6, 0.8]; [0, 0.5] is inside the clip, weight 0.5.
    update = dp.noised_update([1, 2], _deltas([3.0, 4.0], [0.0, 0.5]), [1.0, 0.5])
    assert update["w"] == pytest.approx([0.3, 0.4 + 0.125], abs=1e-6)
    assert dp.participations == {1: 1, 2: 1}


def test_the_noise_has_std_z_c_over_k() -> None:
    dp = ParticipationBoundDP(
        noise_multiplier=2.0, clip_norm=0.5, buffer_size=4, max_participations=1, delta=1e-5, seed=1
    )
    zero = {"w": np.zeros(20_000)}
    noise = dp.noised_update([7], [zero], [1.0])["w"]
    assert noise.std() == pytest.approx(2.0 * 0.5 / 4, rel=0.03)


def test_participations_are_bounded_and_one_per_aggregation() -> None:
    dp = ParticipationBoundDP(
        noise_multiplier=1.0, clip_norm=1.0, buffer_size=1, max_participations=2, delta=1e-5, seed=0
    )
    one = _deltas([1.0])
    with pytest.raises(ValueError, match="at most one update"):
        dp.noised_update([3, 3], one * 2, [1.0, 1.0])
    with pytest.raises(ValueError, match="sensitivity"):
        dp.noised_update([3], one, [1.5])
    assert dp.epsilon == 0.0
    dp.noised_update([3], one, [1.0])
    assert dp.epsilon == pytest.approx(
        participation_epsilon(noise_multiplier=1.0, participations=1, delta=1e-5)
    )
    dp.noised_update([3], one, [1.0])
    assert not dp.may_contribute(3) and dp.may_contribute(4)
    assert dp.epsilon == pytest.approx(dp.epsilon_bound)
    with pytest.raises(ValueError, match="used its 2 updates"):
        dp.noised_update([3], one, [1.0])


def _async(**changes: object) -> RunConfig:
    base = {"dataset": "digits", "model": "cnn-small", "clients": 20, "mode": "async"}
    return RunConfig.from_mapping({**base, "buffer": 4, **changes})


def test_async_central_dp_without_a_participation_bound_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="Poisson-sampling amplification does not hold"):
        _async(dp_noise=1.0)
    with pytest.raises(ConfigError, match="applies to --mode async"):
        RunConfig.from_mapping({"dataset": "digits", "dp-noise": 1.0, "dp-participations": 3})
    with pytest.raises(ConfigError, match="--dp-adaptive-clip"):
        _async(dp_noise=1.0, dp_participations=3, dp_adaptive_clip=True)
    with pytest.raises(ConfigError, match="> --dp-max-epsilon 1"):
        _async(dp_noise=1.0, dp_participations=30, dp_max_epsilon=1.0)


def test_a_target_epsilon_under_async_picks_the_noise_for_the_participations() -> None:
    config = _async(dp_target_epsilon=4.0, dp_participations=10)
    z = config.privacy.async_noise_multiplier()
    assert config.privacy.async_epsilon_bound() <= 4.0
    assert participation_epsilon(noise_multiplier=z * 0.97, participations=10, delta=1e-5) > 4.0
