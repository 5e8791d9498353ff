"""A declarative neural architecture search and compression planner for speech encoders.

The stages, one verb each::

    graph = planner.load("arch.yaml")        # validate a file into the graph IR
    model = planner.materialize(graph)       # build the PyTorch model
    planner.dump(graph, "copy.yaml")         # write it back, exactly
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner.errors import ConfigError, FieldError, GraphError, PlannerError
from planner.ir import EncoderGraph, dump, dumps, from_dict, load, loads

if TYPE_CHECKING:
    from planner.nn import Encoder

__all__ = [
    "ConfigError",
    "EncoderGraph",
    "FieldError",
    "GraphError",
    "PlannerError",
    "dump",
    "dumps",
    "from_dict",
    "load",
    "loads",
    "materialize",
]

__version__ = "0.1.0"


def materialize(graph: EncoderGraph) -> Encoder:
    """Builds the PyTorch model of ``graph`` (see :func:`planner.nn.materialize`).

    torch is imported here, not at ``import planner``, so that loading, validating and searching stay
    torch-free.
    """
    from planner.nn import materialize as _materialize

    return _materialize(graph)


def __getattr__(name: str) -> Any:
    raise AttributeError(f"module 'planner' has no attribute {name!r}")
