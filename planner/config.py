"""The ground floor of every config: YAML reading and typed conversion to frozen dataclasses, with located errors.

Every file the planner reads (architectures, spaces, studies, recipes, probe tasks, hardware catalogs) is read
by :func:`read_yaml` / :func:`parse_yaml`, the one YAML reader (:mod:`planner._yaml`: safe tags only; repeated
keys, nesting deeper than :data:`MAX_DEPTH` and documents expanding past :data:`MAX_NODES` values refused with
``FILE: line N: problem``), then built into frozen dataclasses here. Durable writes live in :mod:`planner.files`.


Every config in the planner is a frozen dataclass. :func:`from_data` builds one from plain YAML data
(unknown keys, wrong types and invalid values are errors that name the field path and what is allowed),
and :func:`to_data` turns one back into plain data, leaving out fields equal to their default, so that
``from_data(to_data(x)) == x`` exactly.

A dataclass can refine validation with a ``check(self)`` method raising :class:`FieldError` with a path
relative to itself, and a field can carry its own parser/dumper in ``metadata`` (``parse``/``dump``) for
shorthand forms such as ``"2:4"``, and numeric bounds (``gt``/``ge``/``lt``/``le``, checked so that NaN fails
them; a float field never accepts NaN or infinity).

A config axis with several kinds (samplers, pruners, evaluators, losses...) is a table ``{kind: dataclass}``
read by :func:`parse_kind`: each kind's dataclass holds only its own fields, so a field of another kind is an
unknown field, and an unknown kind names the allowed ones.

:func:`from_data` reports every problem of a document at once (one :class:`FieldError` grouping them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from planner._yaml import MAX_DEPTH, MAX_NODES, parse_yaml
from planner.errors import ConfigError, FieldError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "check_bounds",
    "describe",
    "dump_kind",
    "field",
    "from_data",
    "join",
    "parse_kind",
    "parse_yaml",
    "read_yaml",
    "to_data",
]

T = TypeVar("T")


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Reads a YAML file with the planner's one reader.

    Raises:
        ConfigError: a missing or unreadable file, invalid YAML, a tag, a repeated key, a document nested
            deeper than :data:`MAX_DEPTH` levels or expanding (aliases counted at each use) past
            :data:`MAX_NODES` values; each problem as ``FILE: line N: message``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([FieldError("", "no such file")], str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([FieldError("", f"cannot read the file ({err})")], str(path)) from None
    return parse_yaml(text, str(path))


_TYPE_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, dict[str, dataclasses.Field]] = {}  # init fields per class (dataclasses.fields is slow)


def join(path: str, key: str | int) -> str:
    """Appends a key or an index to a dotted field path (an empty key leaves the path as it is)."""
    if key == "":
        return path
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def field(
    default: Any = dataclasses.MISSING,
    *,
    parse=None,
    dump=None,
    doc: str = "",
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with an optional shorthand parser and dumper, and optional numeric bounds.

    Args:
        default: the default value (immutable).
        parse: ``parse(value, path) -> value`` for shorthand forms; replaces the type conversion.
        dump: ``dump(value) -> data``, the inverse of ``parse``.
        doc: one line for generated documentation.
        gt, ge, lt, le: bounds a number (or each number of a tuple) must meet; ``None`` leaves the side open.
            A ``None`` value of an optional field is not checked.
    """
    meta = {"parse": parse, "dump": dump, "doc": doc, "bounds": (gt, ge, lt, le)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")
    return dataclasses.field(default=default, metadata=meta)


def check_bounds(
    value: Any,
    path: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """Raises :class:`FieldError` unless every number in ``value`` meets the bounds (NaN never does)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            check_bounds(v, join(path, i), gt, ge, lt, le)
        return
    if not isinstance(value, (int, float)):
        return
    if gt is not None and not value > gt:
        raise FieldError(path, f"{value!r} must be greater than {gt}")
    if ge is not None and not value >= ge:
        raise FieldError(path, f"{value!r} must be at least {ge}")
    if lt is not None and not value < lt:
        raise FieldError(path, f"{value!r} must be less than {lt}")
    if le is not None and not value <= le:
        raise FieldError(path, f"{value!r} must be at most {le}")


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
        if not math.isfinite(value):
            raise FieldError(path, f"{value!r} is not a finite number (NaN and infinity are not allowed)")
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
    errors: list[FieldError] = []
    allowed = ", ".join(sorted(fields))
    for k in data:
        if k not in fields:
            errors.append(FieldError(join(path, str(k)), f"unknown field (allowed: {allowed})"))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        fpath = join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(FieldError(fpath, f"required field is missing ({describe(hints[name])})"))
            continue
        parse = f.metadata.get("parse")
        value = data[name]
        try:
            kwargs[name] = parse(value, fpath) if parse else _convert(hints[name], value, fpath)
            bounds = f.metadata.get("bounds")
            if bounds is not None:
                check_bounds(kwargs[name], fpath, *bounds)
        except FieldError as err:
            errors.append(err)
    if errors:
        raise FieldError.group(errors)
    try:
        obj = cls(**kwargs)
    except FieldError as err:
        raise err.prefixed(path) from None
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except FieldError as err:
            raise err.prefixed(path) from None
    return obj


def parse_kind(table: Mapping[str, type[T]], data: Any, path: str, what: str) -> T:
    """Builds the config of one registered kind from ``{kind: NAME, ...its own fields}`` or a bare ``NAME``.

    Args:
        table: ``{kind: dataclass}``; each dataclass holds only the fields of its kind.
        data: the YAML value: a kind name, or a mapping with a ``kind`` key.
        path: the field path of ``data``, for error messages.
        what: what the axis is called in messages (``sampler``, ``loss``).

    Raises:
        FieldError: an unknown kind (naming the allowed ones), or the kind's own field errors; a field of
            another kind is an unknown field.
    """
    kinds = ", ".join(sorted(table))
    if isinstance(data, str):
        data = {"kind": data}
    if not isinstance(data, dict):
        raise FieldError(path, f"expected a {what} kind or a mapping with 'kind' (allowed kinds: {kinds}), got "
                               f"{_kind(data)} {data!r}")  # fmt: skip
    if "kind" not in data:
        raise FieldError(join(path, "kind"), f"required field is missing (allowed kinds: {kinds})")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in table:
        raise FieldError(join(path, "kind"), f"{kind!r} is not a {what} kind (allowed: {kinds})")
    rest = {k: v for k, v in data.items() if k != "kind"}
    try:
        return from_data(table[kind], rest, path)
    except FieldError as err:
        fields = ", ".join(sorted(_FIELDS.get(table[kind], {}))) or "none"

        def own(e: FieldError) -> bool:  # an unknown key of this kind's mapping itself, not of a nested one
            return e.message.startswith("unknown field") and any(e.path == join(path, str(k)) for k in rest)

        if any(own(e) for e in err.errors):
            raise FieldError.group(
                FieldError(e.path, f"not a field of {what} kind {kind!r} (its fields: {fields})") if own(e) else e
                for e in err.errors
            ) from None
        raise


def dump_kind(kind: str, obj: Any) -> dict[str, Any]:
    """The YAML data of a kind's config: ``{kind: NAME, ...non-default fields}`` (the inverse of :func:`parse_kind`)."""
    return {"kind": kind, **to_data(obj)}


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
