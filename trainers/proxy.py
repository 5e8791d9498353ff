"""A distillation proxy for the search: a short run's held-out loss, reported as it goes.

``distill_proxy`` trains a fresh student in memory (no run folder, no checkpoints) with the recipe's
teacher, loss and optimizer, and every ``eval_every`` steps yields the mean loss over the held-out
manifest (``data.valid``; the masks are drawn from fixed seeds so evaluations are comparable). The search
can hand each value to an Optuna pruner::

    for step, value in distill_proxy(graph, recipe, steps=200):
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from planner.compress import materialize
from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from trainers.data import Batch, BatchStream
from trainers.distill import Distiller
from trainers.engine import TorchEngine
from trainers.recipe import Recipe
from trainers.teacher import Teacher, load_teacher

__all__ = ["distill_proxy"]

_EVAL_STEP = 1 << 30  # mask-seed offset for held-out batches, far from any training step


def distill_proxy(graph: EncoderGraph, recipe: Recipe, steps: int, *, eval_every: int | None = None,
                  eval_batches: int = 4, teacher: Teacher | None = None,
                  losses: list[float] | None = None) -> Iterator[tuple[int, float]]:  # fmt: skip
    """Yields ``(step, held-out loss)`` while distilling ``graph`` for ``steps`` steps.

    Args:
        graph: the student.
        recipe: the recipe (its ``steps`` is replaced by ``steps``, so the schedule fits the short run).
        steps: training steps.
        eval_every: steps between evaluations (default: ``max(1, steps // 5)``); the last step is always one.
        eval_batches: held-out batches per evaluation.
        teacher: a loaded teacher to share between trials (default: loaded from the recipe).
        losses: when given, each step's training loss is appended to it as it is taken (the training-speed
            estimate, TSE, is their sum).

    Raises:
        ConfigError: the recipe has no ``data.valid`` manifest.
    """
    if recipe.data.valid is None:
        raise ConfigError([FieldError("data.valid", "the distillation proxy needs a held-out manifest")], recipe.source)
    short = dataclasses.replace(recipe, steps=steps)
    object.__setattr__(short, "base_dir", recipe.base_dir)
    object.__setattr__(short, "source", recipe.source)  # errors found later name the recipe file
    torch.manual_seed(recipe.seed)
    teacher = teacher if teacher is not None else load_teacher(short, graph)
    student = materialize(graph)
    distiller = Distiller(graph, teacher, short)
    data = recipe.data

    def stream(manifests: list[str]) -> BatchStream:
        return BatchStream(manifests, sample_rate=data.sample_rate, batch_seconds=data.batch_seconds,
                           max_seconds=data.max_seconds, min_seconds=data.min_seconds, seed=recipe.seed,
                           spec=graph.spec.input)  # fmt: skip

    train_stream = stream([short.resolve(m) for m in data.train])
    held_out = stream([short.resolve(data.valid)])
    n_eval = min(eval_batches, len(held_out.epoch_batches(0)))
    eval_set = [next(held_out) for _ in range(n_eval)]
    engine = TorchEngine(student, short)
    every = eval_every or max(1, steps // 5)
    for step in range(1, steps + 1):
        batch = next(train_stream)
        holder: list[torch.Tensor] = []

        def loss_fn(module: torch.nn.Module, b: Batch = batch, s: int = step - 1,
                    holder: list[torch.Tensor] = holder) -> torch.Tensor:  # fmt: skip
            holder.append(distiller(module, b, s).total)
            return holder[-1]

        engine.step(loss_fn)
        if losses is not None:
            losses.append(float(holder[-1].detach()))
        if step % every == 0 or step == steps:
            student.eval()
            with torch.no_grad():
                value = sum(float(distiller(student, b, _EVAL_STEP + i).total) for i, b in enumerate(eval_set)) / n_eval
            yield step, value
