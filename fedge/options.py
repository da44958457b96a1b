"""Run options as an operator gives them: a TOML file, flags, ``KEY=VALUE`` pairs, in layers.

Nothing here validates: this only gathers the operator's options into one flat mapping (flags
win over ``--set`` pairs, which win over the file). What runs them validates them once:
``fedge simulate`` builds a :class:`~fedge.app.config.RunConfig`; ``fedge run start`` sends the
mapping to the coordinator, which resolves it into the run's plan.
"""

import json
import tomllib
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError

__all__ = ["layer_options", "load_options_file", "parse_set"]


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
