"""Registered node kinds. Importing this package registers every built-in kind, explicitly."""

from planner.ir.kinds import frontends, heads, layers
from planner.ir.kinds.base import NODE_KINDS, Domain, NodeContext, NodeKind, Role

__all__ = ["NODE_KINDS", "NodeContext", "NodeKind", "Domain", "Role", "frontends", "layers", "heads"]
