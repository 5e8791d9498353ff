"""What node modules share during one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ForwardState", "padding_mask", "zero_padding"]


@dataclass
class ForwardState:
    """Per-call state passed through the node modules.

    Attributes:
        mask: ``(B, T)`` boolean frames to replace by the mask embedding, or None.
        attention_maps: attention probabilities ``(B, H, T, T)`` of each attention layer, by layer index;
            reuse layers read their source's entry.
        layer_inputs: ``(x, lengths)`` entering each layer, by layer index (time recovery's skip).
        reduction_strides: stride of each time reduction run so far, by layer index (time recovery's upsampling).
    """

    mask: Tensor | None = None
    attention_maps: dict[int, Tensor] = field(default_factory=dict)
    layer_inputs: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    reduction_strides: dict[int, int] = field(default_factory=dict)


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B, T)`` True where a frame is padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """Zeroes padded frames of ``x`` ``(B, T, D)``, so that a convolution sees what a lone utterance sees."""
    return x.masked_fill(padding_mask(lengths, x.shape[1])[..., None], 0.0)
