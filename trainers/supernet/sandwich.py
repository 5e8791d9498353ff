"""The supernet's training loss: the sandwich rule over candidates, each distilled as ``planner train`` does.

Every step trains the largest candidate, the smallest and ``random`` candidates drawn for that step
(BigNAS's sandwich rule; the largest and smallest bound the space, the random ones cover it; with a
``supernet.partition`` the largest and smallest of each part of the space), each with the
recipe's own distillation loss from the recipe's teacher (layer-to-layer, masking distillation with the
recipe's masks: :class:`~trainers.distill.Distiller`); the step's loss is their mean. The candidates of
step ``s`` are drawn from a generator seeded with ``(recipe.seed, s)``, so a resumed run draws what an
uninterrupted one would. The teacher runs once per batch and mask, not once per candidate: candidates with
the same frame rate share its outputs within the step.

The held-out loss that ``planner train``'s logging and ``best/`` use is the largest candidate's.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from planner.ir.graph import EncoderGraph
from trainers.data import Batch
from trainers.distill import Distiller
from trainers.losses import LossResult
from trainers.recipe import Recipe
from trainers.supernet.bank import Supernet, arch_key
from trainers.teacher import Teacher

__all__ = ["CandidateSampler", "SandwichLoss", "SubnetView", "step_candidates"]


class CandidateSampler(Protocol):
    """The candidates of a space, as the supernet trainer needs them (``planner.search.SpaceSampler``)."""

    def largest(self) -> EncoderGraph: ...

    def smallest(self) -> EncoderGraph: ...

    def extremes(self) -> list[tuple[str, EncoderGraph]]: ...

    def sample(self, rng: random.Random) -> EncoderGraph: ...


def step_candidates(
    sampler: CandidateSampler, seed: int, step: int, random_count: int
) -> list[tuple[str, EncoderGraph]]:
    """``(role, graph)`` of the candidates trained at ``step``: the sampler's extremes (``largest``,
    ``smallest``, or each part's ``largest[v]``, ``smallest[v]`` with a partition), then ``random0``..."""
    rng = random.Random(seed * 1_000_003 + step)
    out = list(sampler.extremes())
    out += [(f"random{i}", sampler.sample(rng)) for i in range(random_count)]
    return out


class SubnetView(nn.Module):
    """One candidate of a supernet as a module with the :class:`~planner.nn.model.Encoder` call signature
    (what :class:`~trainers.distill.Distiller` runs); it holds no parameters of its own."""

    def __init__(self, supernet: Supernet, graph: EncoderGraph) -> None:
        super().__init__()
        object.__setattr__(self, "_supernet", supernet)  # not a submodule: the view owns nothing
        self.graph = graph

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:  # the dtype the Distiller casts to
        return self._supernet.parameters(recurse)

    def forward(self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None) -> Any:
        return self._supernet(self.graph, x, lengths, mask)


class _SharedTeacher:
    """The teacher, its outputs kept for the current step: candidates with equal inputs and masks share one
    teacher pass (the clean pass always; the masked pass when their masks agree). With ``keep`` the outputs
    are kept for good (the scorer's fixed held-out batches, whose tensors live as long as it does)."""

    def __init__(self, teacher: Teacher, keep: bool = False) -> None:
        self.inner = teacher
        self.keep = keep
        self._memo: dict[tuple[Any, ...], Any] = {}

    def clear(self) -> None:
        if not self.keep:
            self._memo.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, x: Tensor, lengths: Tensor, mask: Tensor | None = None, num_layers: int | None = None) -> Any:
        key = (x.data_ptr(), tuple(x.shape), lengths.data_ptr(), num_layers,
               None if mask is None else (tuple(mask.shape), mask.cpu().numpy().tobytes()))  # fmt: skip
        if key not in self._memo:
            self._memo[key] = self.inner(x, lengths, mask=mask, num_layers=num_layers)
        return self._memo[key]


@dataclass
class SandwichLoss:
    """The loss object of a supernet run (the protocol of ``planner train``'s loss objects).

    Args:
        supernet: the shared weights.
        sampler: the space's candidates.
        teacher: the recipe's loaded teacher.
        recipe: the recipe (its loss, masks and seed).
        random_count: random candidates per step besides the largest and the smallest.
    """

    supernet: Supernet
    sampler: CandidateSampler
    teacher: Any
    recipe: Recipe
    random_count: int = 2

    def __post_init__(self) -> None:
        self.teacher = _SharedTeacher(self.teacher)
        self.shard = (0, 1)
        self._distillers: dict[str, Distiller] = {}
        self._held: int | None = None
        for graph in (self.sampler.largest(), self.sampler.smallest()):  # a recipe that does not fit the space
            self.distiller_for(graph)  # (no projection head, no mask embedding) fails here, before the claim

    def place(self, device: torch.device, shard: tuple[int, int]) -> None:
        """The run's hook once the engine is built: the teacher onto ``device``; this process's mask shard."""
        self.teacher.inner.to(device)
        self.shard = shard

    def distiller_for(self, graph: EncoderGraph) -> Distiller:
        """The recipe's :class:`~trainers.distill.Distiller` of one candidate (its layer pairs and masks)."""
        key = arch_key(graph)
        d = self._distillers.get(key)
        if d is None:
            d = self._distillers[key] = Distiller(graph, self.teacher, self.recipe)  # type: ignore[arg-type]
        d.shard = self.shard
        return d

    @contextlib.contextmanager
    def held_out(self, index: int) -> Iterator[None]:
        """Within the block, losses are held-out losses of the largest candidate (fixed masks of batch
        ``index``)."""
        self._held = index
        try:
            yield
        finally:
            self._held = None

    def _one(self, module: nn.Module, graph: EncoderGraph, batch: Batch, step: int) -> LossResult:
        supernet = module if isinstance(module, Supernet) else module.module  # a wrapper's module
        d = self.distiller_for(graph)
        view = SubnetView(supernet, graph)
        if self._held is None:
            return d(view, batch, step)
        with d.held_out(self._held):
            return d(view, batch, step)

    def __call__(self, module: nn.Module, batch: Batch, step: int) -> LossResult:
        """The mean distillation loss of the step's candidates (the largest only inside :meth:`held_out`)."""
        self.teacher.clear()
        try:
            if self._held is not None:
                res = self._one(module, self.sampler.largest(), batch, step)
                return LossResult(
                    res.total, masked=res.masked, unmasked=res.unmasked, per_layer={"largest": float(res.total)}
                )
            parts: dict[str, float] = {}
            total: Tensor | None = None
            masked = unmasked = 0.0
            cands = step_candidates(self.sampler, self.recipe.seed, step, self.random_count)
            for role, graph in cands:
                res = self._one(module, graph, batch, step)
                parts[role] = float(res.total.detach())
                masked += res.masked / len(cands)
                unmasked += res.unmasked / len(cands)
                total = res.total / len(cands) if total is None else total + res.total / len(cands)
            assert total is not None
            return LossResult(total, masked=masked, unmasked=unmasked, per_layer=parts)
        finally:
            self.teacher.clear()
