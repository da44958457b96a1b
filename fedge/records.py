"""Copying a record's same-named fields into another kind of record.

One record often travels as several: a dataclass, a database row, a protobuf message. Where
their fields share names, :func:`copy_fields` builds the one from the other and names only the
fields that differ, so a field added to both is carried without touching the copy.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["copy_fields", "field_names"]

T = TypeVar("T")


def field_names(record_type: Callable[..., Any]) -> tuple[str, ...]:
    """The fields of a dataclass, a protobuf message class or an SQLAlchemy row class."""
    if dataclasses.is_dataclass(record_type):
        return tuple(f.name for f in dataclasses.fields(record_type))
    descriptor = getattr(record_type, "DESCRIPTOR", None)
    if descriptor is not None:
        return tuple(f.name for f in descriptor.fields)
    table = getattr(record_type, "__table__", None)
    if table is not None:
        return tuple(table.columns.keys())
    raise TypeError(f"{record_type!r} is not a dataclass, protobuf message or table row")


def copy_fields(record_type: Callable[..., T], source: object, **given: Any) -> T:
    """A ``record_type`` with ``given`` and, for each other field ``source`` has an attribute
    of that name for, the value of that attribute (``None`` leaves a protobuf field unset)."""
    copied = {
        name: getattr(source, name)
        for name in field_names(record_type)
        if name not in given and hasattr(source, name)
    }
    return record_type(**copied, **given)
