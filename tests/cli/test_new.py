"""``fedge new`` makes a project whose task runs as generated, found through [tool.fedge]."""

import json
import subprocess
import sys
from pathlib import Path

FEDGE = [sys.executable, "-m", "fedge.cli"]


def _fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_a_new_project_runs_its_task_with_no_option(tmp_path: Path) -> None:
    made = _fedge("new", "clinic", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "clinic"
    run = _fedge("simulate", "--clients", "2", "--rounds", "2", "--no-release", cwd=project)
    assert run.returncode == 0, run.stderr
    results = json.loads((project / "runs/latest/results.json").read_text())
    assert results["task"]["name"] == "clinic" and results["task"]["kind"] == "binary"
    assert results["final"]["accuracy"] > 0.8
    # An explicit dataset wins over the project's task.
    builtin = _fedge(
        "simulate",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--clients",
        "2",
        "--rounds",
        "1",
        "--no-release",
        "--out",
        "b",
        cwd=project,
    )
    assert builtin.returncode == 0, builtin.stderr
    assert "task" not in json.loads((project / "b/results.json").read_text())


def test_new_refuses_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    proc = _fedge("new", "taken", cwd=tmp_path)
    assert proc.returncode == 2
    assert "exists already; nothing was written" in proc.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
