"""The materializer registry: one builder per node kind, keyed like :data:`planner.ir.NODE_KINDS`.

A builder takes the :class:`~planner.ir.GraphNode` and returns an ``nn.Module``. Main-path modules
implement ``forward(x, lengths, state) -> (x, lengths)``; head modules implement
``forward(output, hidden_states, lengths)``. Builders are registered explicitly by the modules imported
below; a test asserts the key set equals the IR's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from planner.registry import Registry

__all__ = ["BUILDERS"]

BUILDERS: Registry[Callable[..., nn.Module]] = Registry("node builder")


def _register_all() -> None:
    from planner.nn import conformer, frontends, heads, squeezeformer, subsampling, transformer  # noqa: F401


_register_all()
