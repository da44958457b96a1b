"""Options as an operator gives them: run options in layers, and typed server config files.

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
import tomllib
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from fedge.errors import ConfigError

__all__ = [
    "check_field_types",
    "config_key",
    "layer_options",
    "load_config_table",
    "load_options_file",
    "parse_set",
]

T = TypeVar("T")


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
    """The file's options, then each layer in order (a ``None`` value is not given)."""
    values = load_options_file(config_file) if config_file is not None else {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if v is not None})
    return values


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
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in {**values, **(overrides or {})}.items():
        name = key.replace("-", "_")
        if name not in known:
            valid = ", ".join(sorted(config_key(k) for k in known))
            raise ConfigError(f"{path}: {key}", value, f"is not a {table} option; valid: {valid}")
        if name in dir_keys:
            if not isinstance(value, str | Path):
                raise ConfigError(f"{path}: {key}", value, "must be a string (a directory)")
            value = (path.parent / str(value)).resolve()
        if isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err.option}", err.value, err.reason) from None


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
