"""Both privacy levels on the ``ray`` runtime (Flower's simulation engine)."""

from pathlib import Path

import pytest

from fedge.app.config import RunConfig
from fedge.privacy.config import PrivacyConfig
from fedge.privacy.ledger import LEDGER_FILE
from fedge.simulation import simulate


@pytest.mark.slow
def test_central_and_local_dp_run_on_ray(tmp_path: Path) -> None:
    config = RunConfig(
        dataset="digits",
        model="student-mlp",
        clients=3,
        rounds=2,
        fraction=0.7,
        runtime="ray",
        privacy=PrivacyConfig(dp_noise=1.0, dp_clip=0.5, local_dp_epsilon=5.0, dp_seed=0),
    )
    result = simulate(config, device_state_root=tmp_path / "devices")
    assert [r.round for r in result.rounds] == [1, 2]
    assert 0 < result.rounds[0].extra["epsilon"] < result.rounds[1].extra["epsilon"]
    device_eps = [r.extra.get("device_epsilon_max") for r in result.rounds if r.aggregated]
    assert device_eps and all(0 < e <= 5.0 for e in device_eps)
    # The ledgers are where the (simulated) devices keep their state, not in the actor's cwd.
    assert list((tmp_path / "devices").glob(f"*/{LEDGER_FILE}"))
