"""Options: declared once, gathered in layers, validated by one checker.

Every option of fedge (a run option of ``fedge simulate`` and ``fedge run start``, a key of
``coordinator.toml`` or ``gateway.toml``) is a dataclass field declared with :func:`option`: its
type and default are the field's, its help text, range and choices are the :class:`OptionSpec`
in the field's metadata. From that one declaration come the CLI flags (``fedge.cli._options``),
the TOML keys, the wire form and the error messages (:func:`check_options`).

Run options are not validated here: this only gathers the operator's options into one flat
mapping (flags win over ``--set`` pairs, which win over the file). What runs them validates them
once: ``fedge simulate`` builds a :class:`~fedge.app.config.RunConfig`; ``fedge run start``
sends the mapping to the coordinator, which resolves it into the run's plan.

A server's config file (``coordinator.toml``, ``gateway.toml``) is one TOML table read into a
dataclass by :func:`load_config_table`, whose fields are checked by :func:`check_field_types`:
an unknown key or a value of the wrong type is a :class:`~fedge.errors.ConfigError` naming the
file, the key (as the file writes it, with hyphens) and the value.
"""

import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from fedge.errors import ConfigError

__all__ = [
    "BOTH",
    "SIMULATE",
    "OptionSpec",
    "check_field_types",
    "check_options",
    "coerce_option",
    "config_key",
    "declared_options",
    "layer_options",
    "load_config_table",
    "load_options_file",
    "option",
    "options_from_table",
    "parse_set",
    "project_task",
]

T = TypeVar("T")

#: The metadata key of a field's :class:`OptionSpec`; a field whose metadata has
#: ``NESTED`` holds a dataclass whose own options are flattened into its parent's.
SPEC = "fedge.option"
NESTED = "fedge.options"

#: ``commands`` of a run option: a flag of ``fedge simulate`` and ``fedge run start``, or of
#: ``fedge simulate`` only.
BOTH = ("simulate", "run")
SIMULATE = ("simulate",)


@dataclass(frozen=True)
class OptionSpec:
    """What an option's dataclass field cannot say by itself.

    ``low``/``high`` bound a number (open bounds exclude the value); ``choices`` returns the
    valid names (called only when checking, so a registry loads lazily); ``commands`` are the
    CLI commands that offer the option as a flag (``simulate``, ``run``); every option is a
    TOML key and a wire key wherever its dataclass is.
    """

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: Callable[[], Sequence[str]] | None = None
    commands: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range or not a valid choice, or ``None``."""
        if value is None or isinstance(value, bool):
            return None
        if self.choices is not None and isinstance(value, tuple):
            return self._list_problem(value)
        if self.choices is not None and isinstance(value, str):
            valid = list(self.choices())
            return None if value in valid else f"is not one of: {', '.join(valid)}"
        if isinstance(value, int | float):
            return self._range_problem(value)
        return None

    def _list_problem(self, values: tuple[Any, ...]) -> str | None:
        """Why a list option is not a non-empty list of distinct valid choices, or ``None``."""
        valid = list(self.choices()) if self.choices is not None else []
        bad = [v for v in values if v not in valid]
        if not values or bad:
            named = f"lists {bad[0]!r}, which " if bad else ""
            return f"{named}must be a non-empty list of: {', '.join(valid)}"
        if len(set(values)) != len(values):
            return "lists a name twice"
        return None

    def _range_problem(self, value: float) -> str | None:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if low_ok and high_ok and math.isfinite(value):
            return None
        if self.high is None and self.low is not None:
            if isinstance(value, int) and not self.low_open:
                return f"must be an integer >= {self.low:g}"
            if self.low == 0 and self.low_open:
                return "must be positive"
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        return f"is outside {self.interval()}"

    def interval(self) -> str:
        """The valid range in interval notation, e.g. ``(0, 1]``."""
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{low}, {high}{right}"


def option(
    default: Any = MISSING,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    positive: bool = False,
    choices: Callable[[], Sequence[str]] | None = None,
    commands: tuple[str, ...] = (),
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A dataclass field declaring one option (see :class:`OptionSpec`); ``positive`` is
    short for ``low=0, low_open=True``."""
    if positive:
        low, low_open = 0.0, True
    spec = OptionSpec(help, low, high, low_open, high_open, choices, commands)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={SPEC: spec})
    return field(default=default, metadata={SPEC: spec})


