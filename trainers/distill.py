"""One distillation step's forward: student and teacher runs, masks, and the loss."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from planner.nn.model import EncoderOutput
from trainers.data import Batch
from trainers.losses import LossResult, distillation_loss, layer_pairs
from trainers.masking import compute_span_mask, mask_frame_lengths, resample_mask
from trainers.recipe import Recipe
from trainers.teacher import Teacher

__all__ = ["Distiller"]


class Distiller:
    """Computes the recipe's loss for a batch (student in train mode, teacher frozen).

    Masks are drawn on the CPU from a generator seeded with ``(recipe.seed, step * world_size + rank)``
    (:attr:`shard` is ``(rank, world_size)``; ``(0, 1)`` in one process, where that is the step), then moved
    to the batch's device: a resumed run draws the masks an uninterrupted run would, each process of a
    data-parallel job draws its own (the number of its batch in the job's sequence), and a GPU draws the
    CPU's. Inside :meth:`held_out` the masks are those of held-out batch ``index`` instead: a seed of their
    own (the same at every evaluation and in every process) at the run's final mask probability, so that
    held-out losses of different steps are comparable.

    Raises:
        ConfigError: the recipe and the architectures do not fit (no projection heads, masking without a
            mask embedding, a mapped layer that does not exist).
    """

    def __init__(self, graph: EncoderGraph, teacher: Teacher, recipe: Recipe) -> None:
        self.graph, self.teacher, self.recipe = graph, teacher, recipe
        # a self teacher (the float twin) has the student's widths: hidden states pair without projections
        self.same_input = bool(getattr(teacher, "same_input", False))
        heads = [n for n in graph.nodes("heads") if n.kind == "projection_heads"]
        if self.same_input:
            head_layers = list(range(len(graph.nodes("layers"))))
        elif not heads:
            raise ConfigError(
                [FieldError("heads", "layer-to-layer distillation needs a projection_heads head")], graph.name
            )
        else:
            head_layers = heads[0].config.layer_indices(len(graph.nodes("layers")))
        try:
            self.pairs = layer_pairs(recipe.loss, head_layers, teacher.num_layers, len(graph.nodes("layers")))
        except FieldError as err:
            raise ConfigError([err], recipe.source) from None
        self.masking = recipe.loss.masking
        if self.masking is not None:
            if not any(n.kind == "mask_embedding" for n in graph.nodes("frontend")):
                raise ConfigError(
                    [FieldError("loss.masking", f"the student {graph.name} has no mask_embedding frontend node")],
                    recipe.source,
                )
            if not teacher.supports_mask:
                raise ConfigError(
                    [FieldError("loss.masking", "the teacher architecture has no mask_embedding frontend node")],
                    recipe.source,
                )
        self.teacher_layers = max(t for _, t, _ in self.pairs) + 1
        self.shard = (0, 1)
        self._held_out: int | None = None

    @contextlib.contextmanager
    def held_out(self, index: int) -> Iterator[None]:
        """Within the block, the loss draws the fixed masks of held-out batch ``index`` (see the class)."""
        self._held_out = index
        try:
            yield
        finally:
            self._held_out = None

    def place(self, device: torch.device, shard: tuple[int, int]) -> None:
        """Moves the frozen teacher to ``device``; :attr:`shard` becomes ``(rank, world_size)`` (the run loop
        calls it once the engine is built: :class:`trainers.run.JobLoss`)."""
        self.teacher.to(device)
        self.shard = shard

    def _features(self, out) -> dict[int, Tensor]:
        return dict(enumerate(out.hidden_states)) if self.same_input else out.projections

    def draw_mask(self, samples: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """The student's ``(B, T)`` mask and its ``(B,)`` valid frames for ``step``, on ``samples``' device."""
        assert self.masking is not None
        lengths, frames = mask_frame_lengths(self.graph, samples.cpu())
        rank, world_size = self.shard
        cfg = self.masking
        steps = self.recipe.steps
        if self._held_out is not None:  # seeds no training step uses (those are below steps * world_size)
            gen = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 - 1 - self._held_out)
            prob = cfg.prob_at(steps - 1, steps)
        else:
            gen = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + step * world_size + rank)
            prob = cfg.prob_at(step, steps)
        mask = compute_span_mask(lengths, frames, prob, cfg.span, cfg.min_masks, gen,
                                 overlap=cfg.overlap, min_space=cfg.min_space, selection=cfg.selection,
                                 same_count=cfg.same_count)  # fmt: skip
        return mask.to(samples.device), lengths.to(samples.device)

    def __call__(
        self, student: nn.Module, batch: Batch, step: int, *, clean_output: EncoderOutput | None = None
    ) -> LossResult:
        """The distillation loss of ``batch`` at 0-based ``step``.

        Args:
            student: the student (or a :class:`~trainers.task.TaskModel` around it).
            batch: the batch.
            step: the step (seeds the masks).
            clean_output: the student's output on ``batch``'s unmasked input when the caller already ran
                it (a task loss combined with distillation); used only without masking, where the
                student sees the clean input anyway.
        """
        x, xl = batch.model_input
        dtype = next(student.parameters()).dtype
        x = x.to(dtype)
        wav, wl = batch.waveforms, batch.lengths
        tx, tl = (x, xl) if self.same_input else (wav, wl)
        clean = self.teacher(tx, tl, num_layers=self.teacher_layers)
        if self.masking is None:
            out = clean_output if clean_output is not None else student(x, xl)
            return distillation_loss(self._features(out), out.hidden_lengths, clean.hidden, clean.lengths, self.pairs,
                                     self.recipe.loss)  # fmt: skip
        mask, mask_len = self.draw_mask(wl, step)
        out = student(x, xl, mask=mask)
        t_len, t_frames = self.teacher.mask_lengths(wl)
        t_mask = resample_mask(mask, mask_len, t_len, t_frames)
        noisy = self.teacher(tx, tl, mask=t_mask, num_layers=self.teacher_layers)
        return distillation_loss(self._features(out), out.hidden_lengths, clean.hidden, clean.lengths, self.pairs,
                                 self.recipe.loss, teacher_masked=noisy.hidden, masked_teacher_lengths=noisy.lengths,
                                 mask=mask, mask_lengths=mask_len)  # fmt: skip
