"""``fedge simulate --mode async`` through the real CLI (a subprocess): bad knobs are one line
and exit 2 before anything is trained or written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE = ("simulate", "--dataset", "digits", "--model", "cnn-small", "--clients", "10")


def _fedge(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedge.cli", *BASE, "--out", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--mode", "async", "--buffer", "11"),
            "--buffer: 11 is larger than the fleet (--clients 10)",
        ),
        (("--mode", "async", "--concurrency", "0"), "--concurrency: 0 must be an integer >= 1"),
        (
            ("--mode", "async", "--max-staleness", "-1"),
            "--max-staleness: -1 must be an integer >= 0",
        ),
        (
            ("--mode", "async", "--dp-noise", "1.0"),
            "Poisson-sampling amplification does not hold",
        ),
        (("--availability", "random:2"), "--availability: 'random:2' needs a probability"),
    ],
)
def test_bad_async_input_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = _fedge(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()
