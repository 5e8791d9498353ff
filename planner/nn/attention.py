"""Multi-head self-attention with registered attention kinds, reuse, and relative positions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.ir.attention import AttentionConfig
from planner.ir.leaf import Leaf
from planner.nn.leaves import build_leaf
from planner.nn.state import ForwardState, padding_mask

__all__ = ["SelfAttention", "Product", "pattern_mask", "relative_sinusoids"]


def pattern_mask(cfg: AttentionConfig, length: int, device: torch.device | None = None) -> Tensor:
    """``(T, T)`` True where query ``i`` may attend key ``j`` under the attention kind ``cfg``."""
    pos = torch.arange(length, device=device)
    return torch.as_tensor(cfg.allowed(pos[:, None], pos[None, :]))


def relative_sinusoids(length: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(2T-1, D)`` sinusoidal embeddings of relative positions ``T-1, ..., -(T-1)`` (Transformer-XL)."""
    pos = torch.arange(length - 1, -length, -1.0, device=device)[:, None]
    inv = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    pe = torch.zeros(2 * length - 1, width, device=device)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe


class Product(nn.Module):
    """``torch.matmul(input, other)`` as a module: the IR's ``matmul`` leaf (``attention.scores`` /
    ``attention.context``), where :func:`planner.compress.compress_` hooks the quantizers of both inputs.

    Args:
        kind: ``scores`` (``input`` = Q ``(B, H, T, dk)``, ``other`` = K^T ``(B, H, dk, T)``) or ``context``
            (``input`` = probabilities ``(B, H, T, T)``, ``other`` = V ``(B, H, T, dk)``).
        heads: H.
        head_dim: dk.
    """

    def __init__(self, kind: str, heads: int, head_dim: int) -> None:
        super().__init__()
        self.kind, self.heads, self.head_dim = kind, heads, head_dim

    def operands(self) -> tuple[tuple[int, tuple[int, ...], bool], tuple[int, tuple[int, ...], bool]]:
        """Per input: (channels, the view that broadcasts a per-channel vector over it, signed).

        Q, K and V have the model's D = H x dk channels (signed); the probabilities one channel per head,
        non-negative (unsigned, BiT's {0, 1} binarization).
        """
        h, dk = self.heads, self.head_dim
        if self.kind == "scores":
            return (h * dk, (h, 1, dk), True), (h * dk, (h, dk, 1), True)
        return (h, (h, 1, 1), False), (h * dk, (h, 1, dk), True)

    def forward(self, input: Tensor, other: Tensor) -> Tensor:  # noqa: A002 - torch.matmul's names
        return torch.matmul(input, other)


class SelfAttention(nn.Module):
    """Self-attention whose kind decides which positions each frame attends to.

    Module names follow wav2vec 2.0 (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). A ``reuse`` kind
    has no ``q_proj``/``k_proj`` and applies the probabilities of its source layer to its own values
    (Recycle-and-Distill eq. 4). ``relative`` positions add Transformer-XL terms with ``pos_proj``,
    ``pos_bias_u`` and ``pos_bias_v``. The products run in :class:`Product` modules ``scores``
    (``(Q + u) K^T``) and ``context`` (``P V``) so that compression can quantize their inputs; the
    relative-position term ``(Q + v) R^T`` stays a float product.

    Args:
        width: model width D.
        heads: number of heads H.
        attention: the attention kind config.
        positional: ``absolute`` or ``relative``.
        dropout: dropout on the attention probabilities.
        leaves: the IR leaves of this module, keyed by their path below it (``q_proj``...).
    """

    def __init__(self, width: int, heads: int, attention: AttentionConfig, positional: str, dropout: float,
                 leaves: dict[str, Leaf]) -> None:  # fmt: skip
        super().__init__()
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.attention = attention
        self.relative = positional == "relative" and attention.computes_map
        if attention.computes_map:
            self.q_proj = build_leaf(leaves["q_proj"])
            self.k_proj = build_leaf(leaves["k_proj"])
            self.scores = Product("scores", heads, self.head_dim)
        self.v_proj = build_leaf(leaves["v_proj"])
        self.out_proj = build_leaf(leaves["out_proj"])
        self.context = Product("context", heads, self.head_dim)
        if self.relative:
            self.pos_proj = build_leaf(leaves["pos_proj"])
            self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.head_dim))
            self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.head_dim))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, dk)

    def probabilities(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Attention probabilities ``(B, H, T, T)`` for input ``x`` ``(B, T, D)``."""
        b, t, _ = x.shape
        q = self._split(self.q_proj(x))
        k = self._split(self.k_proj(x))
        scale = self.head_dim**-0.5
        if self.relative:
            p = self.pos_proj(relative_sinusoids(t, self.width, x.device).to(x.dtype))
            p = p.view(2 * t - 1, self.heads, self.head_dim).transpose(0, 1)  # (H, 2T-1, dk)
            ac = self.scores(q + self.pos_bias_u[None, :, None, :], k.transpose(-1, -2))
            bd = torch.matmul(q + self.pos_bias_v[None, :, None, :], p.transpose(-1, -2))  # (B, H, T, 2T-1)
            i = torch.arange(t, device=x.device)
            index = (t - 1 - i[:, None] + i[None, :]).expand(b, self.heads, t, t)  # relative position i - j
            scores = (ac + torch.gather(bd, -1, index)) * scale
        else:
            scores = self.scores(q, k.transpose(-1, -2)) * scale
        allowed = pattern_mask(self.attention, t, x.device)[None, None] & ~padding_mask(lengths, t)[:, None, None, :]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        return F.softmax(scores, dim=-1)

    def forward(self, x: Tensor, lengths: Tensor, state: ForwardState, layer: int) -> tuple[Tensor, Tensor]:
        """Args: x ``(B, T, D)``, lengths ``(B,)``. Returns ``(B, T, D)`` and the map ``(B, H, T, T)``."""
        if self.attention.computes_map:
            probs = self.probabilities(x, lengths)
        else:
            probs = state.attention_maps[self.attention.source]
        state.attention_maps[layer] = probs
        v = self._split(self.v_proj(x))
        out = self.context(self.dropout(probs), v).transpose(1, 2).reshape(x.shape)
        return self.out_proj(out), probs
