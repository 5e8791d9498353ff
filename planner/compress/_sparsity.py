"""N:M magnitude masks (USM-Lite eq. 3-4) and the schedule that decides when they are recomputed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from planner.compress._quant import fake_compress, mask_only
from planner.errors import FieldError
from planner.ir.compression import Sparsity

__all__ = ["SparsitySchedule", "MaskSchedule", "NMSparsifier", "nm_mask"]


@dataclass(frozen=True)
class SparsitySchedule:
    """When N:M masks are computed.

    Attributes:
        kind: ``one_shot``: the mask is computed once, at the first forward pass (after any checkpoint has
            been loaded), then frozen. ``few_shot``: recomputed at every training forward pass until the
            trainer has called :meth:`MaskSchedule.step` ``steps`` times (USM-Lite's ``T_p``), then frozen.
        steps: ``T_p`` for ``few_shot``.
        sr_ste: SR-STE decay ``lambda_w`` (Zhou et al. 2021): pruned weights get the dense gradient plus
            ``lambda_w * W`` so they can come back at the next mask update; None (USM-Lite's choice) means
            pruned weights get no gradient.

    Example:
        >>> SparsitySchedule("few_shot", steps=1000)
        SparsitySchedule(kind='few_shot', steps=1000, sr_ste=None)
    """

    kind: Literal["one_shot", "few_shot"] = "one_shot"
    steps: int = 0
    sr_ste: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("one_shot", "few_shot"):
            raise FieldError("kind", f"{self.kind!r} is not a schedule (allowed: one_shot, few_shot)")
        if self.kind == "few_shot" and self.steps < 1:
            raise FieldError("steps", f"few_shot needs steps >= 1 (got {self.steps})")
        if self.kind == "one_shot" and self.steps:
            raise FieldError("steps", "only allowed with kind: few_shot")
        if self.sr_ste is not None and self.sr_ste < 0:
            raise FieldError("sr_ste", f"{self.sr_ste} must be >= 0")


class MaskSchedule(nn.Module):
    """The model-wide mask clock, registered as ``model.mask_schedule``; the trainer calls :meth:`step`.

    Its ``step_count`` is a buffer, so it is saved with the checkpoint and a resumed few-shot run stops
    updating masks at the same step.

    Example:
        >>> sched = MaskSchedule(SparsitySchedule("few_shot", steps=2))
        >>> sched.updating(), sched.step(), sched.step(), sched.updating()
        (True, None, None, False)
    """

    def __init__(self, config: SparsitySchedule | None = None) -> None:
        super().__init__()
        self.config = config or SparsitySchedule()
        self.register_buffer("step_count", torch.zeros((), dtype=torch.int64))

    def step(self) -> None:
        """Advances the clock by one optimizer step."""
        self.step_count += 1

    def updating(self) -> bool:
        """Whether masks that already exist are recomputed at the next training forward pass."""
        return self.config.kind == "few_shot" and int(self.step_count) < self.config.steps


def nm_mask(w: Tensor, n: int, m: int) -> Tensor:
    """Keeps the ``n`` largest-magnitude weights of every ``m`` consecutive ones along the last dim.

    Exactly ``n`` per group (ties broken by position), i.e. eq. 3 with the threshold at the n-th largest.

    Args:
        w: ``(out, fan_in)`` with ``fan_in % m == 0``.

    Returns:
        bool mask of the shape of ``w``.
    """
    groups = w.detach().abs().reshape(-1, m)
    idx = groups.topk(n, dim=1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, idx, True)
    return mask.reshape(w.shape)


class NMSparsifier(nn.Module):
    """Holds the N:M mask of one weight ``(out, fan_in)`` and applies it (eq. 4).

    The mask is computed from the weight magnitudes at the first forward pass (``ready`` false), and again
    at training forward passes while the shared :class:`MaskSchedule` says so. The ``mask`` buffer is bool
    (what checkpoints and the packed export store); :meth:`multiplier` also keeps it as 0/1 in the weight's
    dtype, rebuilt only when the buffer changes (its version counter moves on every in-place write: a mask
    update, ``load_state_dict``, the packed loader), because multiplying a float tensor by a bool one
    converts the bools first, which on the CPU costs more than the multiplication.
    """

    def __init__(self, config: Sparsity, out: int, fan_in: int, schedule: MaskSchedule) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mask", torch.ones(out, fan_in, dtype=torch.bool))
        self.register_buffer("ready", torch.tensor(False))
        object.__setattr__(self, "_schedule", schedule)  # shared, not a child: saved once, at the model root
        self._keep: tuple[Tensor, int, Tensor] | None = None  # (mask buffer, its version, 0/1 copy)

    def multiplier(self, w: Tensor) -> Tensor:
        """The mask as 0/1 in ``w``'s dtype and device; recomputes the mask from ``w`` first if the schedule says so."""
        if not bool(self.ready) or (self.training and self._schedule.updating()):
            with torch.no_grad():
                self.mask.copy_(nm_mask(w, self.config.n, self.config.m))
                self.ready.fill_(True)
        cached = self._keep
        if (cached is None or cached[0] is not self.mask or cached[1] != self.mask._version
                or cached[2].dtype != w.dtype or cached[2].device != w.device):  # fmt: skip
            # a new tensor, never written in place: autograd may still hold the previous one for a backward
            self._keep = cached = (self.mask, self.mask._version, self.mask.to(device=w.device, dtype=w.dtype))
        return cached[2]

    def sr_ste(self) -> float | None:
        """The SR-STE decay in force: the schedule's ``sr_ste`` in training mode, else None."""
        return self._schedule.config.sr_ste if self.training else None

    def forward(self, w: Tensor) -> Tensor:
        """Returns ``w * mask``; recomputes the mask first if the schedule says so."""
        return fake_compress(w, mask_only, self.multiplier(w), self.sr_ste())
