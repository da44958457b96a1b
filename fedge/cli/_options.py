"""Declared options as CLI flags, derived from their one declaration.

:func:`option_flags` adds a flag for every option a dataclass declares (:func:`fedge.options.
option`), with its declared help and default, and hands the command the options the operator
gave as one dashed mapping (``None``: not given, so a file or the default applies).
:func:`run_option_flags` does so for the run options of :class:`~fedge.app.config.RunConfig`
whose declaration names the command (``simulate``, ``run``). Nothing here validates: what runs
the options does, once.
"""

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from fedge.options import NESTED, OptionSpec, config_key, declared_options

__all__ = ["option_flags", "run_option_flags", "run_option_names"]

F = TypeVar("F", bound=Callable[..., Any])


def run_option_names(command: str) -> list[str]:
    """The run options ``command`` offers as flags (field names)."""
    from fedge.app.config import RunConfig

    return [f.name for f, spec in declared_options(RunConfig) if command in spec.commands]


def run_option_flags(command: str) -> Callable[[F], F]:
    """Give the decorated command a flag per run option of ``command``; it is called with
    ``options``: the dashed mapping of the flags given."""
    from fedge.app.config import RunConfig

    return option_flags(RunConfig, command=command)


def option_flags(declared: type, *, command: str | None = None) -> Callable[[F], F]:
    """Give the decorated command a flag per option ``declared`` declares (with ``command``:
    those whose declaration names it); it is called with ``options``: the dashed mapping of
    the flags given."""

    def decorate(fn: F) -> F:
        # The command's own annotations, evaluated in its module (it may postpone them).
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(
                kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)
            )
            for p in inspect.signature(fn).parameters.values()
            if p.name != "options"
        ]
        types_of = _option_types(declared)
        flags = [
            _parameter(f, spec, types_of[f.name])
            for f, spec in declared_options(declared)
            if command is None or command in spec.commands
        ]
        names = [p.name for p in flags]

        @functools.wraps(fn)
        def command_with_flags(**kwargs: Any) -> Any:
            given = {config_key(n): kwargs.pop(n) for n in names}
            options = {k: v for k, v in given.items() if v is not None}
            return fn(options=options, **kwargs)

        params = [*flags, *own]
        command_with_flags.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command_with_flags.__annotations__ = {p.name: p.annotation for p in params}
        return typing.cast(F, command_with_flags)

    return decorate


def _option_types(declared: type) -> dict[str, Any]:
    """Each field's type, nested option dataclasses' included (annotations may be postponed)."""
    types_of = typing.get_type_hints(declared)
    for f in fields(declared):
        if f.metadata.get(NESTED):
            types_of.update(_option_types(types_of[f.name]))
    return types_of


def _parameter(f: Field[Any], spec: OptionSpec, annotation: Any) -> inspect.Parameter:
    flag = "--" + config_key(f.name)
    kind = _flag_type(annotation)
    decls = [f"{flag}/--no-{config_key(f.name)}"] if kind is bool else [flag]
    info = typer.Option(*decls, help=_help(spec), show_default=_default_text(f))
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, info],
    )


def _flag_type(annotation: Any) -> type:
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    return next((k for k in kinds if k is not type(None)), annotation)


def _help(spec: OptionSpec) -> str:
    text = spec.help
    if spec.high is not None:
        text += f" In {spec.interval()}."
    elif spec.low is not None:
        text += f" At least {spec.low:g}." if not spec.low_open else f" Above {spec.low:g}."
    return escape(text)


def _default_text(f: Field[Any]) -> str | bool:
    default = f.default
    if default is MISSING:
        return False
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)
