"""HuBERT-style span masks and the frame bookkeeping that masking distillation needs."""

from __future__ import annotations

import torch
from torch import Tensor

from planner.ir.graph import EncoderGraph

__all__ = ["compute_span_mask", "mask_frame_lengths", "resample_mask", "same_rate"]

_SAME_RATE_SLACK = 2  # frames two sequences may differ by and still count as one frame rate (conv edge effects)


def compute_span_mask(lengths: Tensor, frames: int, prob: float, span: int = 10, min_masks: int = 2,
                      generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Draws HuBERT / fairseq ``compute_mask_indices`` span masks.

    Each utterance of ``n`` valid frames gets ``max(min_masks, int(prob * n / span + u))`` distinct span
    starts (``u ~ U[0, 1)``) drawn uniformly from ``[0, n - span]``; each start masks ``span`` frames, so
    spans can overlap and about ``prob`` of the frames are masked before overlaps. Utterances of at most
    ``span`` frames are left unmasked. Padding is never masked.

    Args:
        lengths: ``(B,)`` valid frames.
        frames: padded length ``T``.
        generator: the random source (seed it per step to make masks reproducible on resume).

    Returns:
        ``(B, T)`` bool on the CPU, True where masked.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> m = compute_span_mask(torch.tensor([100]), 100, prob=0.8, span=10, generator=g)
        >>> m.shape, bool(m.any())
        (torch.Size([1, 100]), True)
    """
    mask = torch.zeros(len(lengths), frames, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        n = min(int(n), frames)
        if n <= span:
            continue
        u = torch.rand((), generator=generator).item()
        count = min(max(min_masks, int(prob * n / span + u)), n - span + 1)
        starts = torch.randperm(n - span + 1, generator=generator)[:count]
        idx = (starts[:, None] + torch.arange(span)[None]).flatten()
        mask[b, idx] = True
    return mask


def mask_frame_lengths(graph: EncoderGraph, samples: Tensor) -> tuple[Tensor, int]:
    """Valid frames per utterance, and the padded count, where ``graph``'s mask embedding acts.

    Args:
        graph: an architecture with a ``mask_embedding`` frontend node.
        samples: ``(B,)`` valid input samples.

    Raises:
        ValueError: the graph has no mask embedding.
    """
    names = [n.name for n in graph.nodes("frontend") if n.kind == "mask_embedding"]
    if not names:
        raise ValueError(f"{graph.name} has no mask_embedding node")
    cache: dict[int, int] = {}
    out = []
    for s in samples.tolist():
        if s not in cache:
            cache[s] = graph.lengths(int(s))[names[0]]
        out.append(cache[s])
    padded = graph.lengths(int(samples.max()))[names[0]]
    return torch.tensor(out, dtype=torch.long, device=samples.device), padded


def same_rate(a: Tensor, b: Tensor) -> bool:
    """Whether two ``(B,)`` length vectors are at one frame rate (equal within a couple of frames)."""
    return bool(((a - b).abs() <= _SAME_RATE_SLACK).all())


def resample_mask(mask: Tensor, from_lengths: Tensor, to_lengths: Tensor, frames: int) -> Tensor:
    """Carries a ``(B, T_from)`` frame mask to another frame sequence of ``frames`` padded frames.

    At the same rate (see :func:`same_rate`) frame ``j`` keeps its index (truncated or padded with False);
    otherwise frame ``j`` of utterance ``b`` takes the mask of frame ``floor(j * from_len / to_len)``
    (nearest-earlier frame). Frames past ``to_lengths`` are False.
    """
    bsz, t_from = mask.shape
    j = torch.arange(frames, device=mask.device)[None].expand(bsz, frames)
    if same_rate(from_lengths, to_lengths):
        idx = j
    else:
        ratio = from_lengths.double() / to_lengths.clamp(min=1).double()
        idx = torch.floor(j.double() * ratio[:, None]).long()
    inside = (idx < t_from) & (idx < from_lengths[:, None]) & (j < to_lengths[:, None])
    out = torch.gather(mask, 1, idx.clamp(max=t_from - 1))
    return out & inside
