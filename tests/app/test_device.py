"""``--device``: a run on ``cpu`` is the default run, exactly (the CUDA path needs a GPU; its
refusals, fallbacks and Ray shares are tested with the options, batching, Ray and the CLI)."""

from fedge.app.config import RunConfig
from fedge.simulation import simulate


def test_a_run_on_device_cpu_is_the_default_run(tiny_config: RunConfig) -> None:
    default = simulate(tiny_config)
    on_cpu = simulate(RunConfig.from_mapping({**tiny_config.to_dict(), "device": "cpu"}))
    assert on_cpu.config["device"] == default.config["device"] == "cpu"
    assert [r.accuracy for r in on_cpu.rounds] == [r.accuracy for r in default.rounds]
    assert [r.loss for r in on_cpu.rounds] == [r.loss for r in default.rounds]
    assert [r.train_loss for r in on_cpu.rounds] == [r.train_loss for r in default.rounds]
