"""Buffered asynchronous aggregation end to end on the simulated clock (local runtime)."""

import json
from pathlib import Path

from fedge.app.config import RunConfig
from fedge.app.results import RunResult
from fedge.privacy.participation import participation_epsilon
from fedge.simulation import simulate


def _run(tmp_path: Path, out: Path | None = None, **changes: object) -> RunResult:
    options: dict[str, object] = {
        "dataset": "digits",
        "model": "cnn-small",
        "clients": 16,
        "rounds": 5,
        "mode": "async",
        "buffer": 4,
        "concurrency": 8,
        "availability": "random:0.5",
        "speed-sigma": 1.0,
        "device-speed": 10.0,
        "release": False,
        "lr": 0.1,
        "momentum": 0.5,
        **changes,
    }
    return simulate(RunConfig.from_mapping(options), out_dir=out, device_state_root=tmp_path)


def test_async_run_steps_versions_on_the_simulated_clock_deterministically(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = _run(tmp_path, out)
    assert [r.round for r in result.rounds] == [1, 2, 3, 4, 5]
    times = [r.extra["sim_time"] for r in result.rounds]
    assert times == sorted(times) and times[0] > 0
    for record in result.rounds:
        assert record.aggregated == 4
        assert record.extra["staleness_max"] <= 100
        assert record.extra["staleness_weights"] == [
            round((1 + s) ** -0.5, 6) for s in record.extra["staleness"]
        ]
    assert any(max(r.extra["staleness"]) > 0 for r in result.rounds)  # concurrency > buffer
    notes = json.loads((out / "results.json").read_text())["async"]
    assert notes["versions"] == 5 and notes["updates_applied"] == 20
    assert sum(notes["staleness_histogram"].values()) == notes["updates_received"]
    assert (out / "model.pt").is_file()
    again = _run(tmp_path)
    assert [r.accuracy for r in again.rounds] == [r.accuracy for r in result.rounds]
    assert [r.extra["sim_time"] for r in again.rounds] == times


def test_updates_staler_than_the_limit_are_refused_with_the_reason(tmp_path: Path) -> None:
    result = _run(tmp_path, **{"max-staleness": 0, "rounds": 4})
    notes = result.notes["async"]
    assert notes["updates_refused"] > 0
    assert notes["refused_by_reason"] == {"stale": notes["updates_refused"]}
    refused = [d for r in result.rounds for d in r.dropped]
    assert len(refused) == notes["updates_refused"]
    assert all("> --max-staleness 0" in d["reason"] for d in refused)
    assert all(r.extra["staleness"] == [0, 0, 0, 0] for r in result.rounds)


def test_async_central_dp_bounds_participations_and_reports_their_epsilon(
    tmp_path: Path,
) -> None:
    result = _run(
        tmp_path,
        **{"dp-noise": 0.8, "dp-participations": 2, "dp-seed": 1, "rounds": 20, "clients": 8},
    )
    # 8 devices x 2 participations are 16 updates: at most 4 versions, then too few devices
    # have participations left to fill a buffer (one update per device per buffer).
    assert 3 <= len(result.rounds) <= 4
    assert result.stopped_reason is not None and "--dp-participations left" in result.stopped_reason
    central = result.notes["privacy"]["central"]
    bound = participation_epsilon(noise_multiplier=0.8, participations=2, delta=1e-5)
    assert central["epsilon_bound"] == bound and central["epsilon"] == bound
    assert central["most_participations"] == 2
    assert result.rounds[0].extra["epsilon"] == participation_epsilon(
        noise_multiplier=0.8, participations=1, delta=1e-5
    )
