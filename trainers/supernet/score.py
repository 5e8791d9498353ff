"""Scoring a candidate with a trained supernet: extract, recalibrate batch norm, held-out loss, probe.

:class:`SupernetScorer` loads a supernet run once (its shared tensors, the recipe's teacher, the held-out
batches and the recalibration batches) and then scores candidates one by one:

1. :func:`~trainers.supernet.extract` gives the candidate's ordinary model with its inherited weights;
2. its batch-norm statistics are re-estimated on ``recalibrate`` training batches (OFA: the statistics of a
   shared batch norm belong to no candidate), cumulative averages in training mode, without gradients;
3. the held-out distillation loss is the recipe's own (:class:`~trainers.distill.Distiller`, the fixed
   held-out masks), averaged by utterance over the first ``batches`` held-out batches (default: the recipe's
   ``data.valid_batches``; ``benchmarks/supernet_choices.py`` measures what fewer cost in ranking);
4. with a probe task (``planner evaluate``'s task file), a linear or CTC probe on the frozen features gives
   accuracy, or CER and WER.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
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
        batches: held-out batches of the loss (default: all the recipe's ``data.valid_batches``).

    Raises:
        SupernetError: ``folder`` holds no finished supernet.
        ConfigError: the recipe is not the one the supernet was trained with, or has no ``data.valid``.
    """

    def __init__(self, folder: str | os.PathLike[str], recipe: Recipe, task: str | os.PathLike[str] | None = None,
                 recalibrate: int | None = None, batches: int | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        if batches is not None and batches < 1:
            raise ConfigError([FieldError("batches", f"is {batches}: score on at least one held-out batch")],
                              recipe.source)  # fmt: skip
        self.batches = batches
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
        self._valid: list[Any] = []
        self._stream: Any = None
        self._calib: list[Any] = []

    def _setup(self, graph: EncoderGraph) -> None:
        if self._teacher is None:  # the teacher's outputs on the held-out batches are every candidate's targets:
            self._teacher = _SharedTeacher(load_teacher(self.recipe, graph), keep=True)  # computed once
            self._valid = build_valid(graph, self.recipe) or []
            self._stream = build_stream(graph, self.recipe)
            self._calib = []

    def calibration_batches(self, graph: EncoderGraph, count: int) -> list[Any]:
        """The first ``count`` training batches of the recipe's stream (drawn once, kept for every candidate)."""
        self._setup(graph)
        while len(self._calib) < count:
            self._calib.append(next(self._stream))
        return self._calib[:count]

    def extract(self, graph: EncoderGraph) -> nn.Module:
        """The candidate's model with inherited weights and ``recalibrate`` batches of recalibrated batch norm,
        in eval mode."""
        model = extract(self.supernet, graph)
        recalibrate_bn(model, self.calibration_batches(graph, self.recalibrate))
        return model.eval()

    @property
    def valid_batches(self) -> int:
        """The held-out batches there are (0 before the first candidate is scored)."""
        return len(self._valid)

    def held_out_terms(self, model: nn.Module, graph: EncoderGraph,
                       batches: int | None = None) -> Iterator[tuple[float, int]]:  # fmt: skip
        """``(mean loss, utterances)`` of each of the first ``batches`` held-out batches (default: the scorer's
        ``batches``, else all), one at a time, batch ``i`` under its fixed held-out masks."""
        self._setup(graph)
        d = Distiller(graph, self._teacher, self.recipe)
        count = self.batches if batches is None else batches
        for i, batch in enumerate(self._valid[:count]):
            with torch.no_grad(), d.held_out(i):
                loss = float(d(model, batch, 0).total)
            yield loss, batch.size

    def held_out_loss(self, model: nn.Module, graph: EncoderGraph) -> float:
        """The recipe's distillation loss of ``model`` over the scorer's held-out batches (by utterance)."""
        terms = list(self.held_out_terms(model, graph))
        n = sum(size for _, size in terms)
        return sum(loss * size for loss, size in terms) / n if n else float("nan")

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
