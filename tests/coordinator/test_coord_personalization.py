"""A device's personalisation outcome, noised on the device, reaches the coordinator with its
heartbeats and shows in ``fedge fleet ls``, ``/metrics`` and the console's fleet page (in a real
Chromium); no raw figure leaves the device."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedge.app.personalize import NO_GAIN
from fedge.cli.main import app
from fedge.edge.personalize import (
    REASONS,
    REPORT_EPSILON,
    PersonalOutcome,
    load_report,
    report_outcome,
)

from ..conftest import heartbeat_listener, wait_for
from .conftest import Fleet, start_fleet
from .test_coord_metrics import scrape

runner = CliRunner()


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator serving /metrics and its console on ephemeral loopback ports."""
    with closing(
        start_fleet(tmp_path, metrics_address="127.0.0.1:0", console_address="127.0.0.1:0")
    ) as f:
        yield f


def fleet_rows(fleet: Fleet) -> dict[str, dict[str, object]]:
    result = runner.invoke(app, ["fleet", "ls", "--json", *fleet.operator_args])
    assert result.exit_code == 0, result.output
    return {d["name"]: d for d in json.loads(result.output)}


def test_a_devices_noised_outcome_shows_in_fleet_ls_metrics_and_console(
    observed: Fleet, chromium: Any
) -> None:
    fleet = observed
    identity = fleet.enroll("dim")
    quiet = fleet.enroll("quiet")
    outcome = PersonalOutcome(7, True, "gain", gain=0.31, global_accuracy=0.5, samples=600)
    report = report_outcome(Path(identity.state_dir), outcome)
    assert report.version == 7 and report.epsilon == REPORT_EPSILON
    assert report.reason in REASONS and -1.0 <= report.gain <= 1.0
    assert report.gain != outcome.gain  # noised
    with heartbeat_listener(identity, fleet.channel(identity.tls())):
        wait_for(lambda: fleet_rows(fleet)["dim"]["personalization"] is not None, 30, "the report")
        shown = fleet_rows(fleet)["dim"]["personalization"]
        # Exactly what the device noised, once: its heartbeats repeat it, never a new draw.
        assert shown == {"version": 7, "gain": report.gain, "reason": report.reason}
        assert load_report(Path(identity.state_dir)) == report
        assert fleet_rows(fleet)["quiet"]["personalization"] is None  # never reported
        samples = scrape(fleet.coordinator.ports["metrics"])
        gain = samples[("fedge_device_personal_gain", (("device", identity.device_id),))]
        assert gain == pytest.approx(report.gain)
        assert samples[("fedge_devices_personal", (("reason", report.reason),))] == 1
        assert ("fedge_device_personal_gain", (("device", quiet.device_id),)) not in samples
        _assert_console_row(fleet, chromium, identity.device_id, report.version, report.gain)
        # A later outcome (the next release, kept) replaces the report.
        later = report_outcome(Path(identity.state_dir), PersonalOutcome(8, False, NO_GAIN))
        wait_for(
            lambda: fleet_rows(fleet)["dim"]["personalization"]["version"] == 8,  # type: ignore[index]
            30,
            "the next report",
        )
        assert fleet_rows(fleet)["dim"]["personalization"]["reason"] == later.reason  # type: ignore[index]
    result = runner.invoke(app, ["fleet", "ls", *fleet.operator_args])
    line = next(x for x in result.output.splitlines() if "dim" in x)
    assert "personal (release 8)" in line and "(noised)" in line


def _assert_console_row(
    fleet: Fleet, chromium: Any, device_id: str, version: int, gain: float
) -> None:
    """The console's fleet page shows the device's noised report (a loopback console needs no
    login)."""
    page = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{fleet.coordinator.ports['console']}/fleet")
        page.wait_for_selector(f'tr[data-device="{device_id}"] td.personal')
        cell = page.inner_text(f'tr[data-device="{device_id}"] td.personal')
        assert f"release {version}:" in cell and f"{gain:+.2f}" in cell and "(noised)" in cell
    finally:
        page.close()