def declared_options(cls: type) -> Iterator[tuple[Field[Any], OptionSpec]]:
    """Every option ``cls`` declares, nested dataclasses' options flattened in order."""
    for f in fields(cls):
        if f.metadata.get(NESTED) and isinstance(f.type, type) and is_dataclass(f.type):
            yield from declared_options(f.type)
        elif SPEC in f.metadata:
            yield f, f.metadata[SPEC]


def coerce_option(key: str, value: Any, annotation: Any, *, prefix: str = "") -> Any:
    """``value`` as the option's type (an integral float is an int, an int a float), or
    :class:`ConfigError` naming ``prefix`` + ``key`` and saying which type it must be."""
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    if value is None and type(None) in kinds:
        return None
    target = next((k for k in kinds if k is not type(None)), annotation)
    if not isinstance(value, bool):
        if target is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif target is float and isinstance(value, int):
            value = float(value)
    _check_type(prefix + key, value, target)
    return value


def check_options(obj: object, *, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for the first option of ``obj`` whose value is out of its
    declared range or choices; the error names ``prefix`` + the dashed key and the value."""
    for f in fields(obj):  # type: ignore[arg-type]
        spec = f.metadata.get(SPEC)
        if spec is None:
            continue
        value = getattr(obj, f.name)
        problem = spec.problem(value)
        if problem is not None:
            shown = list(value) if isinstance(value, tuple) else value  # as the file wrote it
            raise ConfigError(prefix + config_key(f.name), shown, problem)


def load_options_file(path: Path | str) -> dict[str, Any]:
    """Read a TOML options file (top-level keys, or a ``[simulate]`` table) into a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "is not a file")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", str(path), f"is not valid TOML: {err}") from err
    # A [simulate] table is accepted so one file can hold several command sections.
    table = data.get("simulate", data)
    if not isinstance(table, dict):
        raise ConfigError("--config", str(path), "must hold a table of options")
    return dict(table)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (a JSON value, else a string); :class:`ConfigError` otherwise."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "must be KEY=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def layer_options(config_file: Path | None, *layers: dict[str, Any]) -> dict[str, Any]:
    """The file's options, then each layer in order (a ``None`` value is not given).

    Beneath them all, the task a ``pyproject.toml`` in the working directory names under
    ``[tool.fedge]`` (``task = "FILE.py:NAME"``, file-relative), when no layer gives a task,
    data or dataset: a user's own project runs its task with no option.
    """
    values = load_options_file(config_file) if config_file is not None else {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if v is not None})
    given = {str(k).replace("_", "-") for k in values}
    if not given & {"task", "data", "dataset"}:
        task = project_task(Path.cwd())
        if task is not None:
            values["task"] = task
    return values


def project_task(directory: Path) -> str | None:
    """The task ``directory/pyproject.toml`` names under ``[tool.fedge]``, if any (a file
    reference made absolute, so that it holds from any working directory)."""
    path = directory / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("fedge", {})
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), str(path), f"is not valid TOML: {err}") from err
    task = table.get("task")
    if task is None:
        return None
    if not isinstance(task, str):
        raise ConfigError(f"{path}: tool.fedge.task", task, "must be FILE.py:NAME or module:NAME")
    where, sep, attribute = task.rpartition(":")
    if sep and where.endswith(".py"):
        return f"{(directory / where).resolve()}:{attribute}"
    return task


def config_key(name: str) -> str:
    """A dataclass field's name as a config file writes it (``state_dir`` → ``state-dir``)."""
    return name.replace("_", "-")


