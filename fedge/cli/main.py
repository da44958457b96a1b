"""The ``fedge`` Typer application: every command group, each loaded only when it runs.

The ``fedge`` console script (:func:`main`) builds the application with the one command group
its arguments name, so a device's ``fedge edge start`` loads neither the simulation's options
nor the release commands (megabytes a small device keeps); ``fedge --help`` and the importable
:data:`app` have them all.
"""

import functools
import importlib
import sys
from typing import Any

import typer

from fedge.log import route_flower_logs

__all__ = ["app", "build_app", "main"]

#: Every command (built on first use: see :func:`__getattr__`).
app: typer.Typer

#: Each top-level command or command group: the module and attribute that define it.
COMMANDS = {
    "simulate": ("fedge.cli.simulate", "simulate_command"),
    "console": ("fedge.cli.console", "console_command"),
    "new": ("fedge.cli.new", "new_command"),
}
GROUPS = {
    "certs": ("fedge.cli.certs", "app"),
    "coordinator": ("fedge.cli.coordinator", "app"),
    "edge": ("fedge.cli.edge", "app"),
    "gateway": ("fedge.cli.gateway", "app"),
    "fleet": ("fedge.cli.fleet", "app"),
    "run": ("fedge.cli.run", "app"),
    "privacy": ("fedge.cli.privacy", "app"),
    "release": ("fedge.cli.release", "app"),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The ``fedge`` application: every command, or only the command or group ``only``."""
    root = typer.Typer(
        name="fedge",
        help="fedge: hybrid edge-cloud federated learning.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",  # as command_group
    )
    for name, (module, attribute) in COMMANDS.items():
        if only in (None, name):
            root.command(name)(getattr(importlib.import_module(module), attribute))
    for name, (module, attribute) in GROUPS.items():
        if only in (None, name):
            root.add_typer(getattr(importlib.import_module(module), attribute), name=name)
    root.callback()(_root)
    return root


def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    """fedge: hybrid edge-cloud federated learning."""
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    route_flower_logs()


def main() -> None:
    """The ``fedge`` console script: builds only the command (group) its arguments name."""
    named = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    build_app(named if named in COMMANDS or named in GROUPS else None)()


@functools.cache
def _whole_app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> Any:
    if name == "app":  # every command: tests, `python -c "...app()"`, documentation
        return _whole_app()
    raise AttributeError(f"module 'fedge.cli.main' has no attribute {name!r}")
