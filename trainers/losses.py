"""Layer-to-layer distillation losses, with Recycle-and-Distill masking distillation (eq. 6).

Frame alignment rule (student frames ``Ts``, teacher frames ``Tt``, per utterance):

* same rate (valid lengths within 2 frames of each other, e.g. two 20 ms conv extractors): frames are
  paired by index and the pair count is ``min(Ts, Tt)``;
* different rates: the teacher sequence is resampled to the student's length, by average pooling
  (``adaptive_avg_pool1d``) when the teacher has more frames, by linear interpolation when it has fewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from planner.errors import FieldError
from trainers.ctc import BatchDecoding
from trainers.masking import resample_mask, same_rate
from trainers.recipe import LossConfig

__all__ = ["LossResult", "align_frames", "frame_distance", "layer_pairs", "distillation_loss"]


@dataclass
class LossResult:
    """``total`` (what is minimised) and its parts, as floats, for logging.

    Attributes:
        total: the scalar loss.
        masked, unmasked: the distillation's two terms of eq. 6 (layer-weighted sums; 0 without masking).
        per_layer: the distillation loss of each student layer.
        accuracy: the batch accuracy of a classification loss.
        task, distill: for a task loss combined with distillation, the two parts of
            ``total = task + distill_weight * distill`` (``distill`` before the weight).
        decoding: the greedy CTC paths of a ``ctc`` loss's batch (scored when logged).
    """

    total: Tensor
    masked: float = 0.0
    unmasked: float = 0.0
    per_layer: dict[int, float] = field(default_factory=dict)
    accuracy: float | None = None
    task: float | None = None
    distill: float | None = None
    decoding: BatchDecoding | None = None


def frame_distance(student: Tensor, teacher: Tensor, distance: str, cosine_weight: float = 1.0) -> Tensor:
    """Per-frame distance ``(B, T)`` of two ``(B, T, D)`` sequences.

    ``l2``: mean over ``D`` of the squared difference; ``l1_cosine`` (DistilHuBERT): mean absolute
    difference minus ``cosine_weight * log sigmoid(cos(student, teacher))``.
    """
    student, teacher = student.float(), teacher.float()
    if distance == "l2":
        return (student - teacher).pow(2).mean(-1)
    if distance == "l1_cosine":
        cos = F.cosine_similarity(student, teacher, dim=-1)
        return (student - teacher).abs().mean(-1) - cosine_weight * F.logsigmoid(cos)
    raise ValueError(f"unknown distance {distance!r}")


def align_frames(
    teacher: Tensor, teacher_lengths: Tensor, frames: int, student_lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """Aligns a teacher sequence ``(B, Tt, D)`` to ``frames`` student frames (see the module rule).

    Returns:
        ``(B, frames, D)`` teacher features and ``(B,)`` valid paired frames.
    """
    bsz, t_frames, dim = teacher.shape
    if same_rate(teacher_lengths, student_lengths):
        out = teacher[:, :frames]
        if out.shape[1] < frames:
            out = F.pad(out, (0, 0, 0, frames - out.shape[1]))
        return out, torch.minimum(teacher_lengths, student_lengths)
    out = teacher.new_zeros(bsz, frames, dim)
    for b in range(bsz):
        tl, sl = int(teacher_lengths[b]), int(student_lengths[b])
        if tl == 0 or sl == 0:
            continue
        seg = teacher[b, :tl].t()[None]
        seg = (
            F.adaptive_avg_pool1d(seg, sl)
            if tl >= sl
            else F.interpolate(seg, size=sl, mode="linear", align_corners=False)
        )
        out[b, :sl] = seg[0].t()
    return out, student_lengths.clone()


def layer_pairs(cfg: LossConfig, head_layers: Sequence[int], teacher_layers: int,
                student_layers: int | None = None) -> list[tuple[int, int, float]]:  # fmt: skip
    """``(student layer, teacher layer, weight)`` for each distilled layer.

    Mappings: ``cfg.layers`` pairs; default (``heads``) every student layer with a projection head to the
    same teacher index; ``proportional`` student layer ``s`` of ``student_layers`` (default: the last head
    layer + 1) to teacher layer ``round((s + 1) * teacher_layers / student_layers) - 1`` (halves round up),
    so the last student layer learns the last teacher layer. Default weights 0.1 per layer and 1.0 for the
    last (Recycle-and-Distill).

    Raises:
        FieldError: (``loss.layers``) a mapped student layer has no projection head, or a teacher layer does
            not exist; (``loss.weights``) not one weight per mapped layer.
    """
    heads = sorted(head_layers)
    if cfg.layers == "proportional":
        n = student_layers if student_layers is not None else heads[-1] + 1
        pairs = [(s, max(0, ((s + 1) * 2 * teacher_layers + n) // (2 * n) - 1)) for s in heads]
    else:
        pairs = list(cfg.layers) if cfg.layers is not None else [(i, i) for i in heads]
    for s, t in pairs:
        if s not in head_layers:
            raise FieldError("loss.layers", f"student layer {s} has no projection head "
                                            f"(the architecture's heads cover layers {heads})")  # fmt: skip
        if t >= teacher_layers:
            raise FieldError(
                "loss.layers", f"teacher layer {t} does not exist (the teacher has layers 0-{teacher_layers - 1})"
            )
    if cfg.weights is not None and len(cfg.weights) != len(pairs):
        raise FieldError("loss.weights", f"{len(cfg.weights)} weights for {len(pairs)} distilled layers "
                                         f"(student layers {[s for s, _ in pairs]}); give one per layer, or none")  # fmt: skip
    weights = list(cfg.weights) if cfg.weights is not None else [0.1] * (len(pairs) - 1) + [1.0]
    return [(s, t, w) for (s, t), w in zip(pairs, weights)]


def distillation_loss(
    projections: dict[int, Tensor],
    student_lengths: Sequence[Tensor],
    teacher_clean: Sequence[Tensor],
    teacher_lengths: Tensor,
    pairs: Sequence[tuple[int, int, float]],
    cfg: LossConfig,
    *,
    teacher_masked: Sequence[Tensor] | None = None,
    masked_teacher_lengths: Tensor | None = None,
    mask: Tensor | None = None,
    mask_lengths: Tensor | None = None,
) -> LossResult:
    """The layer-to-layer loss, plain or with masking distillation.

    Plain: ``sum_l alpha_l * mean over valid frames of d(student_l, teacher_l(x))``.

    Masking (eq. 6), with ``M`` the masked frames of the batch at layer ``l``'s frame rate and ``n`` the
    valid frames, normalised as the paper writes it (``masking.normalize: paper``, the default)::

        sum_l alpha_l / |M|     * sum_{i in M}     d(f^s_i(mu(x)), f^t_i(x))
      + sum_l alpha_l / (n-|M|) * sum_{i not in M} d(f^s_i(mu(x)), f^t_i(mu(x)))

    or as the authors' code computes it (``normalize: code``, ``sungnyun/ARMHuBERT: train.py``,
    ``calculate_loss``: both sums divided by ``B * T``), both terms over all ``n`` valid frames::

        sum_l alpha_l / n * (sum_{i in M} d(f^s_i(mu(x)), f^t_i(x)) + sum_{i not in M} d(f^s_i(mu(x)), f^t_i(mu(x))))

    (the code's ``B * T`` and its unmasked sum also count padded frames; padding is never distilled here).
    ``masked`` and ``unmasked`` in the result are the two terms so normalised.

    Args:
        projections: student projection-head outputs ``(B, Ts, D)`` by student layer.
        student_lengths: valid frames of each student layer (``EncoderOutput.hidden_lengths``).
        teacher_clean: the teacher's per-layer outputs on the clean input ``x``.
        teacher_lengths: ``(B,)`` valid teacher frames.
        pairs: from :func:`layer_pairs`.
        cfg: the recipe's loss section.
        teacher_masked: the teacher's per-layer outputs on the masked input ``mu(x)`` (masking only).
        mask: ``(B, T0)`` the mask the student saw, at its mask-embedding frame rate.
        mask_lengths: ``(B,)`` valid frames of ``mask``.
    """
    total = torch.zeros((), device=teacher_lengths.device)
    masked_sum = unmasked_sum = 0.0
    by_all_frames = cfg.masking is not None and cfg.masking.normalize == "code"
    per_layer: dict[int, float] = {}
    for s, t, w in pairs:
        student = projections[s]
        s_len = student_lengths[s]
        frames = student.shape[1]
        clean, valid_len = align_frames(teacher_clean[t], teacher_lengths, frames, s_len)
        valid = torch.arange(frames, device=valid_len.device)[None] < valid_len[:, None]
        d_clean = frame_distance(student, clean, cfg.distance, cfg.cosine_weight)
        if mask is None:
            layer = (d_clean * valid).sum() / valid.sum().clamp(min=1)
        else:
            if teacher_masked is None or mask_lengths is None or masked_teacher_lengths is None:
                raise ValueError("masking distillation needs teacher_masked, masked_teacher_lengths and mask_lengths")
            noisy, _ = align_frames(teacher_masked[t], masked_teacher_lengths, frames, s_len)
            d_masked = frame_distance(student, noisy, cfg.distance, cfg.cosine_weight)
            m = resample_mask(mask, mask_lengths, s_len, frames) & valid
            u = ~m & valid
            if by_all_frames:
                n = valid.sum().clamp(min=1)
                term_m, term_u = (d_clean * m).sum() / n, (d_masked * u).sum() / n
            else:
                term_m = (d_clean * m).sum() / m.sum().clamp(min=1)
                term_u = (d_masked * u).sum() / u.sum().clamp(min=1)
            layer = term_m + term_u
            masked_sum += w * float(term_m.detach())
            unmasked_sum += w * float(term_u.detach())
        per_layer[s] = float(layer.detach())
        total = total + w * layer
    return LossResult(total, masked_sum, unmasked_sum, per_layer)
