"""Evaluators: score a feasible candidate with quality metrics, registered by name.

An evaluator is a frozen dataclass (its fields are the YAML keyword arguments of ``study.evaluator``) with
``metrics`` (the quality metrics it returns, usable as objectives) and ``evaluate(graph, ctx)``. It never
sees Optuna: it reports intermediate values through ``ctx.report(value, step)`` and asks
``ctx.should_prune()``; raising :class:`Pruned` stops the trial (the adapter turns it into Optuna's
``TrialPruned``). That is the hook a later distillation evaluator uses, epoch by epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from planner.config import field
from planner.errors import FieldError, Pruned
from planner.registry import Registry

__all__ = ["EVALUATORS", "EvalContext", "Pruned", "CapacityEvaluator", "NaswotEvaluator", "DistillEvaluator",
           "NullContext", "SupernetEvaluator", "supernet_scorer"]  # fmt: skip

EVALUATORS: Registry[type] = Registry("evaluator")


class EvalContext(Protocol):
    """What an evaluator may ask of the search while it runs."""

    def report(self, value: float, step: int) -> None:
        """Records an intermediate value of the first quality metric at ``step``."""

    def should_prune(self) -> bool:
        """Whether the pruner wants this candidate stopped."""


class NullContext:
    """A context that records intermediate values and never prunes (evaluating outside a study)."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, float]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return False


@EVALUATORS.register("capacity")
@dataclass(frozen=True)
class CapacityEvaluator:
    """No quality metric: the objectives are cost metrics only (nothing is materialized)."""

    metrics: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, graph: Any, ctx: EvalContext) -> dict[str, float]:
        return {}


@EVALUATORS.register("naswot")
@dataclass(frozen=True)
class NaswotEvaluator:
    """NASWOT (Mellor et al., 2021) zero-cost proxy at initialisation, higher is better.

    Each utterance of a random batch gets a binary code: the signs of every layer's hidden state
    ``(T_i, D)`` concatenated. The score is ``log |K|`` with ``K[a, b]`` the number of code positions where
    utterances ``a`` and ``b`` agree; it is averaged over ``batches`` batches.

    Attributes:
        batch: utterances per batch (the size of ``K``).
        seconds: length of each random waveform (or features of that duration).
        batches: batches to average; each is one intermediate report.
        seed: seeds the initialisation and the inputs, so a graph always gets the same score.
    """

    batch: int = field(8, ge=2, le=4096)  # at least 2: the score compares utterances
    seconds: float = field(0.5, gt=0, le=3600)
    batches: int = field(2, ge=1, le=10_000)
    seed: int = field(0, ge=0, le=2**32 - 1)

    metrics: ClassVar[tuple[str, ...]] = ("naswot",)

    def evaluate(self, graph: Any, ctx: EvalContext) -> dict[str, float]:
        import torch

        from planner.compress import materialize

        torch.manual_seed(self.seed)
        model = materialize(graph).eval()
        inp = graph.spec.input
        samples = int(round(self.seconds * inp.sample_rate))
        scores = []
        for step in range(self.batches):
            gen = torch.Generator().manual_seed(self.seed * 1000 + step)
            if inp.kind == "waveform":
                x = torch.randn(self.batch, samples, generator=gen)
            else:
                x = torch.randn(self.batch, max(inp.frames(samples), 1), inp.n_mels, generator=gen)
            with torch.no_grad():
                out = model(x)
            states = out.hidden_states or [out.output]
            codes = torch.cat([(h > 0).flatten(1).double() for h in states], dim=1)  # (B, N_A)
            k = codes @ codes.T + (1 - codes) @ (1 - codes).T
            score = float(torch.linalg.slogdet(k)[1])
            scores.append(score)
            ctx.report(sum(scores) / len(scores), step)
            if ctx.should_prune():
                raise Pruned(f"pruned after batch {step}")
        return {"naswot": sum(scores) / len(scores)}


@EVALUATORS.register("distill")
@dataclass(frozen=True)
class DistillEvaluator:
    """The distillation proxy: a short masking / layer-to-layer distillation run, lower held-out loss is better.

    Each feasible candidate is materialized and distilled for ``steps`` steps with the recipe's teacher, data,
    loss and optimizer (:func:`trainers.distill_proxy`); the held-out distillation loss is reported every
    ``eval_every`` steps, so a pruner (median, Hyperband) stops poor candidates early. The teacher is loaded
    once per worker process and shared by its trials.

    Attributes:
        recipe: the training recipe file (relative paths resolve against the working directory); it needs a
            ``data.valid`` manifest for the held-out loss.
        steps: training steps per candidate.
        eval_every: steps between held-out evaluations (intermediate values); default ``steps // 5``.
        eval_batches: held-out batches per evaluation.
    """

    recipe: str
    steps: int = field(100, ge=1, le=10_000_000)
    eval_every: int | None = field(None, ge=1)
    eval_batches: int = field(4, ge=1, le=1_000_000)

    metrics: ClassVar[tuple[str, ...]] = ("distill_loss",)

    def check(self) -> None:
        if not self.recipe.strip():
            raise FieldError("recipe", "is empty: give the training recipe file the proxy distils with")

    def evaluate(self, graph: Any, ctx: EvalContext) -> dict[str, float]:
        from trainers import distill_proxy

        recipe, teacher = _recipe_and_teacher(self.recipe, graph)
        value = float("nan")
        for step, value in distill_proxy(graph, recipe, self.steps, eval_every=self.eval_every,
                                         eval_batches=self.eval_batches, teacher=teacher):  # fmt: skip
            ctx.report(value, step)
            if ctx.should_prune():
                raise Pruned(f"pruned at step {step} (held-out distillation loss {value:.4g})")
        return {"distill_loss": value}


