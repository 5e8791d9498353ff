"""Frontend modules: wav2vec 2.0 conv extractor, mask embedding, conv positional embedding, layer norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.ir.graph import GraphNode
from planner.nn.leaves import build_leaf
from planner.nn.state import ForwardState, padding_mask, zero_padding

__all__ = ["ConvExtractor", "MaskedGroupNorm", "MaskEmbedding", "ConvPosEmbedding", "LayerNormBlock"]


class MaskedGroupNorm(nn.Module):
    """Group norm with one group per channel whose statistics cover only the valid frames.

    Equals ``nn.GroupNorm(C, C)`` on an unpadded input, and makes a padded batch give each utterance the
    output it gets alone. Parameters are named ``weight``/``bias`` like ``nn.GroupNorm``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: ``(B, C, T)``; lengths: ``(B,)`` valid frames."""
        valid = (~padding_mask(lengths, x.shape[-1]))[:, None, :].to(x.dtype)
        count = valid.sum(-1, keepdim=True).clamp(min=1)
        mean = (x * valid).sum(-1, keepdim=True) / count
        var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None]


class _ConvBlock(nn.Module):
    def __init__(self, conv: nn.Module, norm: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.layer_norm = norm


class ConvExtractor(nn.Module):
    """wav2vec 2.0 / HuBERT feature extractor: ``(B, samples)`` waveform to ``(B, T, C)`` frames.

    Each block is conv -> norm -> GELU. Output lengths are ``floor((L - k) / s) + 1`` per conv.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        cfg, leaves = node.config, {lf.path: lf for lf in node.leaves}
        blocks = []
        for i, (c, _, _) in enumerate(cfg.conv_layers):
            norm_leaf = leaves.get(f"conv_layers.{i}.layer_norm")
            norm: nn.Module | None = None
            if norm_leaf is not None:
                norm = MaskedGroupNorm(c) if norm_leaf.op == "group_norm" else nn.LayerNorm(c)
            blocks.append(_ConvBlock(build_leaf(leaves[f"conv_layers.{i}.conv"]), norm))
        self.conv_layers = nn.ModuleList(blocks)
        self.strides = [(k, s) for _, k, s in cfg.conv_layers]
        self.layer_norm = build_leaf(leaves["layer_norm"]) if "layer_norm" in leaves else None
        self.projection = build_leaf(leaves["projection"]) if "projection" in leaves else None

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        x = x[:, None, :]
        for block, (k, s) in zip(self.conv_layers, self.strides):
            x = block.conv(x)
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
            lengths = lengths.clamp(min=0)
            if isinstance(block.layer_norm, MaskedGroupNorm):
                x = block.layer_norm(x, lengths)
            elif block.layer_norm is not None:
                x = block.layer_norm(x.transpose(1, 2)).transpose(1, 2)
            x = F.gelu(x)
        x = x.transpose(1, 2)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.projection is not None:
            x = self.projection(x)
        return x, lengths


class MaskEmbedding(nn.Module):
    """Replaces the frames in ``state.mask`` by a learned vector (``embedding``, shape ``(D,)``)."""

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(node.context.width).uniform_())

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        if state.mask is None:
            return x, lengths
        if state.mask.shape != x.shape[:2]:
            raise ValueError(f"mask has shape {tuple(state.mask.shape)}, the frames are {tuple(x.shape[:2])}")
        return torch.where(state.mask[..., None], self.embedding.to(x.dtype), x), lengths


class ConvPosEmbedding(nn.Module):
    """``x + GELU(conv(x))`` with a grouped, weight-normalised conv (wav2vec 2.0); same length out."""

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        leaf = node.leaves[0]
        self.conv = build_leaf(leaf, padding=leaf.kernel[0] // 2)
        self.remove = 1 if leaf.kernel[0] % 2 == 0 else 0

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        y = self.conv(zero_padding(x, lengths).transpose(1, 2))
        if self.remove:
            y = y[..., : -self.remove]
        return x + F.gelu(y).transpose(1, 2), lengths


class LayerNormBlock(nn.Module):
    """A layer norm over the width."""

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        self.layer_norm = build_leaf(node.leaves[0])

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        return self.layer_norm(x), lengths
