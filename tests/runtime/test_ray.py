"""The ``ray`` runtime (Flower's simulation engine) runs the same app as ``local``."""

import pytest

from fedge.app.config import RunConfig
from fedge.runtime.ray import client_resources
from fedge.simulation import simulate


@pytest.mark.slow
def test_ray_runs_the_same_app_and_matches_local(tiny_config: RunConfig) -> None:
    local = simulate(tiny_config)
    on_ray = simulate(tiny_config.replace(runtime="ray"))
    assert len(on_ray.rounds) == tiny_config.rounds
    assert [r.aggregated for r in on_ray.rounds] == [tiny_config.clients] * tiny_config.rounds
    # Same data, seeds and sampling; only the order of the floating-point sum may differ.
    assert on_ray.final_accuracy == pytest.approx(local.final_accuracy, abs=0.02)


@pytest.mark.parametrize(
    ("device", "cpus", "gpus", "share"),
    [
        ("cpu", 8, 2, 0.0),  # a CPU run asks for no GPU, whatever the machine has
        ("cuda", 8, 0, 0.0),
        ("cuda", 8, 1, 0.125),  # eight clients at once share the one GPU
        ("cuda", 3, 2, 0.6666),  # rounded down: three shares fit on two GPUs
        ("cuda", 2, 4, 1.0),  # a client never asks for more than one GPU
    ],
)
def test_a_cuda_run_gives_each_ray_client_a_share_of_the_gpus(
    device: str, cpus: int, gpus: int, share: float
) -> None:
    resources = client_resources(device=device, cpus_per_client=1.0, num_cpus=cpus, num_gpus=gpus)
    assert resources == {"num_cpus": 1.0, "num_gpus": share}
