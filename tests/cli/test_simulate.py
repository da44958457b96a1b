"""``fedge simulate`` as a user runs it: a real subprocess, files on disk, exit codes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import PYTHON_CTRL_C, wait_for

FEDGE = [sys.executable, "-m", "fedge.cli"]
TINY = ["--dataset", "digits", "--model", "cnn-small", "--clients", "4", "--rounds", "2"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDGE, "simulate", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_simulate_writes_results_checkpoint_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(*TINY, "--no-release", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "final accuracy" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["dataset"] == "digits"
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for r in results["rounds"]:
        assert {"round", "accuracy", "loss", "seconds"} <= set(r)
    assert 0.0 <= results["final"]["accuracy"] <= 1.0
    assert results["timing"]["total_s"] >= results["timing"]["train_s"] > 0
    for name in ("model.pt", "accuracy.png", "loss.png"):
        assert (out / name).stat().st_size > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "round-0001.pt",
        "round-0002.pt",
    ]


def test_config_file_and_flags_merge(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('dataset = "digits"\nmodel = "cnn-small"\nclients = 3\nrounds = 1\n')
    out = tmp_path / "run"
    proc = _run(
        "--config", str(config), "--clients", "2", "--no-release", "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((out / "results.json").read_text())["config"]
    assert (cfg["clients"], cfg["rounds"], cfg["dataset"]) == (2, 1, "digits")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "imagenet"], "--dataset: 'imagenet' is not one of: breast-cancer"),
        (["--model", "resnet"], "--model: 'resnet' is not one of"),
        (["--strategy", "fedsgd"], "--strategy: 'fedsgd' is not one of"),
        (["--runtime", "k8s"], "--runtime: 'k8s' is not one of: local, ray, grpc"),
        (["--precision", "fp16"], "--precision: 'fp16' is not one of: fp32, bf16"),
        (["--clients", "100000"], "--clients: 100000 is more than the"),
        (["--partition", "dirichlet:abc"], "--partition: 'dirichlet:abc' is not a partition"),
        (["--fraction", "1.5"], "--fraction: 1.5 is outside (0, 1]"),
        (["--fraction", "0"], "--fraction: 0.0 is outside (0, 1]"),
        (["--dataset", "mnist"], "--data-dir: missing"),
        (["--dataset", "mnist", "--data-dir", "/no/such/dir"], "--data-dir: '/no/such/dir'"),
        (["--config", "/no/such.toml"], "--config: '/no/such.toml' is not a file"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = _run(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_out_path_under_a_file_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("a file")
    proc = _run(*TINY, "--out", "README.md/x", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: --out: 'README.md/x' cannot be a directory: README.md is a file"
    ]
    assert "round" not in proc.stdout  # no round was trained first
    assert (tmp_path / "README.md").read_text() == "a file"


def test_a_cuda_device_that_is_not_visible_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    # CUDA_VISIBLE_DEVICES="" hides every GPU from the run, on any machine.
    proc = subprocess.run(
        [*FEDGE, "simulate", *TINY, "--device", "cuda", "--out", "run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: --device: 'cuda' needs a CUDA GPU and none is visible here "
        "(torch.cuda.is_available() is False): use --device cpu"
    ]
    assert proc.stdout == ""  # refused before the run's first line
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_says_what_was_kept_and_resume_continues_exactly(tmp_path: Path) -> None:
    """SIGINT after round 2 of 4 keeps the checkpoints; ``--resume`` ends where an
    uninterrupted run ends, round for round."""
    options = [*TINY[:-1], "4", "--no-release"]
    whole = _run(*options, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    proc = subprocess.Popen(
        [*PYTHON_CTRL_C, "-m", "fedge.cli", "simulate", *options, "--out", "cut"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (out / "checkpoints" / "round-0002.pt").exists(), 300, "round 2")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted: rounds up to" in lines[0], stderr
    assert f"fedge simulate --resume --out {Path('cut')}" in lines[0]
    resumed = _run("--resume", "--out", "cut", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after round" in resumed.stdout
    cut = json.loads((out / "results.json").read_text())
    full = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert [r["round"] for r in cut["rounds"]] == [1, 2, 3, 4]
    assert [r["accuracy"] for r in cut["rounds"]] == [r["accuracy"] for r in full["rounds"]]
    again = _run("--resume", "--out", "cut", cwd=tmp_path)
    assert again.returncode == 2 and "holds a finished run" in again.stderr
    mixed = _run("--resume", "--rounds", "9", "--out", "cut", cwd=tmp_path)
    assert mixed.returncode == 2 and "a resumed run keeps its own options" in mixed.stderr
