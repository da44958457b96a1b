"""Accounting: fedge's ε against an independent library, the target-ε solver, the budget stop."""

from pathlib import Path

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from fedge.app.checkpoint import load_checkpoint
from fedge.app.config import RunConfig
from fedge.app.strategies import build_private_strategy
from fedge.privacy.accountant import RDP_ORDERS, Accountant, noise_for_epsilon
from fedge.privacy.central import CentralDP
from fedge.privacy.config import PrivacyConfig
from fedge.simulation import simulate

CASES = [(0.1, 1.0, 50, 1e-5), (0.01, 1.1, 1000, 1e-5), (0.5, 2.0, 30, 1e-6), (1.0, 5.0, 10, 1e-5)]


def _google_rdp(q: float, z: float, steps: int, delta: float) -> float:
    """ε from Google's dp-accounting (another implementation), same event, same orders."""
    acc = RdpAccountant(orders=RDP_ORDERS)
    acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), steps)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(("q", "z", "steps", "delta"), CASES)
def test_rdp_epsilon_equals_an_independent_library(
    q: float, z: float, steps: int, delta: float
) -> None:
    acc = Accountant(delta=delta, method="rdp")
    for _ in range(steps):
        acc.step(noise_multiplier=z, sample_rate=q)
    assert acc.steps == steps
    # dp-accounting drops a few fractional orders it cannot evaluate, so it can only be
    # (slightly) more conservative.
    assert acc.epsilon() == pytest.approx(_google_rdp(q, z, steps, delta), rel=5e-3)


@pytest.mark.parametrize(("q", "z", "steps", "delta"), CASES[:3])
def test_prv_epsilon_agrees_with_an_independent_pld_accountant(
    q: float, z: float, steps: int, delta: float
) -> None:
    acc = Accountant(delta=delta, method="prv", history=[(z, q, steps)])
    pld = PLDAccountant()
    pld.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), steps)
    assert acc.epsilon() == pytest.approx(pld.get_epsilon(delta), rel=0.03)
    assert acc.epsilon() < Accountant(delta=delta, history=[(z, q, steps)]).epsilon()


def test_epsilon_after_does_not_spend() -> None:
    acc = Accountant(delta=1e-5, history=[(1.0, 0.1, 10)])
    before = acc.epsilon()
    after = acc.epsilon_after(noise_multiplier=1.0, sample_rate=0.1, steps=5)
    assert after > before == acc.epsilon()
    assert after == pytest.approx(Accountant(delta=1e-5, history=[(1.0, 0.1, 15)]).epsilon())


def test_noise_for_epsilon_is_tight_and_never_over_budget() -> None:
    z = noise_for_epsilon(target_epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=50)
    assert _google_rdp(0.1, z, 50, 1e-5) <= 3.0 * 1.005
    assert Accountant(delta=1e-5, history=[(z, 0.1, 50)]).epsilon() <= 3.0
    assert Accountant(delta=1e-5, history=[(0.97 * z, 0.1, 50)]).epsilon() > 3.0


def test_noise_for_an_unreachable_epsilon_fails_fast() -> None:
    with pytest.raises(ValueError, match="even noise multiplier"):
        noise_for_epsilon(target_epsilon=1e-6, delta=1e-5, sample_rate=1.0, steps=100)


def _tiny_dp(tmp_path: Path, **changes: object) -> RunConfig:
    base = RunConfig(
        dataset="digits",
        model="student-mlp",
        clients=10,
        rounds=3,
        fraction=0.5,
        batch_size=16,
        privacy=PrivacyConfig(dp_noise=1.1, dp_clip=0.5, dp_seed=0),
    )
    return base.replace(**changes)


def test_results_report_the_independently_computed_epsilon_each_round(tmp_path: Path) -> None:
    config = _tiny_dp(tmp_path)
    result = simulate(config, out_dir=tmp_path / "run", device_state_root=tmp_path / "devices")
    reported = [r.extra["epsilon"] for r in result.rounds]
    expected = [_google_rdp(0.5, 1.1, r, 1e-5) for r in (1, 2, 3)]
    assert reported == pytest.approx(expected, rel=5e-3)
    assert reported == sorted(reported)
    privacy = result.notes["privacy"]
    assert privacy["central"]["noise_multiplier"] == 1.1
    assert "reproducible" in privacy["noise_source"]
    assert (tmp_path / "run" / "privacy.png").is_file()


def test_max_epsilon_stops_before_the_round_that_would_cross_it(tmp_path: Path) -> None:
    limit = (_google_rdp(0.5, 1.1, 2, 1e-5) + _google_rdp(0.5, 1.1, 3, 1e-5)) / 2
    out = tmp_path / "run"
    result = simulate(
        _tiny_dp(tmp_path, rounds=6, dp_max_epsilon=limit),
        out_dir=out,
        device_state_root=tmp_path / "devices",
    )
    assert [r.round for r in result.rounds] == [1, 2]
    assert result.rounds[-1].extra["epsilon"] <= limit
    assert result.stopped_reason is not None
    assert "round 3" in result.stopped_reason and "--dp-max-epsilon" in result.stopped_reason
    assert load_checkpoint(out / "model.pt").server_round == 2  # the last round's model is kept


def test_target_epsilon_sets_the_noise_to_end_at_the_target(tmp_path: Path) -> None:
    config = _tiny_dp(tmp_path, dp_noise=None, dp_target_epsilon=20.0)
    strategy = build_private_strategy(config)
    assert isinstance(strategy, CentralDP)
    z = strategy.noise_multiplier
    assert 19.0 < _google_rdp(0.5, z, config.rounds, 1e-5) <= 20.0 * 1.005
    assert strategy.denominator == pytest.approx(0.5 * 10)