def check_field_types(obj: object) -> None:
    """Raise :class:`ConfigError` for a dataclass field whose value is not of its type."""
    for f in fields(obj):  # type: ignore[arg-type]
        _check_type(config_key(f.name), getattr(obj, f.name), f.type)


def _check_type(key: str, value: Any, annotation: Any) -> None:
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    expected = kinds or (annotation,)
    if annotation is float:
        expected = (int, float)
    if typing.get_origin(annotation) is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(key, value, "must be a list of strings")
        return
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok:
        name = getattr(annotation, "__name__", str(annotation))
        label = {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
        }
        raise ConfigError(key, value, f"must be {label.get(name, name)}")


def options_from_table(
    cls: type[T], values: dict[str, Any], *, prefix: str = "", table: str = ""
) -> T:
    """``cls`` from a table of dashed keys (a TOML list becomes a tuple).

    An unknown key, a missing required one, a value of the wrong type or outside its declared
    range is a :class:`ConfigError` naming ``prefix`` + the key and the value; ``table`` names
    the table in the unknown-key error.
    """
    hints = typing.get_type_hints(cls)
    known = {config_key(f.name): f for f in fields(cls) if f.init}  # type: ignore[arg-type]
    for key, value in values.items():
        if key not in known:
            valid = ", ".join(sorted(known))
            raise ConfigError(prefix + key, value, f"is not a {table} option; valid: {valid}")
    kwargs: dict[str, Any] = {}
    for key, f in known.items():
        if key in values:
            value = tuple(values[key]) if isinstance(values[key], list) else values[key]
            kwargs[f.name] = coerce_option(key, value, hints[f.name], prefix=prefix)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(prefix + key, None, "is missing")
    try:
        made = cls(**kwargs)
        check_options(made)
    except ConfigError as err:
        # The value as the table wrote it (before an int became a float).
        value = values.get(err.option, err.value)
        raise ConfigError(prefix + err.option, value, err.reason) from None
    return made


def load_config_table(
    path: Path | str,
    table: str,
    cls: type[T],
    *,
    dir_keys: tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
    sections: dict[str, dict[str, str]] | None = None,
) -> T:
    """Read ``path`` (a ``[table]`` table or top-level keys) into ``cls``.

    Keys are ``cls``'s fields with hyphens; ``dir_keys`` are paths, resolved against the file's
    folder; a TOML list becomes a tuple. ``sections`` are optional tables beside ``[table]``,
    each mapping its keys to a field (``{"console": {"address": "console-address"}}``). Every
    error names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "is not a file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", str(path), f"is not valid TOML: {err}") from err
    values = data.get(table, data)
    if not isinstance(values, dict):
        raise ConfigError("--config", str(path), f"needs a [{table}] table")
    values = {k: v for k, v in values.items() if k not in (sections or {})}
    values.update(_section_values(path, data, sections or {}))
    values = {config_key(k): v for k, v in {**values, **(overrides or {})}.items()}
    for key in dir_keys:
        value = values.get(config_key(key))
        if value is None:
            continue
        if not isinstance(value, str | Path):
            raise ConfigError(f"{path}: {config_key(key)}", value, "must be a string (a directory)")
        values[config_key(key)] = (path.parent / str(value)).resolve()
    return options_from_table(cls, values, prefix=f"{path}: ", table=table)


def _section_values(
    path: Path, data: dict[str, Any], sections: dict[str, dict[str, str]]
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for section, keys in sections.items():
        extra = data.get(section)
        if extra is None:
            continue
        if not isinstance(extra, dict):
            raise ConfigError(f"{path}: {section}", extra, "must be a table")
        for key, value in extra.items():
            if key not in keys:
                valid = ", ".join(sorted(keys))
                where = f"{path}: {section}.{key}"
                raise ConfigError(where, value, f"is not a [{section}] option; valid: {valid}")
            found[keys[key]] = value
    return found
