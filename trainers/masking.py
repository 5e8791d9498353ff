"""Span masks (HuBERT / fairseq ``compute_mask_indices``) and the frame bookkeeping that masking distillation needs.

Two placements, both fairseq's (``fairseq/data/data_utils.py: compute_mask_indices``, the function HuBERT and
ARMHuBERT's teacher call, ``sungnyun/ARMHuBERT: teacher_utils/hubert.py: apply_mask``):

* ``overlap=True`` (HuBERT's default): span starts are drawn without replacement and spans may overlap, so
  at ``prob`` 0.8 and span 10 about 0.57 of the frames end up masked;
* ``overlap=False`` (``no_mask_overlap``, ARMHuBERT's configs): spans are placed one by one, longest first,
  each in a free interval chosen with probability proportional to its length, keeping ``min_space``
  unmasked frames between spans; a span that fits nowhere is dropped. At 0.8, span 10 and ``min_space`` 1
  about 0.69 of the frames are masked (0.77 with ARMHuBERT's ``uniform`` span lengths).
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from torch import Tensor

from planner.ir.graph import EncoderGraph

__all__ = ["compute_span_mask", "mask_frame_lengths", "resample_mask", "same_rate"]

_SAME_RATE_SLACK = 2  # frames two sequences may differ by and still count as one frame rate (conv edge effects)


def _span_lengths(count: int, span: int, selection: str, rng: random.Random) -> list[int]:
    """fairseq's ``mask_selection``: ``static`` spans of ``span`` frames, ``uniform`` spans of 0 to ``2 span``."""
    if selection == "static":
        return [span] * count
    lengths = [rng.randint(0, 2 * span) for _ in range(count)]
    if count and sum(lengths) == 0:  # fairseq keeps one span when every draw is empty
        lengths[0] = span
    return lengths


def _place_without_overlap(n: int, lengths: list[int], min_space: int, rng: random.Random) -> list[int]:
    """fairseq's ``no_overlap`` placement in ``n`` frames: the masked frame indices."""
    masked: list[int] = []
    parts = [(0, n)]  # free intervals [s, e) a span may start in
    keep = min(lengths)
    for length in sorted(lengths, reverse=True):
        # an interval can take the span if it leaves min_space after it; a start must exist (e - s > length),
        # which fairseq assumes (with min_space 0 its randint would fail on an interval of exactly length)
        sizes = [e - s if e - s >= length + min_space and e - s > length else 0 for s, e in parts]
        if not any(sizes):
            break
        s, e = parts.pop(rng.choices(range(len(parts)), weights=sizes)[0])
        start = rng.randrange(s, e - length)  # fairseq: randint(s, e - length), the end excluded
        masked.extend(range(start, start + length))
        if start - s - min_space >= keep:
            parts.append((s, start - min_space + 1))
        if e - start - length - min_space > keep:
            parts.append((start + length + min_space, e))
    return masked


def compute_span_mask(
    lengths: Tensor,
    frames: int,
    prob: float,
    span: int = 10,
    min_masks: int = 2,
    generator: torch.Generator | None = None,
    *,
    overlap: bool = True,
    min_space: int = 0,
    selection: Literal["static", "uniform"] = "static",
    same_count: bool = False,
) -> Tensor:
    """Draws HuBERT / fairseq ``compute_mask_indices`` span masks.

    Each utterance of ``n`` valid frames gets ``max(min_masks, int(prob * n / span + u))`` spans
    (``u ~ U[0, 1)``). With ``overlap`` the span starts are distinct and drawn uniformly from
    ``[0, n - span]`` (overlapping spans merge, so fewer than ``prob`` of the frames are masked); without it
    spans are placed in the free intervals with ``min_space`` frames between them (see the module
    docstring). ``selection`` ``uniform`` draws each span's length uniformly from ``0..2 span`` (fairseq's
    ``uniform`` with ``mask_other`` 0, as ARMHuBERT's configs) instead of ``span``. ``same_count``
    (fairseq's ``require_same_masks``) then keeps, in every utterance, a random subset of its masked frames
    as large as the smallest count among the utterances that were masked. Utterances of at most ``span``
    frames are left unmasked; padding is never masked.

    The static, overlapping draw consumes ``generator`` exactly as before these options existed (a resumed
    run draws the masks it drew); the other draws seed a Python ``random.Random`` from it.

    Args:
        lengths: ``(B,)`` valid frames.
        frames: padded length ``T``.
        prob: HuBERT's ``mask_prob``.
        span: HuBERT's ``mask_length`` (the mean length for ``uniform``).
        min_masks: spans per utterance at least.
        generator: the random source (seed it per step to make masks reproducible on resume).
        overlap: False for fairseq's ``no_mask_overlap``.
        min_space: unmasked frames kept between spans without overlap (``mask_min_space``).
        selection: ``static`` or ``uniform`` span lengths (``mask_selection``).
        same_count: the same number of masked frames in every masked utterance (``require_same_masks``).

    Returns:
        ``(B, T)`` bool on the CPU, True where masked.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> m = compute_span_mask(torch.tensor([100]), 100, prob=0.8, span=10, generator=g, overlap=False, min_space=1)
        >>> m.shape, bool(m.any())
        (torch.Size([1, 100]), True)
    """
    mask = torch.zeros(len(lengths), frames, dtype=torch.bool)
    if overlap and selection == "static" and not same_count:
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
    rng = random.Random(int(torch.randint(0, 2**62, (), generator=generator)))
    drawn: dict[int, list[int]] = {}
    for b, n in enumerate(lengths.tolist()):
        n = min(int(n), frames)
        if n <= span:
            continue
        count = max(min_masks, int(prob * n / span + rng.random()))
        sizes = _span_lengths(count, span, selection, rng)
        if overlap:
            shortest = min(sizes)
            count = min(count, n - shortest + 1)
            starts = rng.sample(range(n - shortest + 1), count)
            idx = {s + k for s, size in zip(starts, sizes) for k in range(size) if s + k < n}
        else:
            idx = set(_place_without_overlap(n, sizes, min_space, rng))
        drawn[b] = sorted(idx)
    target = min((len(v) for v in drawn.values()), default=0) if same_count else None
    for b, idx in drawn.items():
        if target is not None and len(idx) > target:
            idx = rng.sample(idx, target)
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
