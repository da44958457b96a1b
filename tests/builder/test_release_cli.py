"""``fedge release build`` and the release step of ``fedge simulate``, as a user runs them."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedge.app.config import RunConfig
from fedge.cli.main import app
from fedge.errors import ConfigError
from fedge.simulation import simulate

from ..conftest import PYTHON_CTRL_C, wait_for

FEDGE = [sys.executable, "-m", "fedge.cli"]


def test_release_build_writes_a_release_and_prints_three_rows(
    tmp_path: Path, teacher_path: Path
) -> None:
    out = tmp_path / "rel"
    proc = subprocess.run(
        [
            *FEDGE,
            "release",
            "build",
            "--checkpoint",
            str(teacher_path),
            "--student",
            "student-cnn",
            "--epochs",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for role in ("teacher fp32", "student fp32", "student int8"):
        assert role in proc.stdout
    assert "smaller" in proc.stdout and "faster" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["distillation"]["epochs"] == 2
    assert report["student_int8"]["architecture"] == "student-cnn"


def test_ctrl_c_mid_build_says_nothing_was_written(tmp_path: Path, teacher_path: Path) -> None:
    out = tmp_path / "rel"
    command = [*PYTHON_CTRL_C, "-m", "fedge.cli", "release", "build"]
    command += ["--checkpoint", str(teacher_path), "--epochs", "500"]
    proc = subprocess.Popen(
        [*command, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Interrupt once the build is under way in its work directory beside --out.
        wait_for(lambda: any(tmp_path.glob(".rel.partial-*")), 120, "the build's work directory")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        f"Error: interrupted: {out}: nothing written; run the command again to build it"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("text", "is not a fedge checkpoint"),
        ("torch", "is not a fedge checkpoint (no 'format'"),
        ("missing", "does not exist"),
    ],
)
def test_a_bad_checkpoint_is_one_line_exit_2(tmp_path: Path, setup: str, expected: str) -> None:
    bad = tmp_path / "model.pt"
    if setup == "text":
        bad.write_text("hello")
    elif setup == "torch":
        torch.save({"weights": torch.zeros(3)}, bad)
    result = CliRunner().invoke(
        app, ["release", "build", "--checkpoint", str(bad), "--out", str(tmp_path / "rel")]
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and expected in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "rel").exists()


def test_an_unknown_student_is_one_line_exit_2(tmp_path: Path, teacher_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["release", "build", "--checkpoint", str(teacher_path), "--student", "vit",
         "--out", str(tmp_path / "rel")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        "--student: 'vit' is not one of: dp-cnn, student-cnn, student-mlp, student-tiny"
        in result.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_release_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="--student: 'mlp' is not one of"):
        RunConfig(student="mlp")
    with pytest.raises(ConfigError, match="--release-every: -1 must be an integer >= 0"):
        RunConfig(release_every=-1)
    assert RunConfig().release is True
    assert RunConfig.from_mapping({"release": False, "release-every": 2}).release_every == 2


def test_simulate_builds_release_beside_results_and_every_k_rounds(
    tmp_path: Path, tiny_config: RunConfig
) -> None:
    out = tmp_path / "run"
    result = simulate(tiny_config.replace(release_every=1, student="student-cnn"), out_dir=out)
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "model.pt", "release", "release-round-0001", "release-round-0002"} <= (
        names
    )
    for folder in ("release", "release-round-0001", "release-round-0002"):
        assert (out / folder / "model.onnx").is_file()
        assert (out / folder / "model_fp32.onnx").is_file()
        assert (out / folder / "report.json").is_file()
    results = json.loads((out / "results.json").read_text())
    final = results["release"]
    assert final["dir"] == str(out / "release")
    assert (
        final["sha256"]
        == json.loads((out / "release" / "report.json").read_text())["artifact"]["sha256"]
    )
    assert results["rounds"][0]["release"]["dir"] == str(out / "release-round-0001")
    round1 = json.loads((out / "release-round-0001" / "report.json").read_text())
    assert round1["checkpoint"]["server_round"] == 1
    assert result.notes["release"] == final
    # The last round's release is the final one: copied, byte for byte, not rebuilt.
    for name in ("model.onnx", "report.json"):
        assert (out / "release" / name).read_bytes() == (
            out / "release-round-0002" / name
        ).read_bytes()


def test_simulate_no_release(tmp_path: Path, tiny_config: RunConfig) -> None:
    out = tmp_path / "run"
    simulate(tiny_config.replace(release=False), out_dir=out)
    assert not any(p.name.startswith("release") for p in out.iterdir())
    assert "release" not in json.loads((out / "results.json").read_text())


def test_simulate_rejects_an_image_student_for_tabular_data_before_training(
    tmp_path: Path,
) -> None:
    from fedge.errors import StudentShapeError

    config = RunConfig(dataset="breast-cancer", model="mlp", clients=2, rounds=1)
    with pytest.raises(StudentShapeError, match="student 'student-cnn' needs image input"):
        simulate(config.replace(student="student-cnn"), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
