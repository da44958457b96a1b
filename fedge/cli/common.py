"""Helpers shared by the CLI command modules: command groups, consoles and error reporting."""

import importlib.util
import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from fedge.errors import ConfigError, MissingExtraError
from fedge.log import logger

if TYPE_CHECKING:
    from fedge.inference.profiles import DeviceProfile

__all__ = [
    "PROFILE_HELP",
    "SERVER_PACKAGES",
    "CoordinatorOption",
    "EnrollAddressOption",
    "EnrollNameOption",
    "JsonOption",
    "command_group",
    "console",
    "count",
    "err_console",
    "fail",
    "log_fedge_info",
    "print_figures",
    "print_plain",
    "require_extra",
    "resolve_device_profile",
    "stop_on_signals",
]

#: The built-in device profiles, by their files (listed without loading the profile module).
_BUILT_IN = sorted(
    p.stem for p in (Path(__file__).parents[1] / "inference" / "device_profiles").glob("*.toml")
)
#: The help of every option that takes a device profile.
PROFILE_HELP = f"a built-in profile name ({', '.join(_BUILT_IN)}) or a profile .toml file"

#: What ``fedge[server]`` installs that a command of the coordinator or the release pipeline
#: cannot run without.
SERVER_PACKAGES = ("torch", "flwr", "sqlalchemy", "onnx", "sklearn", "mlxtend", "matplotlib")

#: ``--json``: a command's output as JSON, for scripts.
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

#: The options of a command that enrols first when it is given a token (``fedge edge start``,
#: ``fedge gateway start``): the coordinator (this run's, or the one to enrol with), its
#: enrolment port and the name to enrol as.
CoordinatorOption = Annotated[
    str | None,
    typer.Option(help="HOST:PORT of the coordinator (default: the one enrolled with)."),
]
EnrollAddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --token: HOST:PORT of the coordinator's enrolment port (default: PORT+1)."
    ),
]
EnrollNameOption = Annotated[str, typer.Option(help="With --token: a human-readable name.")]

console = Console()
err_console = Console(stderr=True)


def print_plain(text: str) -> None:
    """Print ``text`` as it is: one line however narrow the terminal (no id is ever cut), no
    highlighting, no Rich markup (it holds names and messages devices chose)."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def print_figures(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a table of figures (one row per round, say), each column right-aligned."""
    from rich.table import Table  # with fractions and decimal: not loaded by a serving device

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def log_fedge_info() -> None:
    """Show fedge's INFO lines: a service's log (a device's, a gateway's) is read for them."""
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))


def command_group(help: str) -> typer.Typer:
    """A ``fedge`` command group. Help text is Rich markup: a literal ``[`` is written ``\\[``."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode="rich")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``Error: message`` on one line to stderr and exit with ``code`` (no traceback)."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def stop_on_signals(stop: Callable[[], None], *, saying: str = "") -> None:
    """Call ``stop`` on SIGTERM and SIGINT (Ctrl-C), after printing ``signal N: saying`` if
    ``saying`` is given."""

    def _stop(signum: int, _frame: object) -> None:
        if saying:
            console.print(f"signal {signum}: {saying}")
        stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def require_extra(extra: str, what: str, packages: tuple[str, ...] = SERVER_PACKAGES) -> None:
    """Exit 2 naming the extra to install when this install lacks one of ``packages``."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"{MissingExtraError(what, extra)} (missing: {', '.join(missing)})")


def count(n: int, noun: str) -> str:
    """``1 device``, ``3 devices``: a count with its noun."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def resolve_device_profile(name: str, option: str = "--profile") -> "DeviceProfile":
    """The device profile ``name``, a built-in name or a profile ``.toml`` file, wherever a
    command takes one; :class:`ConfigError` naming ``option`` otherwise."""
    from fedge.inference.profiles import list_profiles, resolve_profile

    try:
        return resolve_profile(name)
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(
            option,
            name,
            f"is neither a built-in profile ({', '.join(list_profiles())}) nor a .toml file",
        ) from None
