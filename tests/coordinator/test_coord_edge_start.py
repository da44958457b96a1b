"""``fedge edge start`` as a device runs it: enrol on start with a token, pin the release key,
and roll back a release below ``--accuracy-floor`` on the device's labelled data, reporting why
to the coordinator. Bad options are one line, exit 2, and create nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.edge.health import load_labelled
from fedge.edge.identity import PINNED_KEY_FILE, load_identity
from fedge.release.store import RELEASE_KEY_FILE
from fedge.release.testing import linear_weights, make_labelled_data, publish_linear

from .conftest import Fleet

FEDGE = [sys.executable, "-m", "fedge.cli"]
FLOOR = 0.9


def _device_data(path: Path) -> Path:
    """A device data dir of 64 samples labelled by the linear model of seed 1."""
    make_labelled_data(path / "data.npz", seed=1)
    (path / "fedge-data.json").write_text(json.dumps({"num-classes": 4, "input-shape": [16]}))
    return path


def _accuracy(seed: int, data: Path) -> float:
    weights, bias = linear_weights(features=16, classes=4, seed=seed)
    x, y = load_labelled(data)
    return float(np.mean(np.argmax(x @ weights + bias, axis=1) == y))


def _wait(predicate: object, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    pytest.fail(f"condition not met (exit {proc.poll()}); device log:\n{log.read_text()[-3000:]}")


def test_start_enrols_with_a_token_and_rolls_back_below_the_accuracy_floor(
    fleet: Fleet, tmp_path: Path
) -> None:
    data = _device_data(tmp_path / "data")
    assert _accuracy(2, data) < FLOOR <= _accuracy(1, data)  # the premise of the test
    store = fleet.coordinator.releases
    log = tmp_path / "device.log"
    # The one-line flow: no --state (the default ./device-state), a token, the address.
    args = [
        *("edge", "start", "--coordinator", fleet.address, "--token", fleet.token()),
        *("--enroll-address", fleet.enroll_address, "--data", str(data)),
        *("--accuracy-floor", str(FLOOR), "--release-interval", "0.5", "--inference", ""),
        *("--wait", "1", "--heartbeat", "0.5"),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*FEDGE, *args],
            cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        state = tmp_path / "device-state"
        _wait(lambda: (state / "identity.json").is_file(), proc, log, 120)
        identity = load_identity(state)
        assert fleet.coordinator.state.device(identity.device_id) is not None
        pinned = (state / PINNED_KEY_FILE).read_bytes()
        assert pinned == (fleet.root / "state" / f"{RELEASE_KEY_FILE}.pub").read_bytes()

        bad = publish_linear(store, tmp_path, seed=2).manifest.version

        def rolled_back() -> bool:
            return any(r.state == "rolled_back" for r in store.device_reports(bad))

        _wait(rolled_back, proc, log, 120)
        (report,) = store.device_reports(bad)
        assert report.device_id == identity.device_id
        assert f"below floor {FLOOR:.3f}" in report.reason
        assert report.reason.startswith("health check failed")

        good = publish_linear(store, tmp_path, seed=1).manifest.version
        _wait(lambda: store.status(good)["installed"] == 1, proc, log, 120)
        (report,) = store.device_reports(good)
        assert report.reason.startswith("accuracy 1.000, p50 ") and " ms, p99 " in report.reason
        assert 0 < report.measured.latency_p50_ms <= report.measured.latency_p99_ms
        lines = log.read_text().splitlines()  # the device's own log says what happened
        assert any(f"release {bad}: rolled_back health check failed" in line for line in lines)
        assert any(f"release {good}: installed accuracy 1.000" in line for line in lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
        store.close()
    assert code == 0, log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--accuracy-floor", "1.5"], "--accuracy-floor: 1.5 must be a number between 0 and 1"),
        (["--accuracy-floor", "-0.1"], "--accuracy-floor: -0.1 must be a number between 0 and 1"),
        (["--coordinator", "nohost"], "--coordinator: 'nohost' must be HOST:PORT"),
        ([], "holds no identity: run `fedge edge enroll`, or give `fedge edge start` a --token"),
        (["--token", "fedge1.x.y"], "--coordinator HOST:PORT is needed to enrol with --token"),
    ],
)
def test_bad_start_options_are_one_line_exit_2_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _device_data(tmp_path / "data")
    result = CliRunner().invoke(app, ["edge", "start", "--data", str(data), *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "device-state").exists()
