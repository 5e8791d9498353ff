"""Scoring a candidate with a trained supernet: extract, recalibrate batch norm, held-out loss, probe.

:class:`SupernetScorer` loads a supernet run once (its shared tensors, the recipe's teacher, the held-out
batches and the recalibration batches) and then scores candidates one by one:

1. :func:`~trainers.supernet.extract` gives the candidate's ordinary model with its inherited weights;
2. its batch-norm statistics are re-estimated on ``recalibrate`` training batches (OFA: the statistics of a
   shared batch norm belong to no candidate), cumulative averages in training mode, without gradients;
3. the held-out distillation loss is the recipe's own (:class:`~trainers.distill.Distiller`, the fixed
   held-out masks), averaged over the held-out batches by utterance;
4. with a probe task (``planner evaluate``'s task file), a linear or CTC probe on the frozen features gives
   accuracy, or CER and WER.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from trainers.distill import Distiller
from trainers.evaluate import probe_model
from trainers.recipe import Recipe
from trainers.supernet.bank import extract
from trainers.supernet.sandwich import _SharedTeacher
from trainers.supernet.train import load_supernet
from trainers.teacher import load_teacher
from trainers.train import build_stream, build_valid

__all__ = ["SupernetScorer", "recalibrate_bn"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: list[Any]) -> int:
    """Re-estimates every batch norm's running statistics of ``model`` on ``batches`` (cumulative averages
    over them, as OFA does); returns the number of batch norms (0: nothing to do, nothing run)."""
    norms = [m for m in model.modules() if isinstance(m, _BN)]
    if not norms or not batches:
        return len(norms)
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    was = model.training
    model.train()
    try:
        for b in batches:
            x, xl = b.model_input
            model(x.to(next(model.parameters()).dtype), xl)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was)
    return len(norms)


class SupernetScorer:
    """Scores candidates with a trained supernet (see the module docstring).

    Args:
        folder: the supernet run folder (or its ``best/``).
        recipe: the recipe it was trained with (its teacher, data and held-out masks).
        task: a probe task file, or None.
        recalibrate: training batches for the batch-norm statistics (default: the supernet's setting).

    Raises:
        SupernetError: ``folder`` holds no finished supernet.
        ConfigError: the recipe is not the one the supernet was trained with, or has no ``data.valid``.
    """

    def __init__(self, folder: str | os.PathLike[str], recipe: Recipe, task: str | os.PathLike[str] | None = None,
                 recalibrate: int | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.supernet, self.info = load_supernet(self.folder)
        self.supernet.eval()
        self.recipe, self.task = recipe, task
        if recipe.data.valid is None:
            raise ConfigError([FieldError("data.valid", "scoring with a supernet needs a held-out manifest")],
                              recipe.source)  # fmt: skip
        trained = self.info.get("recipe_fingerprint")
        if trained is not None and trained != recipe.fingerprint():
            raise ConfigError([FieldError("recipe", f"is not the recipe {self.folder} was trained with (fingerprint "
                                                    f"{recipe.fingerprint()}, the supernet's {trained}); give that "
                                                    "recipe, so the teacher, data and masks are the ones it learned")],
                              recipe.source)  # fmt: skip
        self.recalibrate = int(self.info.get("recalibrate", 4) if recalibrate is None else recalibrate)
        self._teacher: Any = None
        self._valid: list[Any] | None = None
        self._calib: list[Any] | None = None

    def _setup(self, graph: EncoderGraph) -> None:
        if self._teacher is None:  # the teacher's outputs on the held-out batches are every candidate's targets:
            self._teacher = _SharedTeacher(load_teacher(self.recipe, graph), keep=True)  # computed once
            self._valid = build_valid(graph, self.recipe) or []
            stream = build_stream(graph, self.recipe)
            self._calib = [next(stream) for _ in range(self.recalibrate)]

    def extract(self, graph: EncoderGraph) -> nn.Module:
        """The candidate's model with inherited weights and recalibrated batch norm, in eval mode."""
        self._setup(graph)
        model = extract(self.supernet, graph)
        recalibrate_bn(model, self._calib or [])
        return model.eval()

    @torch.no_grad()
    def held_out_loss(self, model: nn.Module, graph: EncoderGraph) -> float:
        """The recipe's distillation loss of ``model`` over the held-out batches (by utterance)."""
        self._setup(graph)
        d = Distiller(graph, self._teacher, self.recipe)
        total, n = 0.0, 0
        for i, batch in enumerate(self._valid or []):
            with d.held_out(i):
                total += float(d(model, batch, 0).total) * batch.size
            n += batch.size
        return total / n if n else float("nan")

    def score(self, graph: EncoderGraph) -> dict[str, Any]:
        """``supernet_loss`` and, with a task, ``probe_accuracy`` (or ``probe_cer`` / ``probe_wer``), plus
        ``seconds``."""
        t0 = time.perf_counter()
        model = self.extract(graph)
        out: dict[str, Any] = {"supernet_loss": self.held_out_loss(model, graph)}
        if self.task is not None:
            res = probe_model(model, graph, self.task)
            if res["kind"] == "ctc":
                out["probe_cer"], out["probe_wer"] = float(res["cer"]), float(res["wer"])
            else:
                out["probe_accuracy"] = float(res["accuracy"])
        out["seconds"] = time.perf_counter() - t0
        return out
