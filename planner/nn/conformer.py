"""The Conformer layer (Gulati et al., 2020), numerically the same as ``torchaudio.models.ConformerLayer``.

Module names follow the IR leaves of the ``conformer`` kind (``ffn1.fc1``, ``conv.depthwise``...), so
``model.get_submodule("layers.3.conv.depthwise")`` is the leaf the cost model priced.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from planner.ir.graph import GraphNode
from planner.ir.leaf import Leaf
from planner.nn.attention import SelfAttention
from planner.nn.leaves import build_leaf
from planner.nn.state import ForwardState, zero_padding
from planner.nn.transformer import activation

__all__ = ["ConformerLayer", "ConvModule", "SwishFeedForward", "sub_leaves"]


def sub_leaves(leaves: dict[str, Leaf], prefix: str) -> dict[str, Leaf]:
    """The leaves below ``prefix.``, keyed by their path relative to it."""
    return {k[len(prefix) + 1 :]: v for k, v in leaves.items() if k.startswith(prefix + ".")}


class ConvModule(nn.Module):
    """Conformer convolution module without its residual.

    ``pointwise2(SiLU(batch_norm(depthwise(GLU(pointwise1(LN(x)))))))`` (Squeezeformer's Swish module without
    GLU is :class:`planner.nn.squeezeformer.SwishConvModule`); the layer norm is absent when the leaves have none.

    Even kernels pad ``(k - 1) // 2`` frames on the left and ``k // 2`` on the right, so the length is
    preserved (torchaudio only accepts odd kernels, for which both sides get ``(k - 1) // 2``).

    Args:
        leaves: the IR leaves of the module, keyed by their path below it (``pointwise1``...).
        dropout: dropout on the output.
    """

    def __init__(self, leaves: dict[str, Leaf], dropout: float = 0.0) -> None:
        super().__init__()
        self.layer_norm = build_leaf(leaves["layer_norm"]) if "layer_norm" in leaves else None
        self.pointwise1 = build_leaf(leaves["pointwise1"])
        self.depthwise = build_leaf(leaves["depthwise"])
        self.batch_norm = build_leaf(leaves["batch_norm"])
        self.pointwise2 = build_leaf(leaves["pointwise2"])
        k = leaves["depthwise"].kernel[0]
        self.pad = ((k - 1) // 2, k // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: ``(B, T, D)``; lengths: ``(B,)``. Returns ``(B, T, D)``."""
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        x = F.glu(self.pointwise1(x.transpose(1, 2)), dim=1)  # (B, D, T)
        # Padded frames would leak into the valid frames next to them through the depthwise kernel; zeroed,
        # they look exactly like the conv's own zero padding of a lone utterance.
        x = zero_padding(x.transpose(1, 2), lengths).transpose(1, 2)
        x = self.depthwise(F.pad(x, self.pad))
        x = self.pointwise2(F.silu(self.batch_norm(x)))
        return self.dropout(x.transpose(1, 2))


class SwishFeedForward(nn.Module):
    """``fc2(dropout(act(fc1(LN(x)))))`` with dropout on the output; no layer norm when the leaves have none.

    ``act`` is Swish (Conformer, Squeezeformer) unless the block's ``activation`` says otherwise (``relu``
    for BiT-style binarized blocks). The Conformer layer applies the half step (``0.5 *``) itself, so it
    is visible in its ``forward``.

    Args:
        leaves: the IR leaves of the module, keyed by their path below it (``layer_norm``, ``fc1``, ``fc2``).
        dropout: dropout on the hidden activations and the output.
        act: ``swish``, ``relu`` or ``gelu``.
    """

    def __init__(self, leaves: dict[str, Leaf], dropout: float = 0.0, act: str = "swish") -> None:
        super().__init__()
        self.layer_norm = build_leaf(leaves["layer_norm"]) if "layer_norm" in leaves else None
        self.fc1 = build_leaf(leaves["fc1"])
        self.act = activation(act)
        self.fc2 = build_leaf(leaves["fc2"])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, T, D)``. Returns ``(B, T, D)``."""
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class ConformerLayer(nn.Module):
    """A Conformer block, in ``forward``:

    ``x = x + 0.5 * FFN1(x)``; ``x = x + MHSA(LN(x))``; ``x = x + Conv(x)``; ``x = x + 0.5 * FFN2(x)``;
    ``x = LN(x)``. Each FFN is ``fc2(act(fc1(LN(x))))``, ``act`` the block's ``activation`` (Swish by default).

    Args:
        node: a graph node of kind ``conformer``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        cfg = node.config
        leaves = {lf.path: lf for lf in node.leaves}
        self.index = node.index
        self.ffn1 = SwishFeedForward(sub_leaves(leaves, "ffn1"), cfg.dropout, cfg.activation)
        self.attention_layer_norm = build_leaf(leaves["attention_layer_norm"])
        self.attention = SelfAttention(node.context.width, cfg.heads, cfg.attention, cfg.positional, cfg.dropout,
                                       sub_leaves(leaves, "attention"))  # fmt: skip
        self.attention_dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(sub_leaves(leaves, "conv"), cfg.dropout)
        self.ffn2 = SwishFeedForward(sub_leaves(leaves, "ffn2"), cfg.dropout, cfg.activation)
        self.final_layer_norm = build_leaf(leaves["final_layer_norm"])

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T, D)``; lengths: ``(B,)``. Returns ``(B, T, D)`` and the same lengths."""
        x = x + 0.5 * self.ffn1(x)
        y, _ = self.attention(self.attention_layer_norm(x), lengths, state, self.index)
        x = x + self.attention_dropout(y)
        x = x + self.conv(x, lengths)
        x = x + 0.5 * self.ffn2(x)
        return self.final_layer_norm(x), lengths
