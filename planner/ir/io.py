"""Reading and writing architecture files."""

from __future__ import annotations

import os
from typing import Any

import yaml

from planner.config import parse_yaml, read_yaml
from planner.files import write_text_atomic
from planner.ir.graph import EncoderGraph, build_graph
from planner.ir.spec import dump_spec, parse_spec

__all__ = ["load", "loads", "dump", "dumps", "from_dict"]


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
    return from_dict(parse_yaml(text, source), source)


def dumps(graph: EncoderGraph) -> str:
    """The architecture as YAML text; ``loads(dumps(g)) == g``."""
    return yaml.safe_dump(dump_spec(graph.spec), sort_keys=False, default_flow_style=None, width=110)


def dump(graph: EncoderGraph, path: str | os.PathLike[str]) -> None:
    """Writes the architecture file of ``graph`` (an exact round trip of :func:`load`)."""
    write_text_atomic(path, dumps(graph))
