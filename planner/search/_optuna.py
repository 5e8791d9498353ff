"""The one thin adapter that knows Optuna: domains -> ``trial.suggest_*``, samplers, storages, trials.

Each trial: suggest the active domains -> :meth:`SearchSpace.freeze` -> :func:`planner.from_dict` ->
price the graph. An invalid or over-budget candidate completes as *infeasible* (its constraint values,
``<= 0`` when satisfied, are set with ``trial.set_constraint``, which Optuna 5's constrained samplers (TPE,
NSGA-II/III, GP) and ``plot_pareto_front`` read, and copied to ``trial.user_attrs["constraints"]``) and is
never materialized; a feasible one goes to the evaluator.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from planner.errors import ConfigError, FieldError
from planner.search._domains import Categorical, FloatRange, IntRange
from planner.search._space import SearchSpace
from planner.search._study import COST_METRICS, HeartbeatConfig, StudyConfig

__all__ = ["suggest", "make_sampler", "open_storage", "default_storage", "Objective", "constraints_of"]


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Asks ``trial`` for a value of every active domain of ``space``: ``{label: value}``."""
    values: dict[str, Any] = {}
    for d in space.domains():
        if not space.is_active(d, values):
            continue
        if isinstance(d, Categorical):
            values[d.label] = trial.suggest_categorical(d.label, list(d.choices))
        elif isinstance(d, IntRange):
            values[d.label] = trial.suggest_int(d.label, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, FloatRange):
            values[d.label] = trial.suggest_float(d.label, d.low, d.high, step=d.step, log=d.log)
    return values


def constraints_of(trial: Any) -> list[float]:
    """The constraint values of a finished trial (``<= 0`` is satisfied), as :class:`Objective` stored them."""
    return list(trial.user_attrs.get("constraints", [1.0]))


def _set_constraints(trial: Any, keys: list[str], values: list[float]) -> None:
    """Stores one value per constraint, always the same keys in the same order (the GP sampler needs that).

    Optuna 5 deprecates samplers' ``constraints_func`` for ``trial.set_constraint``; the samplers read the
    values from the trial itself, so no sampler needs a callback.
    """
    for key, value in zip(keys, values):
        trial.set_constraint(key, value)
    trial.set_user_attr("constraints", values)


def make_sampler(cfg: StudyConfig, space: SearchSpace, worker: int = 0) -> Any:
    """The Optuna sampler of ``cfg`` (worker ``k`` is seeded ``seed + k`` so workers do not repeat each other)."""
    import optuna

    s = cfg.sampler
    seed = cfg.seed + worker
    if s.kind == "tpe":
        conditional = any(d.when for d in space.domains())
        return optuna.samplers.TPESampler(seed=seed, multivariate=s.multivariate, group=s.multivariate and conditional,
                                          n_startup_trials=s.n_startup_trials)  # fmt: skip
    if s.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)
    if s.kind == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=s.population_size)
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.kind == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
        except ImportError as err:
            raise ConfigError([FieldError("study.sampler.kind", f"gp needs torch and scipy ({err})")], space.source) from None
    # grid
    if any(d.when for d in space.domains()) or any(isinstance(d, FloatRange) and d.step is None for d in space.domains()):
        raise ConfigError([FieldError("study.sampler.kind", "grid needs a space without conditions and with a step "
                                      "on every float range (use tpe or random)")], space.source)  # fmt: skip
    return optuna.samplers.GridSampler({d.label: d.grid() for d in space.domains()}, seed=seed)


def default_storage(study_name: str, root: str | os.PathLike[str] = "studies") -> str:
    """The embedded default: an SQLite file ``studies/NAME.db`` (needs nothing started; see docs/search.md)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(root) / study_name}.db"


_DEFAULT_HEARTBEAT = HeartbeatConfig()


def open_storage(url: str, heartbeat: HeartbeatConfig | None = _DEFAULT_HEARTBEAT) -> Any:
    """An Optuna storage for ``url``: ``*.journal`` / ``journal:PATH`` (journal file) or an SQLAlchemy URL.

    SQL storages get heartbeats (unless ``heartbeat`` is None) and
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, so the trial of a worker killed with SIGKILL
    is marked FAIL once its heartbeat is ``grace`` seconds old, and queued to run again.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:") or url.endswith(".journal"):
        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat is not None:
        import warnings

        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore")
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            kwargs.update(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.retries))  # fmt: skip
            return RDBStorage(url, **kwargs)
    return RDBStorage(url, **kwargs)


