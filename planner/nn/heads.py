"""Head modules: per-layer projection heads (layer-to-layer distillation) and a CTC output layer."""

from __future__ import annotations

from torch import Tensor, nn

from planner.ir.graph import GraphNode
from planner.nn.leaves import build_leaf

__all__ = ["ProjectionHeads", "CtcHead"]


class ProjectionHeads(nn.Module):
    """``Linear(width, teacher_width)`` on each selected layer's hidden state, by layer index."""

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        self.projections = nn.ModuleDict({lf.path.split(".")[1]: build_leaf(lf) for lf in node.leaves})

    def forward(self, output: Tensor, hidden_states: list[Tensor], lengths: Tensor) -> dict[int, Tensor]:
        """Returns ``{layer index: (B, T, teacher_width)}``."""
        return {int(i): proj(hidden_states[int(i)]) for i, proj in self.projections.items()}


class CtcHead(nn.Module):
    """Linear CTC logits ``(B, T, vocab)`` over the final output."""

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        self.linear = build_leaf(node.leaves[0])

    def forward(self, output: Tensor, hidden_states: list[Tensor], lengths: Tensor) -> Tensor:
        return self.linear(output)
