"""Declarative search: spaces as plain labelled data, studies, one Optuna adapter, Pareto export.

Torch-free and Optuna-free to import: :mod:`planner.search._optuna` is the only module that imports Optuna,
and evaluators import torch only when they materialize a candidate.
"""

from planner.search._domains import Categorical, Condition, Domain, FloatRange, IntRange
from planner.search._evaluators import EVALUATORS, EvalContext, NullContext, Pruned
from planner.search._run import SearchOptions, resolve_study, run_search, summarize
from planner.search._sample import Sample, sample_space
from planner.search._space import SearchSpace, load_space, loads_space, space_from_dict
from planner.search._study import (
    COST_METRICS,
    PRUNERS,
    SAMPLERS,
    Budgets,
    Objective,
    SamplerConfig,
    StudyConfig,
    study_from_dict,
)
from planner.search._supernet import SpaceSampler, supernet_cover

__all__ = [
    "COST_METRICS",
    "EVALUATORS",
    "PRUNERS",
    "SAMPLERS",
    "Budgets",
    "Categorical",
    "Condition",
    "Domain",
    "EvalContext",
    "FloatRange",
    "IntRange",
    "NullContext",
    "Objective",
    "Pruned",
    "Sample",
    "SamplerConfig",
    "SearchOptions",
    "SearchSpace",
    "SpaceSampler",
    "StudyConfig",
    "architecture_yaml",
    "export_pareto",
    "load_space",
    "loads_space",
    "pareto_trials",
    "resolve_study",
    "run_search",
    "sample_space",
    "space_from_dict",
    "study_from_dict",
    "summarize",
    "supernet_cover",
]


def __getattr__(name: str):  # noqa: ANN202
    if name in ("export_pareto", "pareto_trials"):  # imports Optuna
        from planner.search import _pareto

        return getattr(_pareto, name)
    if name == "architecture_yaml":
        from planner.search import _optuna

        return _optuna.architecture_yaml
    raise AttributeError(f"module 'planner.search' has no attribute {name!r}")
