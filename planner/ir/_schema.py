"""Typed conversion between YAML mappings and frozen dataclasses, with located errors.

Every config in the planner is a frozen dataclass. :func:`from_data` builds one from plain YAML data
(unknown keys, wrong types and invalid values are errors that name the field path and what is allowed),
and :func:`to_data` turns one back into plain data, leaving out fields equal to their default, so that
``from_data(to_data(x)) == x`` exactly.

A dataclass can refine validation with a ``check(self)`` method raising :class:`FieldError` with a path
relative to itself, and a field can carry its own parser/dumper in ``metadata`` (``parse``/``dump``) for
shorthand forms such as ``"2:4"``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

from planner.errors import FieldError

__all__ = ["from_data", "to_data", "join", "describe", "field"]

T = TypeVar("T")

_TYPE_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, dict[str, dataclasses.Field]] = {}  # init fields per class (dataclasses.fields is slow)


def join(path: str, key: str | int) -> str:
    """Appends a key or an index to a dotted field path (an empty key leaves the path as it is)."""
    if key == "":
        return path
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def field(default: Any = dataclasses.MISSING, *, parse=None, dump=None, doc: str = "") -> Any:
    """A dataclass field with an optional shorthand parser and dumper."""
    meta = {"parse": parse, "dump": dump, "doc": doc}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls: type) -> dict[str, Any]:
    hints = _TYPE_HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _TYPE_HINTS[cls] = hints
    return hints


def describe(tp: Any) -> str:
    """A short human description of a type, for error messages."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None)) + " or null"
    if origin is tuple:
        return f"a list of {describe(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors: list[FieldError] = []
        for arg in non_none:
            try:
                return _convert(arg, value, path)
            except FieldError as err:
                errors.append(err)
        if len(non_none) == 1:
            raise errors[0]
        raise FieldError(path, f"{value!r} is not {describe(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or type(value) is not type(allowed[0]):
            raise FieldError(path, f"{value!r} is not allowed ({describe(tp)})")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise FieldError(path, f"expected {describe(tp)}, got {_kind(value)}")
        item_tp = get_args(tp)[0]
        return tuple(_convert(item_tp, v, join(path, i)) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_data(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {_kind(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(path, f"expected an integer, got {_kind(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(path, f"expected a number, got {_kind(value)} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise FieldError(path, f"expected a string, got {_kind(value)} {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {path}")  # a bug in a config class


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def from_data(cls: type[T], data: Any, path: str = "") -> T:
    """Builds the frozen dataclass ``cls`` from plain YAML data.

    Args:
        cls: a dataclass type whose fields are annotated with supported types.
        data: the parsed YAML value (a mapping).
        path: the field path of ``data`` inside its document, used in error messages.

    Raises:
        FieldError: with the path of the first offending field.
    """
    if not isinstance(data, dict):
        raise FieldError(path, f"expected a mapping, got {_kind(data)} {data!r}")
    hints = _hints(cls)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        _FIELDS[cls] = fields
    unknown = [k for k in data if k not in fields]
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise FieldError(join(path, str(unknown[0])), f"unknown field (allowed: {allowed})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        fpath = join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FieldError(fpath, f"required field is missing ({describe(hints[name])})")
            continue
        parse = f.metadata.get("parse")
        value = data[name]
        kwargs[name] = parse(value, fpath) if parse else _convert(hints[name], value, fpath)
    try:
        obj = cls(**kwargs)
    except FieldError as err:
        raise FieldError(join(path, err.path), err.message) from None
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except FieldError as err:
            raise FieldError(join(path, err.path), err.message) from None
    return obj


def to_data(obj: Any) -> Any:
    """Turns a config dataclass back into plain YAML data, omitting default-valued fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            dump = f.metadata.get("dump")
            out[f.name] = dump(value) if dump else to_data(value)
        return out
    if isinstance(obj, tuple):
        return [to_data(v) for v in obj]
    return obj
