"""A declarative neural architecture search and compression planner for speech encoders.

The stages, one verb each::

    graph = planner.load("arch.yaml")        # validate a file into the graph IR
    model = planner.materialize(graph)       # build the PyTorch model, compressed as the file says
    planner.dump(graph, "copy.yaml")         # write it back, exactly
    cost = planner.estimate(graph)           # price it (torch-free): params, storage, MACs, BOPs
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner.cost import Cost, estimate
from planner.errors import ConfigError, FieldError, GraphError, PlannerError
from planner.ir import EncoderGraph, dump, dumps, from_dict, load, loads

if TYPE_CHECKING:
    from planner.nn import Encoder

__all__ = [
    "ConfigError",
    "Cost",
    "EncoderGraph",
    "FieldError",
    "GraphError",
    "PlannerError",
    "dump",
    "dumps",
    "estimate",
    "from_dict",
    "load",
    "loads",
    "materialize",
    "compress_",
    "export",
    "load_packed",
]

__version__ = "0.1.0"


def materialize(graph: EncoderGraph) -> Encoder:
    """Builds the PyTorch model of ``graph``, compressed as its file says (see :func:`planner.compress.materialize`;
    :func:`planner.nn.build` makes the float model only).

    torch is imported here, not at ``import planner``, so that loading, validating and searching stay
    torch-free.
    """
    from planner.compress import materialize as _materialize

    return _materialize(graph)


def compress_(model: Any, plan: Any = None, **kwargs: Any) -> Any:
    """Attaches fake quantizers and N:M masks in place (see :func:`planner.compress.compress_`)."""
    from planner.compress import compress_ as _compress

    return _compress(model, plan, **kwargs)


def export(model: Any, graph: EncoderGraph, out_dir: Any, *, force: bool = False) -> dict[str, Any]:
    """Writes a packed directory (see :func:`planner.compress.export`)."""
    from planner.compress import export as _export

    return _export(model, graph, out_dir, force=force)


def load_packed(out_dir: Any) -> Encoder:
    """Rebuilds a model from a packed directory (see :func:`planner.compress.load_packed`)."""
    from planner.compress import load_packed as _load_packed

    return _load_packed(out_dir)


_SEARCH_EXPORTS = (
    "load_space",
    "run_search",
    "sample_space",
)  # lazy: planner.search imports nothing heavy, but stays opt-in


def __getattr__(name: str) -> Any:
    if name in _SEARCH_EXPORTS:
        import planner.search

        return getattr(planner.search, name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")
