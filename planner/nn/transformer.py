"""The Transformer encoder layer (wav2vec 2.0 / HuBERT module names, so pretrained weights load as is)."""

from __future__ import annotations

from torch import Tensor, nn

from planner.ir.graph import GraphNode
from planner.nn.attention import SelfAttention
from planner.nn.leaves import build_leaf
from planner.nn.state import ForwardState

__all__ = ["TransformerLayer", "FeedForward", "activation"]


def activation(name: str) -> nn.Module:
    return {"gelu": nn.GELU, "relu": nn.ReLU, "swish": nn.SiLU}[name]()


class FeedForward(nn.Module):
    """``output_dense(dropout(act(intermediate_dense(x))))``."""

    def __init__(self, fc1: nn.Module, fc2: nn.Module, act: str, dropout: float,
                 names: tuple[str, str] = ("intermediate_dense", "output_dense")) -> None:  # fmt: skip
        super().__init__()
        self.names = names
        self.add_module(names[0], fc1)
        self.add_module(names[1], fc2)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        fc1, fc2 = getattr(self, self.names[0]), getattr(self, self.names[1])
        return self.dropout(fc2(self.dropout(self.act(fc1(x)))))


class TransformerLayer(nn.Module):
    """A post-LN or pre-LN Transformer layer.

    post-LN (HuBERT BASE): ``x = LN(x + MHSA(x)); x = LN(x + FFN(x))``.
    pre-LN: ``x = x + MHSA(LN(x)); x = x + FFN(LN(x))``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        cfg = node.config
        leaves = {lf.path: lf for lf in node.leaves}
        att = {k.split(".", 1)[1]: v for k, v in leaves.items() if k.startswith("attention.")}
        self.index = node.index
        self.pre_norm = cfg.norm == "pre"
        self.attention = SelfAttention(node.context.width, cfg.heads, cfg.attention, cfg.positional, cfg.dropout, att)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layer_norm = build_leaf(leaves["layer_norm"])
        self.feed_forward = FeedForward(build_leaf(leaves["feed_forward.intermediate_dense"]),
                                        build_leaf(leaves["feed_forward.output_dense"]), cfg.activation, cfg.dropout)  # fmt: skip
        self.final_layer_norm = build_leaf(leaves["final_layer_norm"])

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T, D)``; lengths: ``(B,)``. Returns ``(B, T, D)`` and the same lengths."""
        residual = x
        if self.pre_norm:
            x = self.layer_norm(x)
        x, _ = self.attention(x, lengths, state, self.index)
        x = residual + self.dropout(x)
        if self.pre_norm:
            return x + self.feed_forward(self.final_layer_norm(x)), lengths
        x = self.layer_norm(x)
        return self.final_layer_norm(x + self.feed_forward(x)), lengths
