"""Round failures: too few devices means a retry from the checkpoint, then a failed run."""

import time
from pathlib import Path

from fedge.app.config import RunConfig
from fedge.coordinator.state import RunState

from .conftest import start_fleet


def test_a_run_without_enough_devices_is_retried_then_failed(tmp_path: Path) -> None:
    fleet = start_fleet(tmp_path, wait_for_devices_seconds=0.5, max_attempts=2)
    coordinator = fleet.coordinator
    try:
        run = coordinator.runs.submit(RunConfig(dataset="digits", model="mlp", rounds=2))
        deadline = time.monotonic() + 60
        while coordinator.state.run(run.id).state in (RunState.QUEUED, RunState.RUNNING):
            assert time.monotonic() < deadline, "the run never failed"
            time.sleep(0.2)
        row = coordinator.state.run(run.id)
        assert row.state == RunState.FAILED and row.attempts == 2
        assert "only 0 of the run's 0 devices connected" in row.error
        assert "(after 2 attempts)" in row.error
        kinds = [e.kind for e in coordinator.state.events(run_id=run.id)]
        assert kinds.count("round-failed") == 2 and kinds.count("retry") == 1
        assert kinds[-1] == "failed"
    finally:
        fleet.close()
