"""The clinics example: heart disease at four hospitals, federated vs alone vs pooled vs DP."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLES, load_example

pytestmark = pytest.mark.slow
FEDGE = [sys.executable, "-m", "fedge.cli"]
DP = ["--dp-noise", "1.0", "--dp-clip", "0.3"]


@pytest.mark.usefixtures("one_thread")
def test_federated_beats_each_hospital_alone_and_nears_pooled_also_under_central_dp() -> None:
    compare = load_example("clinics", "compare")
    rows = {row.setting: row for row in compare.compare(seeds=(0, 1, 2))}
    federated = rows["federated (FedAvg, 4 hospitals)"].accuracy
    alone = rows["local-only (mean of 4)"].accuracy
    pooled = rows["pooled (1 client, all rows)"].accuracy
    private = rows["federated + central DP (z=1.0, C=0.3)"]
    assert federated > alone
    assert federated >= pooled - 0.03
    assert private.accuracy >= pooled - 0.03
    assert private.epsilon is not None and 0 < private.epsilon < 25
    hospitals = [name for name in rows if name.startswith("  local-only: ")]
    assert len(hospitals) == 4


def test_the_example_runs_as_written_from_a_copy(tmp_path: Path) -> None:
    project = tmp_path / "clinics"
    shutil.copytree(EXAMPLES / "clinics", project, ignore=shutil.ignore_patterns("runs", ".fedge"))
    proc = subprocess.run(
        [*FEDGE, "simulate", "--config", "run.toml", "--rounds", "2", "--no-release", *DP],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((project / "runs/latest/results.json").read_text())
    assert results["task"]["name"] == "heart-disease" and results["task"]["kind"] == "binary"
    last = results["rounds"][-1]
    assert results["config"]["partition"] == "by:dataset" and last["aggregated"] == 4
    assert 0.5 < last["roc_auc"] <= 1.0 and last["epsilon"] > 0
