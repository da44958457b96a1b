"""``fedge release build --profile``: one artifact per profile; every bad option is one line on
stderr, exit code 2, and no release directory."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge.builder import read_profile_artifacts
from fedge.cli.main import app

WATCH = """
[profile]
tier = "device"
engines = ["litert", "onnxruntime"]

[budget]
max-model-bytes = {max_bytes}
p99-ms = 50.0
peak-memory-mb = 2048
min-accuracy = 0.5

[device]
dataset = "digits"
"""

GATEWAY = """
[profile]
tier = "gateway"
engines = ["{engine}"]
precisions = ["int8"]

[budget]
max-model-bytes = 67108864
p99-ms = 50.0
peak-memory-mb = 2048
min-accuracy = 0.5
"""

#: Options that keep a CLI build to a few seconds (one student, no pruning, few timed runs).
QUICK = ["--student", "student-tiny", "--no-prune", "--epochs", "20", "--latency-runs", "10"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _build(teacher_path: Path, out: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        ["release", "build", "--checkpoint", str(teacher_path), "--out", str(out), *args],
        env={"COLUMNS": "200"},
    )
    return result.exit_code, result.stdout, result.stderr


def test_a_multi_profile_build_writes_one_artifact_per_profile(
    tmp_path: Path, teacher_path: Path
) -> None:
    watch = _write(tmp_path / "watch.toml", WATCH.format(max_bytes=12288))
    gateway = _write(tmp_path / "hub.toml", GATEWAY.format(engine="openvino"))
    out = tmp_path / "rel"
    code, stdout, stderr = _build(
        teacher_path, out, "--profile", str(watch), "--profile", str(gateway), *QUICK
    )
    assert code == 0, stderr
    assert "watch" in stdout and "hub" in stdout and "candidates" in stdout
    assert "model 1/1: distil student-tiny" in stdout  # the build shows its progress
    assert re.search(r"artifact \d+/\d+: measure student-tiny int8 on openvino", stdout), stdout
    artifacts = {a.profile: a for a in read_profile_artifacts(out)}
    assert set(artifacts) == {"watch", "hub"}
    assert artifacts["watch"].length <= 12288
    assert artifacts["hub"].engine == "openvino" and artifacts["hub"].precision == "int8"
    for artifact in artifacts.values():
        assert artifact.figures["agreement"] >= 0.995


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--profile", "toaster"],
            "--profile: 'toaster' is neither a built-in profile (camera, clinic, cpu-small, "
            "gateway",
        ),
        (
            ["--profile", "camera"],
            "--profile: 'camera' is for mnist-5k models; the checkpoint's cnn-small is for digits",
        ),
        (["--profile", "gateway", "--all-profiles"], "--all-profiles: cannot be combined"),
        (["--profile", "gateway", "--publish-percent", "10"], "--publish-percent: 10 publishes"),
        (["--prune-ratio", "0.5"], "--prune-ratio: [0.5] needs --profile or --all-profiles"),
        (["--profile", "gateway", "--prune-ratio", "1.5"], "--prune-ratio: 1.5 must be in (0, 1)"),
        (["--student", "student-tiny", "--student", "student-cnn"], "--student: 'student-cnn'"),
        (["--all-profiles", "--student", "vit"], "--student: 'vit' is not one of"),
    ],
)
def test_a_bad_option_is_one_line_exit_2(
    tmp_path: Path, teacher_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "rel"
    code, stdout, stderr = _build(teacher_path, out, *args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stdout + stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert message in lines[0]
    assert "Traceback" not in stdout + stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("profile_text", "message"),
    [
        (GATEWAY.format(engine="test-absent"), "pip install 'fedge[absent]'"),
        (
            GATEWAY.format(engine="tensorrt"),
            "[profile] engines: ['tensorrt'] lists 'tensorrt', which must be",
        ),
        (
            WATCH.format(max_bytes=256),
            "profile 'tiny': no candidate fits its budget (<= 0.2 KiB, p99 <= 50 ms, <= 2048 MB, "
            "accuracy >= 50.00%, agreement >= 99.5%); closest: student-tiny",
        ),
    ],
)
def test_a_profile_that_cannot_be_served_is_one_line_exit_2(
    tmp_path: Path, teacher_path: Path, profile_text: str, message: str
) -> None:
    path = _write(tmp_path / "tiny.toml", profile_text)
    out = tmp_path / "rel"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the release already shipped")
    code, _, stderr = _build(teacher_path, out, "--profile", str(path), *QUICK)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel", "tiny.toml"]
    assert [p.name for p in out.iterdir()] == ["model.onnx"]


def test_an_openvino_build_sends_no_telemetry(tmp_path: Path, teacher_path: Path) -> None:
    """OpenVINO's converter and NNCF report usage to Google Analytics unless told not to; a
    release build of a clinic's model must not. They keep a client id under ``$HOME/intel``
    first, so a build in a fresh home must leave no such directory (and fork no sender)."""
    home = tmp_path / "home"
    home.mkdir()
    gateway = _write(tmp_path / "hub.toml", GATEWAY.format(engine="openvino"))
    build = ["release", "build", "--checkpoint", str(teacher_path), "--out", str(tmp_path / "rel")]
    proc = subprocess.run(
        [sys.executable, "-m", "fedge.cli", *build, "--profile", str(gateway), *QUICK],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_profile_artifacts(tmp_path / "rel")[0].engine == "openvino"
    assert not (home / "intel").exists(), sorted(p.name for p in (home / "intel").iterdir())
