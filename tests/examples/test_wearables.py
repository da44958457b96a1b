"""The wearables example: a 1D-CNN on BasicMotions over four wearers, int8 on a wearable."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.inference.profiles import get_profile

from .conftest import EXAMPLES, load_example

pytestmark = pytest.mark.slow
FEDGE = [sys.executable, "-m", "fedge.cli"]
WEARABLE_OUT = ["--profile", "wearable", "--out", "rel"]


@pytest.mark.usefixtures("one_thread")
def test_federated_beats_each_wearer_alone_and_nears_pooled() -> None:
    compare = load_example("wearables", "compare")
    rows = {row.setting: row for row in compare.compare(seeds=(0,))}
    federated = rows["federated (FedAvg, 4 wearers)"].accuracy
    alone = rows["local-only (mean of 4)"].accuracy
    pooled = rows["pooled (1 client, all recordings)"].accuracy
    assert federated > alone
    assert federated >= pooled - 0.03
    # Each wearer never did one of the four activities, so alone it cannot pass 3 of 4.
    assert alone <= 0.75


def test_the_int8_release_fits_the_wearable_profile(tmp_path: Path) -> None:
    project = tmp_path / "wearables"
    shutil.copytree(EXAMPLES / "wearables", project, ignore=shutil.ignore_patterns("runs", "rel"))
    for command in (
        ["simulate", "--config", "run.toml", "--rounds", "10", "--no-release"],
        ["release", "build", "--checkpoint", "runs/latest/model.pt", *WEARABLE_OUT],
    ):
        proc = subprocess.run(
            [*FEDGE, *command], capture_output=True, text=True, cwd=project, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
    artifact = json.loads((project / "rel/profiles/wearable/artifact.json").read_text())
    budget = get_profile("wearable").budget
    assert artifact["precision"] == "int8"
    assert artifact["length"] == (project / "rel/profiles/wearable/model.onnx").stat().st_size
    assert artifact["length"] <= budget.max_model_bytes
    assert artifact["figures"]["latency_p99_ms"] <= budget.p99_ms
    assert artifact["figures"]["accuracy"] >= budget.min_accuracy
