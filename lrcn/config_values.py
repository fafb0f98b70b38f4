"""Checking a value against a type annotation: a config field's (`lrcn.config`) or a dataset
reader's option (`lrcn.data.manifest`), with one sentence naming the key and its source when the
value does not fit."""

from __future__ import annotations

import types
import typing
from typing import Any

from lrcn.config_yaml import shown
from lrcn.errors import LrcnError


def coerce_value(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type annotation (a config field's, or a reader option's).

    Ints are accepted for floats; a comma-separated string for a list. Raises ``LrcnError``
    naming ``key`` and ``source`` when the value does not fit.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(value, inner[0], key, source)
    if origin is list:
        if not isinstance(value, list | tuple):
            if not isinstance(value, str):
                _type_error(value, "a list", key, source)
            value = [v.strip() for v in value.split(",") if v.strip()]  # "bleu,cider"
        return [coerce_value(v, args[0], key, source) for v in value]
    scalar = _SCALARS.get(annotation)
    if scalar is None:
        return value
    expected, convert = scalar
    converted = convert(value)
    if converted is None:
        _type_error(value, expected, key, source)
    return converted


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _to_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(value: Any) -> float | None:
    if _number(value):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _to_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    return str(value) if _number(value) else None


# annotation -> (what the error says it must be, converter returning None when it cannot)
_SCALARS: dict[Any, tuple[str, Any]] = {
    bool: ("true or false", _to_bool),
    int: ("an integer", _to_int),
    float: ("a number", _to_float),
    str: ("a string", _to_str),
}


def _type_error(value: Any, expected: str, key: str, source: str) -> typing.NoReturn:
    raise LrcnError(f"{source}: `{key}` must be {expected}, got {shown(value)}; fix the value.")
