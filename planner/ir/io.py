"""Reading and writing architecture files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from planner.errors import ConfigError, FieldError
from planner.files import write_text_atomic
from planner.ir._yaml import parse_yaml
from planner.ir.graph import EncoderGraph, build_graph
from planner.ir.spec import dump_spec, parse_spec

__all__ = ["load", "loads", "dump", "dumps", "from_dict", "read_yaml", "write_text_atomic"]


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Reads a YAML file with the planner's one reader (see :mod:`planner.ir._yaml`).

    Raises:
        ConfigError: a missing or unreadable file, invalid YAML, a tag, a repeated key, a document nested
            deeper than 64 levels or expanding (aliases counted at each use) past 20,000 values; each
            problem as ``FILE: line N: message``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([FieldError("", "no such file")], str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([FieldError("", f"cannot read the file ({err})")], str(path)) from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, source: str | None) -> Any:
    """``text`` parsed by the planner's one YAML reader (:func:`planner.ir._yaml.parse_yaml`): safe tags only,
    repeated keys, deep nesting and alias bombs refused with ``FILE: line N: problem``."""
    return parse_yaml(text, source)


def from_dict(data: Any, source: str | None = None) -> EncoderGraph:
    """Builds the graph of an architecture given as plain data (as parsed from YAML)."""
    return build_graph(parse_spec(data, source), source)


def load(path: str | os.PathLike[str]) -> EncoderGraph:
    """Loads and validates an architecture file.

    Example:
        >>> import planner
        >>> graph = planner.load("studies/recycle-and-distill/armhubert-s.yaml")
        >>> graph.param_count
        22394080

    Raises:
        ConfigError: the file is missing, is not YAML, or describes an invalid architecture; every
            problem is listed as ``FILE: field.path: message``.
    """
    return from_dict(read_yaml(path), str(path))


def loads(text: str, source: str | None = None) -> EncoderGraph:
    """Loads an architecture from YAML text."""
    return from_dict(_parse_yaml(text, source), source)


def dumps(graph: EncoderGraph) -> str:
    """The architecture as YAML text; ``loads(dumps(g)) == g``."""
    return yaml.safe_dump(dump_spec(graph.spec), sort_keys=False, default_flow_style=None, width=110)


def dump(graph: EncoderGraph, path: str | os.PathLike[str]) -> None:
    """Writes the architecture file of ``graph`` (an exact round trip of :func:`load`)."""
    write_text_atomic(path, dumps(graph))
