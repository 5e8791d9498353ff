"""Filterbank subsampling frontends: Conformer / USM 2-D conv subsampling and Squeezeformer's depthwise separable one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.ir.graph import GraphNode
from planner.nn.leaves import build_leaf
from planner.nn.state import ForwardState, padding_mask, zero_padding

__all__ = ["Conv2dSubsampling", "DwSepSubsampling", "conv_lengths"]


def conv_lengths(lengths: Tensor, kernel: int, stride: int) -> Tensor:
    """Valid frames after an unpadded conv: ``floor((L - k) / s) + 1``, at least 0."""
    return (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)


def _flatten(x: Tensor) -> Tensor:
    """``(B, C, T, F)`` to ``(B, T, C * F)``, channel-major like torchaudio / ESPnet subsampling."""
    b, c, t, f = x.shape
    return x.transpose(1, 2).reshape(b, t, c * f)


class Conv2dSubsampling(nn.Module):
    """2-D convs over ``(time, mel)``, each followed by ReLU, then a linear ``projection`` to the width.

    Input ``(B, T, n_mels)`` log-mel features; no padding, so each conv gives ``floor((L - k) / s) + 1`` frames.

    Args:
        node: a graph node of kind ``conv2d_subsampling``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        cfg = node.config
        leaves = {lf.path: lf for lf in node.leaves}
        self.kernel, self.stride = cfg.kernel, cfg.stride
        self.convs = nn.ModuleList(build_leaf(leaves[f"convs.{i}"]) for i in range(len(cfg.channels)))
        self.projection = build_leaf(leaves["projection"])

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T, n_mels)``; lengths: ``(B,)`` frames. Returns ``(B, T', D)`` and the subsampled lengths."""
        # Without padding, valid outputs only read valid frames; zeroing keeps padded outputs finite and
        # independent of whatever the caller padded with.
        x = zero_padding(x, lengths)[:, None]  # (B, 1, T, F)
        for conv in self.convs:
            x = F.relu(conv(x))
            lengths = conv_lengths(lengths, self.kernel, self.stride)
        return self.projection(_flatten(x)), lengths


class DwSepSubsampling(nn.Module):
    """Squeezeformer subsampling (4x in time): ``conv`` + ReLU, ``depthwise``, ``pointwise`` + ReLU, ``projection``.

    Before each stride-2 conv, time and frequency get one zero position at the end (as in the reference
    Squeezeformer), so each conv halves both: ``floor(L / 2)`` valid frames, 80 mels give 40 then 20 bins.

    Args:
        node: a graph node of kind ``dwsep_subsampling``.
    """

    def __init__(self, node: GraphNode) -> None:
        super().__init__()
        leaves = {lf.path: lf for lf in node.leaves}
        self.conv = build_leaf(leaves["conv"])
        self.depthwise = build_leaf(leaves["depthwise"])
        self.pointwise = build_leaf(leaves["pointwise"])
        self.projection = build_leaf(leaves["projection"])

    @staticmethod
    def _pad_end(x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, C, T, F)`` with padded frames zeroed, then one zero frame and one zero bin appended.

        A padded utterance's last valid output then reads a zero frame, as a lone utterance's reads the pad.
        """
        x = x.masked_fill(padding_mask(lengths, x.shape[2])[:, None, :, None], 0.0)
        return F.pad(x, (0, 1, 0, 1))

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState) -> tuple[Tensor, Tensor]:
        """x: ``(B, T, n_mels)``; lengths: ``(B,)`` frames. Returns ``(B, T // 4, D)`` and ``(lengths // 2) // 2``."""
        x = F.relu(self.conv(self._pad_end(x[:, None], lengths)))  # (B, C, T // 2, F // 2)
        lengths = torch.div(lengths, 2, rounding_mode="floor")
        x = F.relu(self.pointwise(self.depthwise(self._pad_end(x, lengths))))
        lengths = torch.div(lengths, 2, rounding_mode="floor")
        return self.projection(_flatten(x)), lengths
