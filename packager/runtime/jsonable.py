"""Frozen dataclasses to and from JSON, strictly: unknown fields, missing fields, wrong types and
out-of-range numbers are refused (``ArtifactIntegrityError``), because a loader that guesses is a
loader that silently drifts from the reference."""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any, Union

from .errors import ArtifactIntegrityError

# A dataclass field's metadata key: the field was added without a new schema version, so it is
# written only when it differs from its default (and a record without it reads as the default).
OMIT_DEFAULT = "omit_default"


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get(OMIT_DEFAULT) and getattr(value, f.name) == _default(f))}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def from_jsonable(tp: Any, value: Any, where: str) -> Any:
    """Parse ``value`` as type ``tp`` strictly; ``where`` names the field in error messages."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union(tp, value, where)
    if dataclasses.is_dataclass(tp):
        return _dataclassfrom_jsonable(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _enum(tp, value, where)
    if origin is tuple:
        return _tuple(tp, value, where)
    if origin is dict:
        return _dict(tp, value, where)
    return _scalar(tp, value, where)


def _union(tp: Any, value: Any, where: str) -> Any:
    """The first of the union's types ``value`` parses as (None only for null)."""
    options = typing.get_args(tp)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return from_jsonable(option, value, where)
        except ArtifactIntegrityError as e:
            errors.append(str(e))
    raise ArtifactIntegrityError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {options}")


def _enum(tp: type[Enum], value: Any, where: str) -> Enum:
    try:
        return tp(value)
    except ValueError as e:
        raise ArtifactIntegrityError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from e


def _tuple(tp: Any, value: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ArtifactIntegrityError(f"{where}: expected a list, got {type(value).__name__}")
    (item_type, _ellipsis) = typing.get_args(tp)
    return tuple(from_jsonable(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))


def _dict(tp: Any, value: Any, where: str) -> dict[Any, Any]:
    key_type, item_type = typing.get_args(tp)
    if not isinstance(value, dict) or not all(isinstance(k, key_type) for k in value):
        raise ArtifactIntegrityError(f"{where}: expected an object with {key_type.__name__} keys")
    return {k: from_jsonable(item_type, v, f"{where}.{k}") for k, v in value.items()}


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ArtifactIntegrityError(f"{where}: a number too large for a float") from None
    if tp is int and type(value) is int and abs(value) >= 2**63:  # nothing in a manifest is that large
        raise ArtifactIntegrityError(f"{where}: the integer {str(value)[:20]}... is out of range")
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ArtifactIntegrityError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")


def _dataclassfrom_jsonable(cls: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ArtifactIntegrityError(f"{where}: expected an object, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ArtifactIntegrityError(f"{where}: unknown fields {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = from_jsonable(hints[name], value[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ArtifactIntegrityError(f"{where}: missing field {name!r}")
    return cls(**kwargs)
