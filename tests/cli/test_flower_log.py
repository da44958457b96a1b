"""fedge's log speaks for fedge: Flower's own console lines do not reach a fedge process's output.

A fresh process runs the CLI's root callback (as every ``fedge`` command does), then builds the
strategy a coordinator run builds and logs through Flower's logger as Flower's code does.
"""

import subprocess
import sys

SCRIPT = """
import logging
import click
from fedge.cli.main import app
from flwr.common.logger import log
from flwr.serverapp.strategy import FedAvg

try:  # any command: the root callback configures the log
    app(["certs", "--help"], standalone_mode=False)
except click.exceptions.Exit:
    pass
logging.getLogger("fedge").info("fedge speaks")
FedAvg(fraction_evaluate=0.0)  # Flower warns, on every run, of what fedge does on purpose
for _ in range(3):
    log(logging.WARNING, "a node is unreachable")
log(logging.INFO, "Starting Flower ServerApp")
log(logging.ERROR, "a message failed")
"""


def test_flower_lines_come_out_once_as_fedge_lines_or_not_at_all() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    lines = (run.stdout + run.stderr).splitlines()
    assert "WARNING fedge: Flower: a node is unreachable" in lines, lines
    assert "ERROR fedge: Flower: a message failed" in lines, lines
    assert sum("unreachable" in line for line in lines) == 1, lines
    assert not [line for line in lines if "fraction_evaluate" in line], lines
    assert not [line for line in lines if "ServerApp" in line], lines
    assert not [line for line in lines if "\x1b[" in line], lines  # Flower's colours
