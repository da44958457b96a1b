"""What the README says ``flwr run .`` does is what the installed Flower does with this
``pyproject.toml`` (a Flower upgrade that changes it fails here, not in a new user's hands)."""

import inspect
import re
import tomllib
from pathlib import Path

from flwr.cli import constant
from flwr.cli.local_superlink import _start_local_superlink
from flwr.supercore.constant import DEFAULT_SIMULATION_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def _readme_flwr_runs() -> list[str]:
    return re.findall(r"^flwr run \..*$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)


def test_the_readme_starts_as_many_supernodes_as_the_app_has_clients() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    clients = pyproject["tool"]["flwr"]["app"]["config"]["clients"]
    # Flower 1.41 reads no SuperNode count from the app's pyproject.toml: without one on the
    # command line it starts its default, which is not the app's `clients`.
    assert "federations" not in pyproject["tool"]["flwr"]
    assert DEFAULT_SIMULATION_CONFIG.num_supernodes == 2 != clients
    (command,) = _readme_flwr_runs()
    assert f'--federation-config "num-supernodes={clients}"' in command, command
    assert "--stream" in command  # else it returns before the run has done anything


def test_the_readme_names_flowers_local_superlink_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"127.0.0.1:{constant.LOCAL_SUPERLINK_HTTP_API_PORT}" in readme
    assert constant.DEFAULT_FLOWER_CONFIG_TOML.startswith('[superlink]\ndefault = "local"')
    assert "Successfully started run" in readme
    # The command the README gives to end it matches how Flower starts it.
    source = inspect.getsource(_start_local_superlink)
    assert re.search(r'"flower-superlink",\s*"--insecure",\s*"--simulation"', source)
    assert "pgrep -f 'flower-superlink --insecure --simulation'" in readme
