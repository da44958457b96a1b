"""The ``ray`` runtime (Flower's simulation engine) runs the same app as ``local``."""

import pytest

from fedge.app.config import RunConfig
from fedge.simulation import simulate


@pytest.mark.slow
def test_ray_runs_the_same_app_and_matches_local(tiny_config: RunConfig) -> None:
    local = simulate(tiny_config)
    on_ray = simulate(tiny_config.replace(runtime="ray"))
    assert len(on_ray.rounds) == tiny_config.rounds
    assert [r.aggregated for r in on_ray.rounds] == [tiny_config.clients] * tiny_config.rounds
    # Same data, seeds and sampling; only the order of the floating-point sum may differ.
    assert on_ray.final_accuracy == pytest.approx(local.final_accuracy, abs=0.02)
