"""Bad privacy options: each a ConfigError naming the option; the CLI says it on one line."""

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedge.app.config import RunConfig
from fedge.errors import ConfigError
from fedge.privacy.config import PrivacyConfig


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"dp_noise": 0.0}, "--dp-noise"),
        ({"dp_noise": -1.0}, "--dp-noise"),
        ({"dp_noise": 1.0, "dp_clip": 0.0}, "--dp-clip"),
        ({"dp_noise": 1.0, "dp_clip": -2.0}, "--dp-clip"),
        ({"local_dp_noise": 1.0, "local_dp_clip": 0.0}, "--local-dp-clip"),
        ({"local_dp_noise": 0.0}, "--local-dp-noise"),
        ({"local_dp_epsilon": -1.0}, "--local-dp-epsilon"),
        ({"dp_noise": 1.0, "dp_delta": 0.0}, "--dp-delta"),
        ({"dp_noise": 1.0, "dp_delta": 1.0}, "--dp-delta"),
        ({"dp_noise": 1.0, "dp_delta": 1.5}, "--dp-delta"),
        ({"dp_target_epsilon": 1e-6, "rounds": 100}, "--dp-target-epsilon"),
        ({"dp_target_epsilon": 0.0}, "--dp-target-epsilon"),
        ({"dp_noise": 1.0, "dp_target_epsilon": 3.0}, "--dp-target-epsilon"),
        ({"dp_noise": 1.0, "strategy": "krum"}, "--strategy"),
        ({"dp_noise": 1.0, "strategy": "fedmedian"}, "--strategy"),
        ({"dp_noise": 1.0, "strategy": "fedtrimmedavg"}, "--strategy"),
        ({"dp_max_epsilon": 3.0}, "--dp-max-epsilon"),
        ({"dp_adaptive_clip": True}, "--dp-adaptive-clip"),
        ({"dp_noise": 1.0, "dp_accountant": "moments"}, "--dp-accountant"),
    ],
)
def test_bad_privacy_option_names_the_option(changes: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(changes)
    assert info.value.option == option
    assert option in str(info.value)


def test_delta_at_least_one_over_population_is_allowed_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedge"):
        config = RunConfig(clients=10, privacy=PrivacyConfig(dp_noise=1.0, dp_delta=0.2))
    assert config.privacy.dp_delta == 0.2
    assert "1/population" in caplog.text


def test_fedadam_is_allowed_under_central_dp() -> None:
    config = RunConfig(privacy=PrivacyConfig(dp_noise=1.0), strategy="fedadam")
    assert config.strategy == "fedadam"


def test_cli_rejects_bad_dp_option_on_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fedge.cli", "simulate", "--dp-noise", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "--dp-noise" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_privacy_report_prints_the_table_of_a_finished_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "fedge.cli", "simulate", "--dataset", "digits",
            "--model", "student-mlp", "--clients", "6", "--rounds", "2", "--fraction", "0.5",
            "--dp-noise", "1.0", "--dp-clip", "0.5", "--no-release", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    epsilons = [r["epsilon"] for r in results["rounds"]]
    assert "OS secure randomness" in results["privacy"]["noise_source"]
    report = subprocess.run(
        [sys.executable, "-m", "fedge.cli", "privacy", "report", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert f"{epsilons[-1]:.4f}" in report.stdout
    assert "central (client-level)" in report.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "fedge.cli", "privacy", "report", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "results.json" in missing.stderr and "Traceback" not in missing.stderr
