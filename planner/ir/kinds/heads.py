"""Head node kinds: per-layer projection heads for layer-to-layer distillation, and a CTC head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from planner.config import field
from planner.errors import FieldError
from planner.ir.compression import parse_layers
from planner.ir.kinds.base import MAX_HIDDEN, MAX_WIDTH, NODE_KINDS, NodeContext, NodeKind, linear
from planner.ir.leaf import Leaf

__all__ = ["ProjectionHeads", "CtcHead"]


def _parse_head_layers(value: Any, path: str) -> Any:
    sel = parse_layers(value, path)
    if sel in ("frontend", "heads", "post"):
        raise FieldError(path, f"{sel!r} is not a selection of layers (allowed: all, N, 'A-B', [N, ...])")
    return sel


def select_layers(sel: Any, count: int, path: str) -> list[int]:
    """Resolves a layer selection (``all``, ``N``, ``"A-B"``, ``[N, ...]``) against ``count`` layers."""
    if sel == "all":
        return list(range(count))
    if isinstance(sel, int):
        idx = [sel]
    elif isinstance(sel, str):
        lo, hi = (int(p) for p in sel.split("-"))
        idx = [max(lo, count)] if hi >= count else list(range(lo, hi + 1))  # its first missing layer: no huge list
    else:
        idx = list(sel)
    bad = [i for i in idx if i >= count]
    if bad:
        raise FieldError(path, f"layer {bad[0]} does not exist (the architecture has layers 0-{count - 1})")
    return idx


@NODE_KINDS.register("projection_heads")
@dataclass(frozen=True)
class ProjectionHeads(NodeKind):
    """A ``Linear(width, teacher_width)`` on the output of each selected layer (layer-to-layer distillation).

    Attributes:
        width: the teacher's width.
        layers: which layers get a head (default all).
    """

    width: int = field(le=MAX_WIDTH)
    layers: Any = field("all", parse=_parse_head_layers)

    kind: ClassVar[str] = "projection_heads"
    roles: ClassVar = ("head",)

    def check(self) -> None:
        if self.width < 1:
            raise FieldError("width", f"{self.width} must be positive")

    def layer_indices(self, layer_count: int) -> list[int]:
        return select_layers(self.layers, layer_count, "layers")

    def validate(self, ctx: NodeContext) -> None:
        super().validate(ctx)
        self.layer_indices(ctx.layer_count)

    def out_width(self, ctx: NodeContext) -> int:
        return self.width

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        return [linear(f"projections.{i}", ctx.width, self.width, {"head"})
                for i in self.layer_indices(ctx.layer_count)]  # fmt: skip


@NODE_KINDS.register("ctc")
@dataclass(frozen=True)
class CtcHead(NodeKind):
    """A linear CTC output layer over the final hidden state (``vocab`` includes the blank)."""

    vocab: int = field(le=MAX_HIDDEN)

    kind: ClassVar[str] = "ctc"
    roles: ClassVar = ("head",)

    def check(self) -> None:
        if self.vocab < 2:
            raise FieldError("vocab", f"{self.vocab} must be at least 2 (labels plus the blank)")

    def out_width(self, ctx: NodeContext) -> int:
        return self.vocab

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        return [linear("linear", ctx.width, self.vocab, {"head", "ctc"})]
