"""Helpers shared by the CLI command modules: consoles and error reporting."""

from typing import NoReturn

import typer
from rich.console import Console

__all__ = ["console", "err_console", "fail"]

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``Error: message`` on one line to stderr and exit with ``code`` (no traceback)."""
    err_console.print(f"[bold red]Error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)
