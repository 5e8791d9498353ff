"""Squeezeformer (Kim et al., 2022): the block, and the time reduction / recovery around its middle layers.

Module names follow the IR leaves of the ``squeezeformer``, ``time_reduction`` and ``time_recovery`` kinds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.ir.graph import GraphNode
from planner.ir.leaf import Leaf
from planner.nn.attention import SelfAttention
from planner.nn.conformer import SwishFeedForward, sub_leaves
from planner.nn.leaves import build_leaf
from planner.nn.state import ForwardState, zero_padding

__all__ = ["SqueezeformerLayer", "Scale", "SwishConvModule", "TimeReduction", "TimeRecovery"]


class Scale(nn.Module):
    """Learned per-channel input scaling ``x * weight + bias`` (Squeezeformer's replacement of the pre-LN).

    Args:
        width: channels D; ``weight`` and ``bias`` have shape ``(D,)``, initialised to the identity.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, T, D)``. Returns ``(B, T, D)``."""
        return x * self.weight + self.bias


class SwishConvModule(nn.Module):
    """Squeezeformer's convolution module without its residual: Conformer's with GLU replaced by Swish.

    ``pointwise2(Swish(batch_norm(depthwise(Swish(pointwise1(x))))))``: pointwise D -> 2D, depthwise over the 2D
    channels, batch norm over 2D, pointwise 2D -> D (reference: github kssteven418/Squeezeformer,
    ``src/models/conformer_encoder.py``, ``ConvModule`` with ``conv_use_glu=False``). The depthwise conv pads
    ``(k - 1) // 2`` frames on the left and ``k // 2`` on the right (TensorFlow's ``same``).

    Args:
        leaves: the IR leaves of the module, keyed by their path below it (``pointwise1``...).
        dropout: dropout on the output.
    """

    def __init__(self, leaves: dict[str, Leaf], dropout: float = 0.0) -> None:
        super().__init__()
        self.pointwise1 = build_leaf(leaves["pointwise1"])
        self.depthwise = build_leaf(leaves["depthwise"])
        self.batch_norm = build_leaf(leaves["batch_norm"])
        self.pointwise2 = build_leaf(leaves["pointwise2"])
        k = leaves["depthwise"].kernel[0]
        self.pad = ((k - 1) // 2, k // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: ``(B, T, D)``; lengths: ``(B,)``. Returns ``(B, T, D)``."""
        x = F.silu(self.pointwise1(x.transpose(1, 2)))  # (B, 2D, T)
        # Zeroed padded frames look to the depthwise kernel like the conv's own zero padding of a lone utterance
        # (the reference multiplies by its pad mask at the same point).
        x = zero_padding(x.transpose(1, 2), lengths).transpose(1, 2)
        x = self.depthwise(F.pad(x, self.pad))
        x = self.pointwise2(F.silu(self.batch_norm(x)))
        return self.dropout(x.transpose(1, 2))


class SqueezeformerLayer(nn.Module):
    """A Squeezeformer block: for each module in ``config.modules`` (``mfcf``: attention, ffn1, conv, ffn2),
    ``x = {name}_norm(x + module({name}_scale(x)))``.

    The attention module is plain MHSA, each FFN ``fc2(Swish(fc1(x)))`` (a full step) and the conv module a
    :class:`SwishConvModule` (the scaling replaces the pre-LN of both).

    Args:
        node: a graph node of kind ``squeezeformer``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        cfg = node.config
        width = node.context.width
        leaves = {lf.path: lf for lf in node.leaves}
        self.index = node.index
        self.order: tuple[str, ...] = tuple(cfg.modules)
        for name in self.order:
            self.add_module(f"{name}_scale", Scale(width))
            if name == "attention":
                module: nn.Module = SelfAttention(width, cfg.heads, cfg.attention, cfg.positional, cfg.dropout,
                                                  sub_leaves(leaves, "attention"))  # fmt: skip
            elif name == "conv":
                module = SwishConvModule(sub_leaves(leaves, "conv"), cfg.dropout)
            else:
                module = SwishFeedForward(sub_leaves(leaves, name), cfg.dropout, cfg.activation)
            self.add_module(name, module)
            self.add_module(f"{name}_norm", build_leaf(leaves[f"{name}_norm"]))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T, D)``; lengths: ``(B,)``. Returns ``(B, T, D)`` and the same lengths."""
        for name in self.order:
            y = getattr(self, f"{name}_scale")(x)
            if name == "attention":
                y, _ = self.attention(y, lengths, state, self.index)
                y = self.dropout(y)
            elif name == "conv":
                y = self.conv(y, lengths)
            else:
                y = getattr(self, name)(y)
            x = getattr(self, f"{name}_norm")(x + y)
        return x, lengths


class TimeReduction(nn.Module):
    """Squeezeformer time reduction: a strided depthwise conv, then a pointwise conv.

    The input is zero padded by ``kernel - 1`` frames on the right, so ``ceil(T / stride)`` frames come out and
    every valid output frame sees only valid or zero frames. The reference Squeezeformer pads ``kernel - stride``
    and zero-fills the output up to ``ceil(T / stride)`` frames: the same values on every frame it computes;
    where ``T % stride != 0`` its last frame is zeros, here it is computed from the last input frames.

    Args:
        node: a graph node of kind ``time_reduction``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        leaves = {lf.path: lf for lf in node.leaves}
        self.index = node.index
        self.stride = node.config.stride
        self.kernel = node.config.kernel
        self.depthwise = build_leaf(leaves["depthwise"])
        self.pointwise = build_leaf(leaves["pointwise"])

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T, D)``; lengths: ``(B,)``. Returns ``(B, ceil(T / stride), D)`` and ``ceil(lengths / stride)``."""
        state.reduction_strides[self.index] = self.stride
        # Zeroed padded frames make a padded utterance's last windows see what a lone one's right padding gives.
        x = F.pad(zero_padding(x, lengths).transpose(1, 2), (0, self.kernel - 1))
        x = self.pointwise(self.depthwise(x)).transpose(1, 2)
        return x, torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")


class TimeRecovery(nn.Module):
    """Squeezeformer time recovery: ``projection(repeat(x)) + skip``.

    Each frame is repeated ``stride`` times and the sequence trimmed to the frames entering the time reduction
    ``config.source``; that input (``state.layer_inputs[source]``) is added back as a skip connection, and its
    lengths become the output lengths.

    Args:
        node: a graph node of kind ``time_recovery``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        self.source = node.config.source
        self.projection = build_leaf(node.leaves[0])

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T', D)`` at the reduced rate; lengths: ``(B,)``. Returns ``(B, T, D)`` and the lengths at the
        reduction's input."""
        skip, skip_lengths = state.layer_inputs[self.source]
        stride = state.reduction_strides[self.source]
        x = x.repeat_interleave(stride, dim=1)[:, : skip.shape[1]]
        return self.projection(x) + skip, skip_lengths