@EVALUATORS.register("supernet")
@dataclass(frozen=True)
class SupernetEvaluator:
    """Scores with a trained weight-sharing supernet: a candidate inherits its weights (no training).

    The candidate is extracted from the supernet run (``planner supernet train``), its batch-norm statistics
    recalibrated, and scored by the recipe's held-out distillation loss (``supernet_loss``, lower is better)
    and, with ``task``, a probe on its frozen features (``probe_accuracy``, or ``probe_cer`` / ``probe_wer``):
    :class:`trainers.supernet.SupernetScorer`. The supernet is loaded once per worker process. A Pareto
    export of such a study writes each point's inherited weights beside its YAML.

    Attributes:
        checkpoint: the supernet run folder (or its ``best/``).
        recipe: the recipe the supernet was trained with (its teacher, data and masks; checked against the
            run's fingerprint).
        task: a probe task file (``planner evaluate``'s), or None for the loss only.
        recalibrate: training batches for the batch-norm statistics (default: the run's ``supernet.recalibrate``).
        batches: held-out batches of ``supernet_loss`` (default: the recipe's ``data.valid_batches``); fewer are
            cheaper and rank less well (``benchmarks/supernet_choices.py``, docs/supernet.md).
    """

    checkpoint: str
    recipe: str
    task: str | None = None
    recalibrate: int | None = field(None, ge=0, le=1_000)
    batches: int | None = field(None, ge=1, le=1_000_000)

    metrics: ClassVar[tuple[str, ...]] = ("supernet_loss", "probe_accuracy", "probe_cer", "probe_wer")

    def check(self) -> None:
        for name in ("checkpoint", "recipe"):
            if not getattr(self, name).strip():
                raise FieldError(name, "is empty: give the supernet run folder and the recipe it was trained with")

    def evaluate(self, graph: Any, ctx: EvalContext) -> dict[str, float]:
        res = supernet_scorer(self.checkpoint, self.recipe, self.task, self.recalibrate, self.batches).score(graph)
        ctx.report(res["supernet_loss"], 0)
        return {k: v for k, v in res.items() if k in self.metrics}


_SCORERS: dict[tuple[Any, ...], Any] = {}


def supernet_scorer(checkpoint: str, recipe: str, task: str | None = None, recalibrate: int | None = None,
                    batches: int | None = None) -> Any:  # fmt: skip
    """The :class:`trainers.supernet.SupernetScorer` of a supernet run, loaded once per process."""
    key = (checkpoint, recipe, task, recalibrate, batches)
    if key not in _SCORERS:
        from trainers import load_recipe
        from trainers.supernet import SupernetScorer

        _SCORERS[key] = SupernetScorer(checkpoint, load_recipe(recipe), task, recalibrate, batches)
    return _SCORERS[key]


_TEACHERS: dict[str, tuple[Any, Any]] = {}


def _recipe_and_teacher(path: str, graph: Any) -> tuple[Any, Any]:
    """The recipe and its frozen teacher, loaded once per worker process (the teacher does not depend on the
    student: only its layer outputs are read)."""
    from trainers import load_recipe
    from trainers.teacher import load_teacher

    if path not in _TEACHERS:
        recipe = load_recipe(path)
        if recipe.teacher is not None and recipe.teacher.kind == "self":  # depends on the student: not shared
            return recipe, load_teacher(recipe, graph)
        _TEACHERS[path] = (recipe, load_teacher(recipe, graph))
    return _TEACHERS[path]


def build_evaluator(kind: str, kwargs: dict[str, Any]) -> Any:
    """The evaluator registered as ``kind`` with its keyword arguments."""
    return EVALUATORS[kind](**kwargs)


def evaluator_of(cfg: Any) -> Any:
    """The evaluator of a study's :class:`~planner.search._study.EvaluatorConfig` (its parsed config, or the
    registered kind's defaults)."""
    return cfg.config if cfg.config is not None else EVALUATORS[cfg.kind]()