class Objective:
    """The Optuna objective of one study: freeze, validate, price, check budgets, evaluate.

    Args:
        space: the search space.
        cfg: the study config.
    """

    def __init__(self, space: SearchSpace, cfg: StudyConfig) -> None:
        from planner.search._cost import available_metrics
        from planner.search._evaluators import build_evaluator

        self.space = space
        self.cfg = cfg
        self.evaluator = build_evaluator(cfg.evaluator.kind, cfg.evaluator.kwargs())
        have = available_metrics()
        missing = [(f"study.budgets.{m}", m) for m, _ in cfg.budgets.items() if m not in have]
        missing += [(f"study.objectives[{i}].metric", o.metric) for i, o in enumerate(cfg.objectives)
                    if o.metric in COST_METRICS and o.metric not in have]  # fmt: skip
        if missing:
            raise ConfigError([FieldError(p, f"{m} needs planner.cost, which this checkout lacks (available: "
                                             f"{', '.join(have)})") for p, m in missing], space.source)  # fmt: skip

    def _worst(self) -> list[float]:
        return [math.inf if o.direction == "minimize" else -math.inf for o in self.cfg.objectives]

    def __call__(self, trial: Any) -> list[float] | float:
        import optuna

        from planner.ir.io import dumps, from_dict
        from planner.search._cost import price
        from planner.search._evaluators import Pruned

        values = suggest(trial, self.space)
        keys = ["invalid", *(f"budget.{m}" for m, _ in self.cfg.budgets.items())]
        try:
            graph = from_dict(self.space.freeze(values), f"{self.space.source} (trial {trial.number})")
        except ConfigError as err:
            trial.set_user_attr("feasible", False)
            trial.set_user_attr("invalid", str(err))
            _set_constraints(trial, keys, [1.0] * len(keys))
            return self._ret(self._worst())
        trial.set_user_attr("architecture", dumps(graph))
        cost = price(graph, self.cfg.seconds)
        trial.set_user_attr("cost", cost)
        constraints = [0.0]
        over = []
        for metric, bound in self.cfg.budgets.items():
            v = cost.get(metric)
            c = 1.0 if v is None else v / bound - 1.0
            constraints.append(c)
            if c > 0:
                over.append(f"{metric} {v} > {bound:g}")
        _set_constraints(trial, keys, constraints)
        objective = [cost.get(o.metric) for o in self.cfg.objectives]
        if over:
            trial.set_user_attr("feasible", False)
            trial.set_user_attr("over_budget", ", ".join(over))
            worst = self._worst()
            return self._ret([worst[i] if v is None else float(v) for i, v in enumerate(objective)])
        trial.set_user_attr("feasible", True)
        ctx = _TrialContext(trial, len(self.cfg.objectives) > 1)
        t0 = time.perf_counter()
        try:
            quality = self.evaluator.evaluate(graph, ctx)
        except Pruned:
            raise optuna.TrialPruned() from None
        trial.set_user_attr("eval_s", round(time.perf_counter() - t0, 4))
        trial.set_user_attr("quality", quality)
        both = {**cost, **quality}
        return self._ret([float(both[o.metric]) for o in self.cfg.objectives])

    def _ret(self, vals: list[float]) -> list[float] | float:
        return vals if len(vals) > 1 else vals[0]


class _TrialContext:
    """Maps an evaluator's reports onto ``trial.report`` (single objective) or user attrs (multi-objective,
    where Optuna has no pruning)."""

    def __init__(self, trial: Any, multi: bool) -> None:
        self.trial = trial
        self.multi = multi
        self.reports: list[list[float]] = []

    def report(self, value: float, step: int) -> None:
        if self.multi:
            self.reports.append([step, value])
            self.trial.set_user_attr("intermediate", self.reports)
        else:
            self.trial.report(value, step)

    def should_prune(self) -> bool:
        return False if self.multi else self.trial.should_prune()
