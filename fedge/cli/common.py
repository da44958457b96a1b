"""Helpers shared by the CLI command modules: command groups, consoles and error reporting."""

from typing import NoReturn

import typer
from rich.console import Console

__all__ = ["command_group", "console", "err_console", "fail"]

console = Console()
err_console = Console(stderr=True)


def command_group(help: str) -> typer.Typer:
    """A ``fedge`` command group; its help text is plain, so ``[default: X]`` stays visible."""
    # Rich markup would read bracketed text in help strings as style tags and drop it.
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``Error: message`` on one line to stderr and exit with ``code`` (no traceback)."""
    err_console.print(f"[bold red]Error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)
